"""A real HTTP server on 127.0.0.1 serving a directory, with Range support and injectable faults."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse


@dataclass
class ServerState:
    root: Path
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    cut_after: dict[str, int] = field(
        default_factory=dict
    )  # path -> bytes sent before dropping, once
    fail_status: dict[str, int] = field(default_factory=dict)  # path -> status returned once
    routes: dict[str, str] = field(default_factory=dict)  # URL path -> file name under root
    json_routes: dict[str, object] = field(default_factory=dict)


class Handler(BaseHTTPRequestHandler):
    state: ServerState

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        parsed = urlparse(self.path)
        path = parsed.path
        self.state.requests.append((path, self.headers.get("Range")))
        if path in self.state.fail_status:
            self.send_error(self.state.fail_status.pop(path))
            return
        if path in self.state.json_routes:
            body = json.dumps(self.state.json_routes[path]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        name = self.state.routes.get(path, path.lstrip("/"))
        if parse_qs(parsed.query).get("format") == ["original"]:
            name = self.state.routes.get(path + "?original", name)
        file = self.state.root / name
        if not file.is_file():
            self.send_error(404)
            return
        data = file.read_bytes()
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        cut = self.state.cut_after.pop(path, None)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)  # drop mid-transfer, as a failing network does
            return
        self.wfile.write(body)


class FileServer:
    def __init__(self, root: Path):
        self.state = ServerState(root)
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
