"""The download task against a real HTTP server on 127.0.0.1 serving a generated mini-archive."""

import hashlib
import logging
import zipfile

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


def test_isic2018_test_set_comes_from_the_same_dataverse_record(tmp_path):
    """The ISIC 2018 Task 3 test images and ground truth, picked from the record's listing."""
    from melanoma.external import ISIC2018_IMAGES, ISIC2018_LABELS, fetch_isic2018, index_images

    root = tmp_path / "served"
    root.mkdir()
    with zipfile.ZipFile(root / ISIC2018_IMAGES, "w") as z:
        for i in range(3):
            z.writestr(f"ISIC2018_Task3_Test_Images/ISIC_00345{i:02d}.jpg", b"jpeg bytes")
    (root / ISIC2018_LABELS).write_text(
        "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\n"
        + "".join(f"ISIC_00345{i:02d},{int(i == 0)},{int(i != 0)},0,0,0,0,0\n" for i in range(3))
    )
    files = [
        {
            "label": "HAM10000_images_part_1.zip",
            "dataFile": {"id": 1, "filename": "x", "filesize": 1},
        },
        {
            "label": ISIC2018_IMAGES,
            "dataFile": {
                "id": 7,
                "filename": ISIC2018_IMAGES,
                "filesize": (root / ISIC2018_IMAGES).stat().st_size,
                "checksum": {
                    "type": "MD5",
                    "value": hashlib.md5((root / ISIC2018_IMAGES).read_bytes()).hexdigest(),
                },
            },
        },
        {  # Dataverse ingests CSVs as tables; the original is asked for with format=original
            "label": "ISIC2018_Task3_Test_GroundTruth.tab",
            "dataFile": {
                "id": 8,
                "filename": "ISIC2018_Task3_Test_GroundTruth.tab",
                "originalFileName": ISIC2018_LABELS,
                "originalFileSize": (root / ISIC2018_LABELS).stat().st_size,
            },
        },
    ]
    with FileServer(root) as server:
        server.state.json_routes["/api/datasets/:persistentId/"] = {
            "status": "OK",
            "data": {"latestVersion": {"files": files}},
        }
        server.state.routes["/api/access/datafile/7"] = ISIC2018_IMAGES
        server.state.routes["/api/access/datafile/8"] = ISIC2018_LABELS
        external = fetch_isic2018(tmp_path / "cache", server.url)
    assert external.name == "isic2018"
    assert sorted(index_images(external.images).by_id) == [f"ISIC_00345{i:02d}" for i in range(3)]
    assert external.labels.read_bytes() == (root / ISIC2018_LABELS).read_bytes()
    assert "/api/access/datafile/1" not in {p for p, _ in server.state.requests}


def test_an_unreachable_dataverse_says_which_source_to_set_instead(tmp_path):
    from tests.conftest import free_port

    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(DownloadError) as refused:
        fetch(f"dataverse:{closed}", tmp_path / "cache")
    message = str(refused.value)
    assert closed in message and "`source` param" in message and "HAM10000_SOURCE" in message
