"""Object store: one small interface, two backends chosen by URL.

* ``file:///abs/path`` — a directory on local disk (the embedded stack's default).
* ``s3://bucket[/prefix]`` — any S3 endpoint (MinIO under docker compose) through the
  ``minio`` client; endpoint and credentials come from the environment
  (``S3_ENDPOINT_URL``, ``S3_ACCESS_KEY``, ``S3_SECRET_KEY``). Every call has a connect
  and a read timeout and a bounded retry with backoff (``S3_CONNECT_TIMEOUT_S``,
  ``S3_READ_TIMEOUT_S``, ``S3_RETRIES``), so an endpoint that is down or stops answering
  is a :class:`StoreUnavailableError` naming it, never a hang; Airflow's task retry
  takes it from there.

Commit protocol. Every single object is written atomically: the file backend
writes a temporary file and renames it, an S3 PUT is atomic. An artifact made of
several objects (a dataset version, a stage's outputs) is complete only when its
manifest object exists, and the manifest is always written last, after every
object it lists, with each object's size and sha256. Readers open the manifest
first (:func:`read_manifest`) and read only what it lists, through
:func:`verified_bytes`: a crash mid-write leaves objects that nothing reads, and an
object changed after its commit is an error that names it, never silently used.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import urlparse


class ArtifactIncompleteError(RuntimeError):
    """A multi-object artifact has no manifest yet: it was never committed."""


class ArtifactCorruptError(ValueError):
    """A committed object's size or sha256 differs from what its manifest recorded."""


class StoreAccessDeniedError(PermissionError):
    """The store answered, and refused these credentials (a 403): the message names the
    endpoint, the object and the access key id (never the secret)."""


# S3's codes for credentials it does not accept, or that may not do this.
REFUSED_CREDENTIALS = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
)


