"""The S3 backend (minio client) against moto's S3 server on 127.0.0.1."""

from melanoma.ingest import ingest
from melanoma.sources import find_layout
from melanoma.store import S3Store
from tests.store_contract import check_store_contract


def test_s3_store_contract(s3_store, tmp_path):
    check_store_contract(s3_store, tmp_path)


def test_prefixed_store_keeps_to_its_prefix(s3_store, tmp_path):
    nested = S3Store(f"{s3_store.url}/team/a")
    nested.put_bytes("x/y.txt", b"1")
    assert [o.key for o in nested.list("")] == ["x/y.txt"]
    assert [o.key for o in s3_store.list("")] == ["team/a/x/y.txt"]


def test_ingest_into_s3_is_versioned_and_idempotent(mini_archive, s3_store):
    layout = find_layout(mini_archive.root)
    first = ingest(layout, s3_store, "test")
    keys = [o.key for o in s3_store.list("datasets/")]
    assert len(keys) == len(first.manifest["files"]) + 1  # + MANIFEST.json
    second = ingest(layout, s3_store, "test")
    assert (first.created, second.created) == (True, False)
    assert [o.key for o in s3_store.list("datasets/")] == keys
