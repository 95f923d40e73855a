"""`minio server DIR`: an S3 endpoint on :9000 for the compose test, standing in for MinIO.

No MinIO binary can be had here, so moto's S3 server answers the S3 API, with what the
stack relies on from MinIO around it:
- the root credentials: MINIO_ROOT_USER (3+ characters) and MINIO_ROOT_PASSWORD (8+) are
  required, as MinIO requires them, and a request signed with another access key gets 403;
- the health paths /minio/health/live and /minio/health/ready;
- persistence in DIR (a named volume): moto keeps objects in memory, so every few seconds
  after a write, and on SIGTERM, the objects are mirrored to DIR; they are loaded back at
  start. A crash loses at most the last few seconds of writes.
The console (--console-address) is not served.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import sys
import threading
from pathlib import Path

from minio import Minio
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

PORT = 9000
SNAPSHOT_SECONDS = 3.0
INDEX = ".standin-index.json"


class Gate:
    """WSGI middleware: health paths, the root access key, and write tracking."""

    def __init__(self, app, access_key: str) -> None:
        self.app, self.access_key = app, access_key
        self.dirty = threading.Event()

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path in ("/minio/health/live", "/minio/health/ready"):
            start_response("200 OK", [("Content-Length", "0")])
            return [b""]
        auth = environ.get("HTTP_AUTHORIZATION", "") + environ.get("QUERY_STRING", "")
        if f"Credential={self.access_key}/" not in auth and (
            f"X-Amz-Credential={self.access_key}%2F" not in auth
        ):
            body = (
                b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidAccessKeyId</Code>'
                b"<Message>The Access Key Id you provided does not exist in our records."
                b"</Message></Error>"
            )
            start_response(
                "403 Forbidden",
                [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))],
            )
            return [body]
        if environ.get("REQUEST_METHOD") in ("PUT", "POST", "DELETE"):
            self.dirty.set()
        return self.app(environ, start_response)


def _object_path(root: Path, bucket: str, key: str) -> Path:
    return root / bucket / hashlib.sha256(key.encode()).hexdigest()


def restore(client: Minio, root: Path) -> int:
    index_file = root / INDEX
    if not index_file.is_file():
        return 0
    index = json.loads(index_file.read_text())
    count = 0
    for bucket, objects in index.items():
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
        for key, entry in objects.items():
            data = _object_path(root, bucket, key).read_bytes()
            client.put_object(
                bucket, key, io.BytesIO(data), len(data), content_type=entry["content_type"]
            )
            count += 1
    return count


def snapshot(client: Minio, root: Path, previous: dict) -> dict:
    """Mirror every bucket and object to ``root``; unchanged objects (same ETag) are kept."""
    index: dict[str, dict[str, dict]] = {}
    for bucket in client.list_buckets():
        objects = index.setdefault(bucket.name, {})
        (root / bucket.name).mkdir(parents=True, exist_ok=True)
        for item in client.list_objects(bucket.name, recursive=True):
            old = previous.get(bucket.name, {}).get(item.object_name)
            if old and old["etag"] == item.etag:
                objects[item.object_name] = old
                continue
            response = client.get_object(bucket.name, item.object_name)
            try:
                data = response.read()
                content_type = response.headers.get("Content-Type", "application/octet-stream")
            finally:
                response.close()
                response.release_conn()
            target = _object_path(root, bucket.name, item.object_name)
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
            objects[item.object_name] = {"etag": item.etag, "content_type": content_type}
    tmp = root / (INDEX + ".tmp")
    tmp.write_text(json.dumps(index))
    os.replace(tmp, root / INDEX)
    kept = {_object_path(root, b, k).name for b, objs in index.items() for k in objs}
    for path in root.glob("*/*"):
        if path.name not in kept:
            path.unlink()
    return index


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "server":
        print("usage: minio server DIR [--console-address ADDR]", file=sys.stderr)
        return 2
    root = Path(argv[1])
    user = os.environ.get("MINIO_ROOT_USER", "")
    password = os.environ.get("MINIO_ROOT_PASSWORD", "")
    if len(user) < 3 or len(password) < 8:
        print(
            "FATAL Unable to validate credentials inherited from the shell environment: "
            "Invalid credentials: MINIO_ROOT_USER needs 3 or more characters and "
            "MINIO_ROOT_PASSWORD 8 or more",
            file=sys.stderr,
        )
        return 1
    os.environ.update(AWS_ACCESS_KEY_ID=user, AWS_SECRET_ACCESS_KEY=password)
    root.mkdir(parents=True, exist_ok=True)
    gate = Gate(DomainDispatcherApplication(create_backend_app), user)
    server = make_server("0.0.0.0", PORT, gate, threaded=True, request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = Minio(f"127.0.0.1:{PORT}", access_key=user, secret_key=password, secure=False)
    print(f"S3 API (moto stand-in for MinIO) on :{PORT}; restored {restore(client, root)} objects")
    gate.dirty.clear()
    index = json.loads((root / INDEX).read_text()) if (root / INDEX).is_file() else {}
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(SNAPSHOT_SECONDS):
        if gate.dirty.is_set():
            gate.dirty.clear()
            index = snapshot(client, root, index)
    snapshot(client, root, index)
    server.shutdown()
    print("snapshot written; exiting")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
