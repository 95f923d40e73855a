import hashlib

import pytest

from melanoma.backbones import BACKBONES
from melanoma.download import DownloadError
from melanoma.layout import record_of
from melanoma.pretrained import place_pretrained_weights


def test_user_file_verified_by_given_sha256_and_stored_once(file_store, tmp_path):
    weights = tmp_path / "my.weights.h5"
    weights.write_bytes(b"not really hdf5, but bytes are bytes")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    record = place_pretrained_weights(
        file_store, "mobilenet_v2", str(weights), tmp_path, expected_sha256=digest
    )
    assert record["key"] == "pretrained/mobilenet_v2_imagenet_notop.weights.h5"
    assert file_store.get_bytes(record["key"]) == weights.read_bytes()
    assert file_store.get_json(record_of(record["key"]))["sha256"] == digest
    again = place_pretrained_weights(
        file_store, "mobilenet_v2", str(weights), tmp_path, expected_sha256=digest
    )
    assert again == record


def test_unverifiable_or_mismatching_weights_are_refused(file_store, tmp_path):
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"x")
    with pytest.raises(DownloadError, match="not a known resnet50 ImageNet weights file"):
        place_pretrained_weights(file_store, "resnet50", str(weights), tmp_path)
    with pytest.raises(DownloadError, match="expected " + "a" * 64):
        place_pretrained_weights(
            file_store, "resnet50", str(weights), tmp_path, expected_sha256="a" * 64
        )
    with pytest.raises(ValueError, match="unknown backbone 'vgg99'"):
        place_pretrained_weights(file_store, "vgg99", str(weights), tmp_path)
    with pytest.raises(ValueError, match="tiny_cnn' has no pretrained weights"):
        place_pretrained_weights(file_store, "tiny_cnn", str(weights), tmp_path)
    assert list(file_store.list("")) == []


def test_none_skips_and_known_backbones_declare_keras_files(file_store, tmp_path):
    assert place_pretrained_weights(file_store, "resnet50", "none", tmp_path) is None
    assert BACKBONES["resnet50"].keras_md5 == "4d473c1dd8becc155b73f8504c6f6626"


def test_keras_weights_prefetched_into_the_weights_dir_are_used_without_a_request(
    file_store, tmp_path, monkeypatch
):
    # What the Airflow image does at build time: the file sits in MELANOMA_WEIGHTS_DIR.
    prefetched = tmp_path / "weights" / BACKBONES["mobilenet_v2"].keras_weights_file.split("/")[-1]
    prefetched.parent.mkdir()
    prefetched.write_bytes(b"prefetched weights")
    monkeypatch.setattr("melanoma.download._fetch_into", pytest.fail)  # no network
    record = place_pretrained_weights(file_store, "mobilenet_v2", "keras", tmp_path / "weights")
    assert file_store.get_bytes(record["key"]) == b"prefetched weights"
    assert record["source"] == "keras"
