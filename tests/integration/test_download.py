"""The download task against a real HTTP server on 127.0.0.1 serving a generated mini-archive."""

import hashlib
import logging

import pytest

from melanoma.download import ChecksumMismatchError, DownloadError, RemoteFile, download
from melanoma.ingest import ingest
from melanoma.sources import ARCHIVE_FILES, HAM10000_DOI, fetch
from tests.http_server import FileServer


def sha256sums(root) -> str:
    return "".join(
        f"{hashlib.sha256((root / n).read_bytes()).hexdigest()}  {n}\n" for n in ARCHIVE_FILES
    )


def test_interrupted_transfer_resumes_with_a_range_request(mini_archive, tmp_path, caplog):
    part = mini_archive.root / "HAM10000_images_part_1.zip"
    size = part.stat().st_size
    with FileServer(mini_archive.root) as server:
        server.state.cut_after["/" + part.name] = size // 2
        remote = RemoteFile(
            part.name,
            f"{server.url}/{part.name}",
            size=size,
            sha256=hashlib.sha256(part.read_bytes()).hexdigest(),
        )
        with caplog.at_level(logging.WARNING):
            path = download(remote, tmp_path / part.name, backoff_s=0.01)
    assert path.read_bytes() == part.read_bytes()
    ranges = [r for p, r in server.state.requests if p == "/" + part.name]
    assert ranges[0] is None
    assert ranges[1] == f"bytes={size // 2}-", "the second request must resume, not restart"
    assert "resuming at byte" in caplog.text
    assert not (tmp_path / (part.name + ".part")).exists()


def test_transient_server_error_is_retried(mini_archive, tmp_path):
    name = "HAM10000_metadata.csv"
    with FileServer(mini_archive.root) as server:
        server.state.fail_status["/" + name] = 503
        download(RemoteFile(name, f"{server.url}/{name}"), tmp_path / name, backoff_s=0.01)
    assert (tmp_path / name).read_bytes() == (mini_archive.root / name).read_bytes()
    assert len(server.state.requests) == 2


def test_corrupted_file_is_caught_and_kept_aside(mini_archive, tmp_path):
    name = "HAM10000_images_part_2.zip"
    with FileServer(mini_archive.root) as server:
        remote = RemoteFile(name, f"{server.url}/{name}", sha256="0" * 64)
        with pytest.raises(
            ChecksumMismatchError, match=rf"{name} .*sha256 [0-9a-f]{{64}}, expected 0+"
        ):
            download(remote, tmp_path / name, backoff_s=0.01)
        with pytest.raises(DownloadError, match="HTTP 404"):
            download(RemoteFile("nope.zip", f"{server.url}/nope.zip"), tmp_path / "nope.zip")
    assert not (tmp_path / name).exists()
    assert (tmp_path / (name + ".corrupt")).read_bytes() == (mini_archive.root / name).read_bytes()


def test_mirror_source_verifies_against_sha256sums_and_ingests(mini_archive, tmp_path, s3_store):
    (mini_archive.root / "SHA256SUMS").write_text(sha256sums(mini_archive.root))
    with FileServer(mini_archive.root) as server:
        layout = fetch(server.url + "/", tmp_path / "cache")
        result = ingest(layout, s3_store, "mirror")
        # Tamper with the served file: the mirror's own SHA256SUMS now catches it.
        corrupt_root = tmp_path / "cache2"
        (mini_archive.root / "HAM10000_metadata.csv").write_text("lesion_id,image_id,dx\n")
        with pytest.raises(ChecksumMismatchError, match=r"HAM10000_metadata\.csv"):
            fetch(server.url + "/", corrupt_root)
    assert result.created
    assert result.manifest["counts"]["images"] == len(mini_archive.metadata)
    assert s3_store.exists(result.manifest_key)


def test_dataverse_source_uses_the_api_listing(mini_archive, tmp_path):
    root = mini_archive.root
    files = []
    for number, name in enumerate(ARCHIVE_FILES, start=100):
        data = (root / name).read_bytes()
        entry = {
            "id": number,
            "filename": name,
            "filesize": len(data),
            "checksum": {"type": "MD5", "value": hashlib.md5(data).hexdigest()},
        }
        if name.endswith(".csv"):  # Dataverse serves the metadata as an ingested table
            entry = {
                "id": number,
                "filename": "HAM10000_metadata.tab",
                "filesize": 1,
                "originalFileName": name,
                "originalFileSize": len(data),
                "checksum": {"type": "MD5", "value": "f" * 32},
            }
        files.append({"label": entry["filename"], "dataFile": entry})
    with FileServer(root) as server:
        server.state.json_routes["/api/datasets/:persistentId/"] = {
            "status": "OK",
            "data": {"latestVersion": {"files": files}},
        }
        for f in files:
            server.state.routes[f"/api/access/datafile/{f['dataFile']['id']}"] = f["dataFile"].get(
                "originalFileName", f["dataFile"]["filename"]
            )
        layout = fetch(f"dataverse:{server.url}", tmp_path / "cache")
    assert layout.metadata.read_bytes() == (root / "HAM10000_metadata.csv").read_bytes()
    assert len(layout.image_parts) == 2 and layout.masks is not None
    metadata_request = next(p for p, _ in server.state.requests if p == "/api/access/datafile/100")
    assert metadata_request
    assert HAM10000_DOI.startswith("doi:10.7910/DVN/DBW86T")
