"""The runs-page benchmark's generated store (benchmarks/bench_runs_page.py): copies are
runs of their own, readable and checked like any run, and the page pages them."""

from melanoma.runs_index import index_runs
from melanoma.runs_page import PageQuery, read_served_artifact, render_runs_table
from tests.conftest import load_benchmark


def test_generated_runs_are_distinct_runs_each_read_through_its_own_records(tmp_path):
    bench = load_benchmark("bench_runs_page")
    store = bench.generate_store(tmp_path / "store", 60)
    index = index_runs(store, cache=None)
    assert len(index.runs) == 60 and len({r.run_id for r in index.runs}) == 60
    assert all(r.stage == "reported" and r.damaged is None for r in index.runs)
    copy = index.runs[0]  # the newest: a copy
    assert copy.run_id == bench.run_id(59)
    config = read_served_artifact(store, copy.key, "config.json")  # checked against its record
    assert bench.run_id(59).encode() in config
    second_page = render_runs_table(index, PageQuery(page=2))
    assert "51 to 60 shown" in second_page and second_page.count("<tr data-run=") == 10
