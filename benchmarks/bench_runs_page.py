"""The runs page with 500 runs in the store, against the same page with 5, in the same run.

    .venv/bin/python benchmarks/bench_runs_page.py [--runs 500] [--budget-s 1.0]

Five runs are taken through the real calibrate, evaluate, promotion and report stages
(``tests/scored_run.py``: fabricated predictions, no model), two with an external set;
the others are copies of them under new run ids, each a run of its own in the store
(its own ``config.json`` and commit records; the other artifacts hard-linked). Times,
median of 5, for a file store:

* the runs page, cold: every run summarised from its commit records (a fresh cache, as
  after the API server starts);
* the runs page, warm: what every later request costs (the listing, the champion
  record, sorting and the HTML of one page of 50 rows, the trend charts);
* the same, sorted by test AUROC and filtered;
* the compare view of 2 runs (paired bootstraps, curves).

Prints each, and the ratio of the 500-run page to the 5-run page. Exits 1 when the warm
500-run page takes longer than ``--budget-s``: what a user waits for, every visit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from melanoma.layout import RunLayout
from melanoma.runs_index import SummaryCache, index_runs
from melanoma.runs_page import PageQuery, render_compare_page, render_runs_page
from melanoma.store import FileStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.scored_run import write_external_set, write_reported_run

TEMPLATES = 5


def run_id(i: int) -> str:
    day, hour = divmod(i, 24)
    return f"scheduled__2026-{1 + day // 28:02d}-{1 + day % 28:02d}T{hour:02d}:00:00+00:00"


def template_runs(store: FileStore) -> list[str]:
    """Five reported runs of different strength and configuration; return their keys."""
    keys = []
    for i in range(TEMPLATES):
        run = write_reported_run(
            store, run_id(i), strength=1.0 + i / 2, seed=0, phase2_epochs=i % 2
        )
        if i % 2 == 0:
            write_external_set(run, "site_a")
        keys.append(run.layout.key)
    return keys


def copy_run(store: FileStore, source: str, new_id: str) -> None:
    """``source``'s run as run ``new_id``: its config.json and commit records rewritten for
    the new key, every other artifact hard-linked."""
    old, new = RunLayout(source), RunLayout.for_run_id(new_id)
    old_dir, new_dir = store.root / old.prefix, store.root / new.prefix
    config = json.loads((old_dir / "config.json").read_bytes())
    config_bytes = json.dumps({**config, "run_id": new_id}, indent=2, sort_keys=True).encode()
    for path in sorted(old_dir.rglob("*")):
        if path.is_dir():
            continue
        relative = path.relative_to(old_dir)
        target = new_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if relative.parts[0] == "commits":
            record = path.read_text().replace(f"{old.prefix}/", f"{new.prefix}/")
            if relative.name == "split.json":
                entry = json.loads(record)
                entry["artifacts"]["config"] |= {
                    "size": len(config_bytes),
                    "sha256": hashlib.sha256(config_bytes).hexdigest(),
                }
                record = json.dumps(entry, indent=2, sort_keys=True)
            target.write_text(record)
        elif relative.as_posix() == "config.json":
            target.write_bytes(config_bytes)
        else:
            os.link(path, target)


def generate_store(root: Path, runs: int) -> FileStore:
    """A store of ``runs`` runs: five reported ones and copies of them."""
    store = FileStore(root)
    templates = template_runs(store)
    for i in range(TEMPLATES, runs):
        copy_run(store, templates[i % TEMPLATES], run_id(i))
    return store


def median_seconds(action: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(store: FileStore) -> dict[str, float]:
    warm = SummaryCache()
    index_runs(store, warm)
    sorted_query = PageQuery(sort="test", text="phase2_epochs=1")
    keys = [r.key for r in index_runs(store, warm).runs[:2]]
    return {
        "page, cold": median_seconds(
            lambda: render_runs_page(store, index_runs(store, SummaryCache()))
        ),
        "page, warm": median_seconds(lambda: render_runs_page(store, index_runs(store, warm))),
        "sorted and filtered, warm": median_seconds(
            lambda: render_runs_page(store, index_runs(store, warm), sorted_query)
        ),
        "compare 2 runs": median_seconds(
            lambda: render_compare_page(store, index_runs(store, warm), keys)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--budget-s", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        small = generate_store(Path(folder) / "small", TEMPLATES)
        large = generate_store(Path(folder) / "large", args.runs)
        assert len(index_runs(large, None).runs) == args.runs
        baseline, measured = measure(small), measure(large)
    for name in baseline:
        print(
            f"{name}: {TEMPLATES} runs {baseline[name] * 1000:.0f} ms, "
            f"{args.runs} runs {measured[name] * 1000:.0f} ms, "
            f"ratio {measured[name] / baseline[name]:.1f}x"
        )
    warm = measured["page, warm"]
    verdict = "within" if warm <= args.budget_s else "OVER"
    print(f"warm {args.runs}-run page: {warm:.2f} s, {verdict} the {args.budget_s:.1f} s budget")
    if warm > args.budget_s:
        sys.exit(1)


if __name__ == "__main__":
    main()
