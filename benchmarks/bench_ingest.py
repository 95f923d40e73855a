"""Ingest validation throughput: threaded (all cores) against one thread, in the same run.

    .venv/bin/python benchmarks/bench_ingest.py [HAM10000_DIR]

Uses the given directory (for example ../shared/data/ham10000), else generates a
1,000-image archive. Prints images/s for each and the ratio.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from melanoma.ingest import build_manifest
from melanoma.sources import find_layout

# The generated images are the tests' (tests/synthetic.py): the repository root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.synthetic import write_archive


def main() -> None:
    if len(sys.argv) > 1:
        root = Path(sys.argv[1])
    else:
        root = Path(tempfile.mkdtemp()) / "ham10000"
        write_archive(root, {"nv": 300, "mel": 100, "bkl": 100}, size=(600, 450))
    layout = find_layout(root)
    cores = os.cpu_count() or 1
    results = {}
    for workers in (1, cores):
        started = time.perf_counter()
        manifest, _ = build_manifest(layout, "benchmark", workers=workers)
        elapsed = time.perf_counter() - started
        files = manifest["counts"]["images"] + manifest["counts"]["masks"]
        results[workers] = files / elapsed
        print(
            f"validate+hash, {workers} thread(s): {files} files in {elapsed:.1f}s = {results[workers]:.0f} files/s"
        )
    print(f"ratio {cores} threads / 1 thread: {results[cores] / results[1]:.2f}x on {cores} cores")


if __name__ == "__main__":
    main()