class StoreUnavailableError(ConnectionError):
    """The store cannot be reached, or its bucket or root does not exist; the message names it."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    # Changes whenever the object is written: a file's mtime in ns, an S3 object's ETag
    # ("" where unknown). Lets a reader cache what it derived from an object.
    version: str = ""


def _check_key(key: str) -> str:
    if not key or key.startswith("/") or ".." in key.split("/") or "\\" in key:
        raise ValueError(f"invalid object key {key!r}: keys are relative, '/'-separated, no '..'")
    return key


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def object_record(key: str, data: bytes) -> dict[str, Any]:
    """What a manifest records of an object: its key, size and sha256."""
    return {"key": key, "size": len(data), "sha256": sha256_hex(data)}


class ObjectStore(ABC):
    """Keys are '/'-separated paths relative to the store root."""

    url: str

    @abstractmethod
    def put_stream(self, key: str, stream: BinaryIO, size: int = -1) -> None:
        """Write an object from a readable binary stream, atomically."""

    @abstractmethod
    def get_stream(self, key: str) -> BinaryIO:
        """Open an object for streaming reads; the caller closes it."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size of an object; raises FileNotFoundError if absent."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, recursively, sorted by key."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; absent objects are not an error."""

    def move(self, source: str, target: str) -> None:
        """Give ``source``'s object the key ``target`` (replacing any object there); the
        stores override it with a rename that needs no new space (file) or a server-side
        copy (S3). FileNotFoundError if ``source`` is absent."""
        self.put_bytes(target, self.get_bytes(source))
        self.delete(source)

    @contextmanager
    def exclusive(self, key: str) -> Iterator[None]:
        """Hold the store's lock on ``key`` for the block: another process asking for it
        waits. The file store takes an flock beside its objects; S3 a lease object written
        with a conditional PUT. A store without locks runs the block unlocked."""
        yield

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except FileNotFoundError:
            return False
        return True

    def put_bytes(self, key: str, data: bytes) -> None:
        self.put_stream(key, io.BytesIO(data), len(data))

    def get_bytes(self, key: str) -> bytes:
        with self.get_stream(key) as stream:
            return stream.read()

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        with open(path, "rb") as f:
            self.put_stream(key, f, os.fstat(f.fileno()).st_size)

    def get_file(self, key: str, path: str | os.PathLike[str]) -> None:
        """Stream an object to a local file, atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, self.get_stream(key) as src:
                shutil.copyfileobj(src, out, 1 << 20)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_json(self, key: str, payload: Any) -> None:
        self.put_bytes(key, json.dumps(payload, indent=2, sort_keys=True).encode())

    def get_json(self, key: str) -> Any:
        """The object as JSON; ArtifactCorruptError naming it when it is not JSON."""
        try:
            return json.loads(self.get_bytes(key))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ArtifactCorruptError(f"{self.url}/{key}: not valid JSON ({error})") from None


class FileStore(ObjectStore):
    def __init__(self, root: str | os.PathLike[str], create: bool = True):
        """The store at ``root``; made if absent, unless ``create`` is False (readers)."""
        self.root = Path(root).resolve()
        self.url = self.root.as_uri()
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        elif not self.root.is_dir():
            raise StoreUnavailableError(f"{self.url}: no store there (no such folder)")

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put_stream(self, key: str, stream: BinaryIO, size: int = -1) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(stream, out, 1 << 20)
            os.chmod(
                tmp, 0o644
            )  # mkstemp makes 0600; stored objects are meant to be read by others
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_stream(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"{self.url}/{key}: no such object")
        stat = path.stat()
        return ObjectInfo(key, stat.st_size, str(stat.st_mtime_ns))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if prefix:
            _check_key(prefix.rstrip("/") or prefix)  # no "..", no absolute path
        # Walk only the deepest directory the prefix names, not the whole store.
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return
        # Plain strings, not pathlib: a listing of tens of thousands of objects (the runs
        # page over 500 runs) is otherwise mostly Path arithmetic.
        root = str(self.root)
        found = []
        for dirpath, dirs, files in os.walk(base):
            if dirpath == root and LOCKS in dirs:
                dirs.remove(LOCKS)  # the store's locks, not objects
            folder = os.path.relpath(dirpath, root).replace(os.sep, "/")
            for name in files:
                if name.startswith(".") and name.endswith(".part"):
                    continue  # an in-flight atomic write
                key = name if folder == "." else f"{folder}/{name}"
                if key.startswith(prefix):
                    found.append((key, os.path.join(dirpath, name)))
        for key, path in sorted(found):
            stat = os.stat(path)
            yield ObjectInfo(key, stat.st_size, str(stat.st_mtime_ns))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    @contextmanager
    def exclusive(self, key: str) -> Iterator[None]:
        locks = self.root / LOCKS  # hidden: no listing of the store shows it
        locks.mkdir(exist_ok=True)
        name = hashlib.sha256(_check_key(key).encode()).hexdigest()[:32]
        with open(locks / f"{name}.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def move(self, source: str, target: str) -> None:
        path = self._path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._path(source), path)  # a rename: atomic, and needs no new space


LOCKS = ".locks"  # each backend keeps its locks here, hidden from listings


def _env_number(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    try:
        return float(value) if value else default
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a number") from None


class S3Store(ObjectStore):
    """S3 backend on the ``minio`` client. ``s3://bucket/optional/prefix``."""

    def __init__(
        self,
        url: str,
        endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str | None = None,
    ):
        import certifi
        import urllib3
        from minio import Minio  # imported here so the file backend needs no S3 client

        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"not an s3://bucket URL: {url!r}")
        self.url = url.rstrip("/")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.endpoint = endpoint_url or os.environ.get("S3_ENDPOINT_URL", "http://127.0.0.1:9000")
        endpoint = urlparse(self.endpoint)
        if endpoint.scheme not in ("http", "https") or not endpoint.netloc:
            raise ValueError(
                f"S3 endpoint must be a URL such as http://minio:9000, got {self.endpoint!r}"
            )
        # minio's defaults wait 5 minutes per connect and per read, 5 times over: about
        # 30 minutes on an endpoint that accepts and never answers.
        retries = int(_env_number("S3_RETRIES", 3))
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(
                connect=_env_number("S3_CONNECT_TIMEOUT_S", 10),
                read=_env_number("S3_READ_TIMEOUT_S", 60),
            ),
            retries=urllib3.Retry(
                total=retries,
                connect=retries,
                read=retries,
                backoff_factor=0.5,
                status_forcelist=[500, 502, 503, 504],
            ),
            maxsize=10,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        )
        self.access_key_id = access_key or os.environ.get("S3_ACCESS_KEY")
        self._http = http
        self.client = Minio(
            endpoint.netloc,
            access_key=self.access_key_id,
            secret_key=secret_key or os.environ.get("S3_SECRET_KEY"),
            secure=endpoint.scheme == "https",
            region=region or os.environ.get("S3_REGION", "us-east-1"),
            http_client=http,
        )
        self._bucket_checked = False

    @contextmanager
    def _reaching(self, key: str = "") -> Iterator[None]:
        """Connection failures and timeouts as StoreUnavailableError naming the endpoint;
        a missing bucket as itself, never as a missing object."""
        import urllib3
        from minio.error import S3Error

        try:
            yield
        except urllib3.exceptions.HTTPError as e:  # MaxRetryError, timeouts, dropped connections
            reason = getattr(e, "reason", None) or e
            raise StoreUnavailableError(
                f"S3 endpoint {self.endpoint} did not answer for {self.url}/{key} "
                f"({type(reason).__name__}: {reason}); is the object store up?"
            ) from None
        except S3Error as e:
            if e.code == "NoSuchBucket":
                raise self._no_bucket() from None
            if e.code in REFUSED_CREDENTIALS:
                raise StoreAccessDeniedError(
                    f"S3 endpoint {self.endpoint} refused access to {self.url}/{key} with "
                    f"access key {self.access_key_id!r} ({e.code}: {e.message}); check S3_ACCESS_KEY and "
                    "S3_SECRET_KEY, and that this key may use the bucket"
                ) from None
            raise

    def _no_bucket(self) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"bucket {self.bucket!r} does not exist at {self.endpoint} (store {self.url})"
        )

    def _missing(self, key: str) -> FileNotFoundError:
        """FileNotFoundError for ``key``, once the bucket is known to exist (S3 answers a
        HEAD on a missing bucket with the same 404 as on a missing object)."""
        if not self._bucket_checked:
            with self._reaching(key):
                if not self.client.bucket_exists(self.bucket):
                    raise self._no_bucket()
            self._bucket_checked = True
        return FileNotFoundError(f"{self.url}/{key}: no such object")

    def _name(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _key(self, name: str) -> str:
        return name[len(self.prefix) + 1 :] if self.prefix else name

    def ensure_bucket(self) -> None:
        with self._reaching():
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)

    def put_stream(self, key: str, stream: BinaryIO, size: int = -1) -> None:
        # Unknown sizes go up as a multipart upload in 16 MiB parts; S3 makes the
        # object visible only when the upload completes, which is the atomicity we need.
        with self._reaching(key):
            self.client.put_object(
                self.bucket,
                self._name(key),
                stream,
                length=size,
                part_size=16 << 20 if size < 0 else 0,
            )

    def get_stream(self, key: str) -> BinaryIO:
        from minio.error import S3Error

        try:
            with self._reaching(key):
                response = self.client.get_object(self.bucket, self._name(key))
        except S3Error as e:
            if e.code == "NoSuchKey":
                raise self._missing(key) from e
            raise
        return cast(BinaryIO, _ClosingResponse(response, self, key))

    def stat(self, key: str) -> ObjectInfo:
        from minio.error import S3Error

        try:
            with self._reaching(key):
                st = self.client.stat_object(self.bucket, self._name(key))
        except S3Error as e:
            if e.code in ("NoSuchKey", "ResourceNotFound"):
                raise self._missing(key) from e
            raise
        return ObjectInfo(key, int(st.size or 0), str(st.etag or ""))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full = self._name(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        with self._reaching(prefix):
            for obj in self.client.list_objects(self.bucket, prefix=full, recursive=True):
                key = self._key(obj.object_name)
                if not key.startswith(f"{LOCKS}/"):  # the store's locks, not objects
                    yield ObjectInfo(key, int(obj.size or 0), str(obj.etag or ""))

    def delete(self, key: str) -> None:
        with self._reaching(key):
            self.client.remove_object(self.bucket, self._name(key))

    def _put_if(self, key: str, data: bytes, condition: dict[str, str]) -> bool:
        """PUT ``data`` only if ``condition`` holds (``If-None-Match: *``: no object yet;
        ``If-Match: <etag>``: still that object); False when S3 answers that it does not.
        The minio client cannot send these headers, so a presigned URL carries the PUT."""
        import urllib3

        url = self.client.presigned_put_object(self.bucket, self._name(key), timedelta(minutes=5))
        with self._reaching(key):
            response = self._http.request(
                "PUT", url, body=data, headers=condition, retries=False, preload_content=True
            )
        if response.status in (200, 201):
            return True
        if response.status in (409, 412):  # taken, or a concurrent conditional write
            return False
        if response.status == 403:
            raise StoreAccessDeniedError(
                f"S3 endpoint {self.endpoint} refused access to {self.url}/{key} with access "
                f"key {self.access_key_id!r}; check S3_ACCESS_KEY and S3_SECRET_KEY"
            )
        raise urllib3.exceptions.HTTPError(
            f"conditional PUT of {self.url}/{key} answered {response.status}: "
            f"{response.data[:200]!r}"
        )

    @contextmanager
    def exclusive(self, key: str) -> Iterator[None]:
        """A lease: the object ``.locks/<sha>`` is created with ``If-None-Match: *``, which
        one writer wins (S3 since 2024, MinIO since 2024-08). A holder that died leaves it
        behind; after S3_LOCK_LEASE_S (default 900 s) a waiter takes it over with
        ``If-Match`` on its ETag, so again only one does."""
        lock = f"{LOCKS}/{hashlib.sha256(_check_key(key).encode()).hexdigest()[:32]}"
        lease = timedelta(seconds=_env_number("S3_LOCK_LEASE_S", 900))
        token = uuid.uuid4().hex
        body = json.dumps(
            {"key": key, "holder": f"{socket.gethostname()}:{os.getpid()}", "token": token}
        ).encode()
        from minio.error import S3Error

        wait = 0.05
        while not self._put_if(lock, body, {"If-None-Match": "*"}):
            try:
                with self._reaching(lock):
                    held = self.client.stat_object(self.bucket, self._name(lock))
            except S3Error as e:
                if e.code in ("NoSuchKey", "ResourceNotFound"):
                    continue  # released meanwhile: try again at once
                raise
            modified = held.last_modified or datetime.now(UTC)
            if datetime.now(UTC) - modified > lease and self._put_if(
                lock, body, {"If-Match": str(held.etag)}
            ):
                break
            time.sleep(wait)
            wait = min(wait * 2, 1.0)
        try:
            yield
        finally:
            try:  # release only our own lease: one taken over is the new holder's
                if token.encode() in self.get_bytes(lock):
                    self.delete(lock)
            except FileNotFoundError:
                pass

    def move(self, source: str, target: str) -> None:
        from minio.commonconfig import CopySource
        from minio.error import S3Error

        try:
            with self._reaching(source):
                self.client.copy_object(
                    self.bucket, self._name(target), CopySource(self.bucket, self._name(source))
                )
        except S3Error as e:
            if e.code == "NoSuchKey":
                raise self._missing(source) from e
            raise
        self.delete(source)


class _ClosingResponse(io.RawIOBase):
    """A urllib3 response as a context-managed binary stream that releases its connection."""

    def __init__(self, response: Any, store: S3Store, key: str):
        self._response, self._store, self._key = response, store, key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        # A read timeout mid-body is the endpoint's failure too, named as such.
        with self._store._reaching(self._key):
            if size is None or size < 0:
                return self._response.read()
            return self._response.read(size)

    def close(self) -> None:
        if not self.closed:
            self._response.close()
            self._response.release_conn()
        super().close()


# A checkout's own store (the embedded stack's): <project>/.store beside include/.
CHECKOUT_STORE = Path(__file__).resolve().parents[2] / ".store"


def default_store_url() -> str:
    """``MELANOMA_STORE_URL``, else the checkout's ``.store/`` (where ``make run`` writes)."""
    return os.environ.get("MELANOMA_STORE_URL") or CHECKOUT_STORE.as_uri()


def open_store(url: str | None = None, create: bool = True) -> ObjectStore:
    """The store named by ``url``, or by ``MELANOMA_STORE_URL``.

    ``create=False`` is for commands that only read (or add to existing runs): a file
    store that does not exist is then an error, not a new empty folder.
    """
    url = url or os.environ.get("MELANOMA_STORE_URL")
    if not url:
        raise ValueError(
            "no object store configured: set MELANOMA_STORE_URL (file:///path or s3://bucket)"
        )
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"file store URL must be file:///absolute/path, got {url!r}")
        return FileStore(parsed.path, create=create)
    if parsed.scheme == "s3":
        return S3Store(url)
    raise ValueError(f"unsupported object store URL {url!r}: use file:///path or s3://bucket")


