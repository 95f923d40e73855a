"""The S3 backend (minio client) against moto's S3 server on 127.0.0.1."""

from melanoma.ingest import ingest
from melanoma.sources import find_layout
from melanoma.store import S3Store
from tests.store_contract import check_exclusive_across_processes, check_store_contract


def test_s3_store_contract(s3_store, tmp_path):
    check_store_contract(s3_store, tmp_path)


def test_s3_lease_loses_no_update_between_processes(s3_store):
    check_exclusive_across_processes(s3_store)


def test_s3_lease_left_by_a_dead_holder_is_taken_over_once_it_runs_out(s3_store, monkeypatch):
    monkeypatch.setenv("S3_LOCK_LEASE_S", "1")
    # A holder that died inside the block: its lease object stays behind.
    lease = s3_store.exclusive("job")
    lease.__enter__()
    with s3_store.exclusive("job"):  # waits out the lease, then takes it
        s3_store.put_bytes("done", b"1")
    assert s3_store.get_bytes("done") == b"1"
    assert [o.key for o in s3_store.list("")] == ["done"]


def test_s3_lease_waits_while_its_holder_is_alive(s3_store):
    import threading

    order = []
    with s3_store.exclusive("job"):
        waiter = threading.Thread(target=lambda: _hold(s3_store, order))
        waiter.start()
        waiter.join(1.0)
        order.append("holder done")
    waiter.join(30)
    assert order == ["holder done", "waiter in"]


def _hold(store, order):
    with store.exclusive("job"):
        order.append("waiter in")


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
