"""The bad-input matrix at ingest, download and the object store (issue 16).

Each row is a real bad input: corrupt files made by byte edits, real zips, real folders,
a real moto server, a socket that accepts and never answers. Each asserts the error or
reject reason, and what must still be intact.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import socket
import threading
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from melanoma.dataset_version import DatasetVersion
from melanoma.download import RemoteFile, download
from melanoma.external import (
    ExternalLabelsError,
    extract_images,
    index_images,
    read_external_labels,
)
from melanoma.ham10000 import MetadataSchemaError
from melanoma.ingest import TooFewImagesError, ingest
from melanoma.layout import DATASETS
from melanoma.sources import find_layout, mirror_files
from melanoma.store import (
    FileStore,
    S3Store,
    StoreAccessDeniedError,
    StoreUnavailableError,
    open_store,
)
from tests.conftest import free_port
from tests.faults.cases import (
    IMAGE_CASES,
    corrupt_mid_stream,
    jpeg,
    replace_members,
    share_of_pixels_off,
    tree_digest,
)
from tests.http_server import FileServer


def test_the_corrupt_jpeg_case_is_what_the_matrix_found():
    """The fixture is the real defect: a lenient decode gets most pixels wrong, silently."""
    good = jpeg(size=(200, 150))
    assert share_of_pixels_off(corrupt_mid_stream(good), good) > 0.05


@pytest.mark.parametrize(("case", "edit", "reason"), IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES])
def test_ingest_quarantines_a_bad_image_with_its_reason(
    case, edit, reason, mini_archive, file_store
):
    root = mini_archive.root
    part = root / "HAM10000_images_part_1.zip"
    with zipfile.ZipFile(part) as z:
        member = sorted(z.namelist())[0]
        data = edit(z.read(member))
    image_id = member.removesuffix(".jpg")
    name = f"{image_id}.png" if data[:4] == b"\x89PNG" else member
    replace_members(part, {member}, {name: data})
    before = tree_digest(root)

    result = ingest(find_layout(root), file_store, "test")

    records = {
        Path(q["file"].split("::")[-1]).name: q
        for q in result.manifest["validation"]["quarantined"]
    }
    quarantined = {name: q["reason"] for name, q in records.items()}
    metadata = pd.read_csv(
        io.BytesIO(DatasetVersion(result.manifest).read(file_store, "metadata.csv"))
    )
    if reason is None:
        assert name not in quarantined and image_id in set(metadata["image_id"])
    else:
        assert quarantined[name].startswith(reason)
        assert image_id not in set(metadata["image_id"])
        assert result.manifest["counts"]["quarantined"] == len(quarantined)
        if "over the limit" in reason:  # a bomb is recorded, never copied into the store
            assert records[name]["key"] == "" and records[name]["bytes"] == len(data)
            assert records[name]["sha256"] == hashlib.sha256(data).hexdigest()
    assert tree_digest(root) == before  # raw inputs are never modified


def _empty_image_zips(root: Path, keep: int = 0) -> None:
    for part in ("HAM10000_images_part_1.zip", "HAM10000_images_part_2.zip"):
        with zipfile.ZipFile(root / part) as z:
            names = sorted(z.namelist())
        replace_members(root / part, set(names[keep:]), {})


@pytest.mark.parametrize(
    ("case", "keep", "message"),
    [
        ("image zips empty", 0, "0 readable image(s)"),
        ("image zips cut to 2 images each", 2, "4 readable image(s)"),
    ],
)
def test_an_archive_without_its_images_is_refused_and_nothing_committed(
    case, keep, message, mini_archive, file_store
):
    _empty_image_zips(mini_archive.root, keep)
    with pytest.raises(TooFewImagesError, match=re.escape(message)) as error:
        ingest(find_layout(mini_archive.root), file_store, "test")
    assert "HAM10000_images_part_1.zip" in str(error.value) and "min_image_share" in str(
        error.value
    )
    assert not list(file_store.list(f"{DATASETS}/"))
    # A user who means to ingest a subset says so.
    if keep:
        assert ingest(find_layout(mini_archive.root), file_store, "test", min_image_share=0).created


def test_an_empty_metadata_csv_is_named(mini_archive, file_store):
    metadata = mini_archive.root / "HAM10000_metadata.csv"
    metadata.write_bytes(b"")
    with pytest.raises(MetadataSchemaError, match=re.escape(f"{metadata}: empty file")):
        ingest(find_layout(mini_archive.root), file_store, "test")


def test_a_mirror_without_sha256sums_is_not_said_to_be_verified(mini_archive, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    with FileServer(mini_archive.root) as server:
        remotes = mirror_files(server.url)
        download(remotes[0], tmp_path / remotes[0].name)
    text = caplog.text
    assert "checked by size" not in text and "cannot be verified" in text
    assert "NOT verified: the source gives no size or checksum" in text
    # With a checksum, the log says which check was made.
    caplog.clear()
    data = (mini_archive.root / remotes[0].name).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    with FileServer(mini_archive.root) as server:
        download(
            RemoteFile(remotes[0].name, f"{server.url}/{remotes[0].name}", sha256=sha),
            tmp_path / "again" / remotes[0].name,
        )
    assert "verified: sha256" in caplog.text


# --- external sets: which file is which ---------------------------------------------


@pytest.mark.parametrize(
    ("case", "files"),
    [
        ("same id, two formats", {"ISIC_1.jpg": b"a", "ISIC_1.png": b"b"}),
        ("same id, in a subfolder and at the top", {"a/ISIC_1.jpg": b"a", "ISIC_1.jpg": b"b"}),
    ],
)
def test_an_id_two_files_share_is_ambiguous_with_both_paths(case, files, tmp_path):
    for name, data in {**files, "ISIC_2.jpg": b"c", ".hidden.jpg": b"d"}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    index = index_images(tmp_path)
    assert sorted(index.by_id) == ["ISIC_2"]
    assert sorted(str(p.relative_to(tmp_path)) for p in index.ambiguous["ISIC_1"]) == sorted(files)
    assert [p.name for p in index.skipped] == [".hidden.jpg"]


def test_two_zip_members_with_one_name_are_both_kept_and_ambiguous(tmp_path):
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ISIC_1.jpg", b"first")
        with pytest.warns(UserWarning, match="Duplicate name"):
            z.writestr("ISIC_1.jpg", b"second")
        z.writestr("ISIC_2.jpg", b"other")
    folder = extract_images(archive, tmp_path / "images")
    index = index_images(folder)
    assert sorted(p.read_bytes() for p in index.ambiguous["ISIC_1"]) == [b"first", b"second"]
    assert list(index.by_id) == ["ISIC_2"]


def test_a_zip_member_that_leaves_the_folder_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("../outside.jpg", b"x")
    with pytest.raises(ValueError, match="leaves the archive's folder"):
        extract_images(archive, tmp_path / "images")
    assert not (tmp_path / "outside.jpg").exists() and not (tmp_path / "images").exists()


@pytest.mark.parametrize(
    ("case", "text", "message"),
    [
        ("empty labels file", "", "empty file (no header row)"),
        ("header only", "image_id,melanoma\n", "a header but no label rows"),
        ("bad column", "image_id,label\nISIC_1,1\n", "match no known format"),
        ("bad value", "image_id,melanoma\nISIC_1,yes\n", "melanoma must be 0 or 1 (line(s) 2"),
        (
            "dx and melanoma columns that disagree",
            "image_id,dx,melanoma\nISIC_1,nv,0\nISIC_2,nv,1\nISIC_3,mel,0\n",
            "the dx and melanoma columns disagree (or melanoma is not 0/1) (line(s) 3, 4; 2 in all)",
        ),
        (
            "the same image labelled twice, differently",
            "image_id,dx\nISIC_1,nv\nISIC_1,mel\n",
            "duplicate image id (line(s) 3",
        ),
    ],
)
def test_a_bad_labels_file_is_one_error_naming_it(case, text, message, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(ExternalLabelsError, match=re.escape(message)) as error:
        read_external_labels(path)
    assert str(path) in str(error.value)


# --- the object store -----------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["../", "..", "runs/../../", "/etc/"])
def test_file_store_listing_stays_inside_the_store(prefix, tmp_path):
    (tmp_path / "outside.txt").write_text("secret")
    store = FileStore(tmp_path / "store")
    store.put_bytes("runs/a/config.json", b"{}")
    with pytest.raises(ValueError, match="invalid object key"):
        list(store.list(prefix))


def test_a_reader_never_creates_a_store(tmp_path):
    where = tmp_path / "no" / "such"
    with pytest.raises(StoreUnavailableError, match="no store there"):
        open_store(where.as_uri(), create=False)
    assert not (tmp_path / "no").exists()


def test_a_missing_bucket_is_not_a_missing_object(s3_store, moto_endpoint):
    missing = S3Store(f"s3://no-such-bucket-{free_port()}")
    for call in (lambda: missing.get_bytes("a"), lambda: missing.exists("a")):
        with pytest.raises(
            StoreUnavailableError, match=r"bucket 'no-such-bucket-\d+' does not exist"
        ):
            call()
    # In a bucket that exists, a missing object is still just that.
    with pytest.raises(FileNotFoundError, match="no such object"):
        s3_store.get_bytes("nothing/here")
    assert not s3_store.exists("nothing/here")


@pytest.fixture
def silent_endpoint():
    """A socket that accepts connections and never answers (an S3 endpoint that hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    server.close()


def _closed_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


@pytest.mark.parametrize("endpoint_kind", ["accepts and never answers", "refuses connections"])
def test_an_unreachable_s3_endpoint_is_one_error_naming_it(
    endpoint_kind, silent_endpoint, monkeypatch
):
    endpoint = silent_endpoint if endpoint_kind.startswith("accepts") else _closed_endpoint()
    monkeypatch.setenv("S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("S3_ACCESS_KEY", "testing")
    monkeypatch.setenv("S3_SECRET_KEY", "testing")
    monkeypatch.setenv("S3_READ_TIMEOUT_S", "0.5")
    monkeypatch.setenv("S3_CONNECT_TIMEOUT_S", "0.5")
    monkeypatch.setenv("S3_RETRIES", "1")
    store = S3Store("s3://bucket")
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            store.get_bytes("runs/x/config.json")
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(120)  # liveness, not speed: without timeouts this call blocks for ~30 min
    assert not thread.is_alive(), "the S3 call hung"
    assert isinstance(outcome[0], StoreUnavailableError), outcome
    assert f"S3 endpoint {endpoint} did not answer" in str(outcome[0])


def _wrong_credentials(monkeypatch, endpoint: str) -> None:
    monkeypatch.setenv("S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("S3_ACCESS_KEY", "wrong-key-id")
    monkeypatch.setenv("S3_SECRET_KEY", "wrong-secret")


def test_refused_s3_credentials_are_one_error_naming_the_key_id_not_the_secret(
    refusing_s3_endpoint, monkeypatch
):
    _wrong_credentials(monkeypatch, refusing_s3_endpoint)
    store = S3Store("s3://bucket")
    calls = {
        "read": lambda: store.get_bytes("runs/x/config.json"),
        "exists": lambda: store.exists("runs/x/config.json"),
        "list": lambda: list(store.list("runs/")),
        "write": lambda: store.put_bytes("runs/x/config.json", b"{}"),
    }
    for name, call in calls.items():
        with pytest.raises(StoreAccessDeniedError) as error:
            call()
        message = str(error.value)
        assert refusing_s3_endpoint in message and "'wrong-key-id'" in message, (name, message)
        assert "wrong-secret" not in message and "S3_SECRET_KEY" in message


def test_reingesting_puts_back_stored_images_deleted_or_cut_short(mini_archive, file_store, caplog):
    first = ingest(find_layout(mini_archive.root), file_store, "test")
    images = sorted(k for k in first.manifest["files"] if k.startswith("images/"))
    version = first.dataset_version
    deleted, cut = (file_store.root / DATASETS / version / rel for rel in images[:2])
    deleted.unlink()
    cut.write_bytes(cut.read_bytes()[:100])

    with caplog.at_level(logging.WARNING, logger="melanoma.ingest"):
        again = ingest(find_layout(mini_archive.root), file_store, "test")

    assert not again.created and again.dataset_version == version
    assert "2 object(s) were missing or cut short" in caplog.text
    for rel in images[:2]:  # back, as the manifest recorded them
        assert DatasetVersion(again.manifest).read(file_store, rel)
