"""Behaviour every ObjectStore backend must have; run against the file store and a real S3 endpoint."""

from __future__ import annotations

import io

import pytest

from melanoma.store import ArtifactIncompleteError, ObjectStore, read_manifest


class FailingStream(io.RawIOBase):
    """Yields some bytes, then fails, like a connection dropped mid-upload."""

    def __init__(self) -> None:
        self.sent = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.sent >= 3 << 20:
            raise ConnectionError("source went away")
        n = min(len(buffer), 1 << 20)
        buffer[:n] = b"x" * n
        self.sent += n
        return n


def check_store_contract(store: ObjectStore, tmp_path) -> None:
    assert not store.exists("a/b.txt")
    with pytest.raises(FileNotFoundError):
        store.stat("a/b.txt")
    with pytest.raises(FileNotFoundError):
        store.get_bytes("a/b.txt")

    store.put_bytes("a/b.txt", b"hello")
    store.put_bytes("a/c/d.bin", bytes(range(256)))
    store.put_json("ab.json", {"x": 1})
    assert store.get_bytes("a/b.txt") == b"hello"
    assert store.stat("a/c/d.bin").size == 256
    assert store.get_json("ab.json") == {"x": 1}
    assert [o.key for o in store.list("a/")] == ["a/b.txt", "a/c/d.bin"]
    assert [o.key for o in store.list("a")] == ["a/b.txt", "a/c/d.bin", "ab.json"]
    assert [o.key for o in store.list("a/c")] == ["a/c/d.bin"]

    # Streaming: a multi-megabyte object in and out without holding it as one bytes object.
    big = tmp_path / "big.bin"
    big.write_bytes(b"0123456789abcdef" * (1 << 18))  # 4 MiB
    store.put_file("big/object.bin", big)
    store.get_file("big/object.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()
    with store.get_stream("big/object.bin") as stream:
        assert stream.read(16) == b"0123456789abcdef"

    # Atomic writes: an upload that fails mid-stream leaves no object, and an old one intact.
    store.put_bytes("atomic.bin", b"old")
    with pytest.raises(ConnectionError):
        store.put_stream("atomic.bin", FailingStream())
    assert store.get_bytes("atomic.bin") == b"old"
    with pytest.raises(ConnectionError):
        store.put_stream("never.bin", FailingStream())
    assert not store.exists("never.bin")
    assert "never.bin" not in [o.key for o in store.list("")]

    with pytest.raises(ArtifactIncompleteError, match="never committed"):
        read_manifest(store, "artifact/MANIFEST.json")
    store.delete("a/b.txt")
    store.delete("a/b.txt")  # absent: not an error
    assert not store.exists("a/b.txt")
    with pytest.raises(ValueError, match="invalid object key"):
        store.put_bytes("../escape", b"")


# Each process adds 1 to a counter object, WRITERS_ROUNDS times, with a read, a pause that
# invites the other writer in, and a write: without the lock updates are lost.
COUNTER_WRITER = """
import sys, time
from melanoma.store import open_store
store = open_store(sys.argv[1])
for _ in range(int(sys.argv[2])):
    with store.exclusive("counted/thing"):
        count = int(store.get_bytes("counter"))
        time.sleep(0.02)
        store.put_bytes("counter", str(count + 1).encode())
"""
WRITERS, WRITERS_ROUNDS = 3, 8


def check_exclusive_across_processes(store: ObjectStore) -> None:
    """Real processes contend for one key's lock; no update is lost and no lock is left
    visible in the store's listing."""
    import subprocess
    import sys

    store.put_bytes("counter", b"0")
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", COUNTER_WRITER, store.url, str(WRITERS_ROUNDS)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(WRITERS)
    ]
    errors = [(w.wait(300), w.stderr.read()) for w in writers]
    assert all(code == 0 for code, _ in errors), errors
    assert int(store.get_bytes("counter")) == WRITERS * WRITERS_ROUNDS
    assert [o.key for o in store.list("")] == ["counter"]
