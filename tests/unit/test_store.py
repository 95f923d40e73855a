import pytest

from melanoma.store import FileStore, S3Store, open_store
from tests.store_contract import check_exclusive_across_processes, check_store_contract


def test_file_store_contract(file_store, tmp_path):
    check_store_contract(file_store, tmp_path)
    leftovers = [p for p in file_store.root.rglob("*") if p.name.endswith(".part")]
    assert leftovers == [], "failed writes must not leave temporary files"


def test_file_store_lock_loses_no_update_between_processes(file_store):
    check_exclusive_across_processes(file_store)


def test_open_store_by_url(tmp_path, monkeypatch):
    assert isinstance(open_store(tmp_path.as_uri()), FileStore)
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:1")
    s3 = open_store("s3://bucket/some/prefix")
    assert isinstance(s3, S3Store) and s3.bucket == "bucket" and s3.prefix == "some/prefix"
    with pytest.raises(ValueError, match="unsupported object store URL"):
        open_store("gs://bucket")
    monkeypatch.delenv("MELANOMA_STORE_URL", raising=False)
    with pytest.raises(ValueError, match="MELANOMA_STORE_URL"):
        open_store(None)
