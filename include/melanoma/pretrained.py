"""Place ImageNet backbone weights in the store under ``pretrained/``, verified by hash.

Sources: ``keras`` (Keras's own published file, fetched over HTTPS and checked
against Keras's MD5 where Keras publishes one), a local file, or an HTTP(S) URL.
A supplied file must match a hash we know for that backbone, or the
``expected_sha256`` the user gives; anything else is refused rather than
trained on unverified. ``none`` skips the step (random initialisation, for tests).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from melanoma.backbones import BACKBONES, backbone_spec
from melanoma.download import DownloadError, RemoteFile, download, file_digest
from melanoma.layout import pretrained_weights_key, record_of
from melanoma.store import ObjectStore

log = logging.getLogger(__name__)

KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications"


def fetch_keras_weights(backbone: str, weights_dir: Path) -> Path:
    """Keras's published ImageNet file for ``backbone`` in ``weights_dir``, verified.

    A verified copy already there is used without any request: the Airflow image fetches
    the ResNet50 file when it is built, so runs need no internet.
    """
    spec = backbone_spec(backbone)
    if spec.keras_weights_file is None:
        raise ValueError(f"backbone {backbone!r} has no published Keras ImageNet weights")
    name = Path(spec.keras_weights_file).name
    return download(
        RemoteFile(name, f"{KERAS_WEIGHTS_URL}/{spec.keras_weights_file}", md5=spec.keras_md5),
        weights_dir / name,
    )


def place_pretrained_weights(
    store: ObjectStore,
    backbone: str,
    source: str,
    weights_dir: Path,
    expected_sha256: str | None = None,
) -> dict[str, Any] | None:
    """Verify the weights named by ``source`` and store them; return their record (or None for ``none``).

    The record (also stored as ``<key>.json``) holds the key, sha256, size and
    source. Storing the same file again is a no-op.
    """
    if source == "none":
        log.info("pretrained weights: none (random initialisation)")
        return None
    spec = backbone_spec(backbone)
    if spec.keras_weights_file is None:
        raise ValueError(f"backbone {backbone!r} has no pretrained weights; use `none`")
    path, verified_by = _fetch_weights(backbone, source, weights_dir, expected_sha256)
    sha256 = file_digest(path)
    if not verified_by:
        verified_by = _verify_sha256(path, sha256, backbone, expected_sha256)
    key = pretrained_weights_key(backbone, path.name)
    record = {
        "key": key,
        "backbone": backbone,
        "sha256": sha256,
        "bytes": path.stat().st_size,
        "source": source,
        "verified_by": verified_by,
    }
    record_key = record_of(key)
    if store.exists(record_key) and store.get_json(record_key).get("sha256") == sha256:
        log.info("pretrained weights %s already in the store (sha256 %s)", key, sha256)
        return store.get_json(record_key)
    store.put_file(key, path)
    store.put_json(record_key, record)  # after the weights: the record marks them complete
    log.info("pretrained weights %s stored, verified by %s", key, verified_by)
    return record


def _fetch_weights(
    backbone: str, source: str, weights_dir: Path, expected_sha256: str | None
) -> tuple[Path, str]:
    """The weights file ``source`` names, on local disk, and how the download was verified
    (empty when its digest has still to be checked)."""
    if source == "keras":
        spec = backbone_spec(backbone)
        verified_by = (
            f"md5 {spec.keras_md5} published by Keras"
            if spec.keras_md5
            else "Keras download (no published hash)"
        )
        return fetch_keras_weights(backbone, weights_dir), verified_by
    if source.startswith(("http://", "https://")):
        name = Path(urlparse(source).path).name
        return download(RemoteFile(name, source, sha256=expected_sha256), weights_dir / name), ""
    path = Path(urlparse(source).path if source.startswith("file://") else source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file {path} does not exist")
    return path, ""


def _verify_sha256(path: Path, sha256: str, backbone: str, expected_sha256: str | None) -> str:
    """Check a file's digest against the user's, or else against the known weights files."""
    if expected_sha256 and sha256 != expected_sha256.lower():
        raise DownloadError(f"{path}: sha256 {sha256}, expected {expected_sha256}")
    if not expected_sha256 and sha256 not in backbone_spec(backbone).known_sha256:
        raise DownloadError(
            f"{path}: sha256 {sha256} is not a known {backbone} ImageNet weights file; "
            "pass its expected sha256 to use it"
        )
    return f"sha256 {sha256}" + (" (user-supplied)" if expected_sha256 else " (known file)")


if __name__ == "__main__":  # python -m melanoma.pretrained resnet50 /opt/melanoma/weights
    import argparse

    parser = argparse.ArgumentParser(description="Fetch a backbone's Keras ImageNet weights.")
    parser.add_argument(
        "backbone", choices=sorted(n for n, s in BACKBONES.items() if s.keras_weights_file)
    )
    parser.add_argument("weights_dir", type=Path)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    print(fetch_keras_weights(arguments.backbone, arguments.weights_dir))