def read_manifest(store: ObjectStore, key: str) -> Any:
    """Read a multi-object artifact's manifest; its absence means the artifact is incomplete."""
    try:
        return store.get_json(key)
    except FileNotFoundError as e:
        raise ArtifactIncompleteError(
            f"{store.url}/{key} does not exist: the artifact was never committed "
            "(its producing task has not finished successfully)"
        ) from e


def verify_bytes(url: str, entry: dict[str, Any], data: bytes, committed_by: str) -> bytes:
    """``data`` if it matches ``entry``'s recorded size and sha256; else ArtifactCorruptError."""
    size, digest = entry.get("size"), entry.get("sha256")
    actual = sha256_hex(data)
    if (size is not None and len(data) != int(size)) or (digest and actual != digest):
        raise ArtifactCorruptError(
            f"{url}/{entry['key']}: {len(data)} bytes with sha256 {actual[:16]}, but "
            f"{committed_by} recorded {size} bytes with sha256 {str(digest)[:16]}: the object "
            "changed after it was committed; rerun the stage that wrote it"
        )
    return data


def verified_bytes(store: ObjectStore, entry: dict[str, Any], committed_by: str) -> bytes:
    """The object a manifest ``entry`` ({key, size, sha256}) lists, checked against it."""
    return verify_bytes(store.url, entry, store.get_bytes(entry["key"]), committed_by)
