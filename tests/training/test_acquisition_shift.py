"""The acquisition-shift yardstick (benchmarks/acquisition_shift.py) on a trained run: its
clean baseline is the pipeline's own test AUROC, and every shift is scored."""

import json
import subprocess
import sys

import numpy as np

from melanoma.metrics import auroc_with_interval
from melanoma.shifts import ACQUISITION_SHIFTS
from tests.conftest import REPO_ROOT


def test_the_yardstick_scores_every_shift_and_its_clean_baseline_is_the_test_auroc(
    evaluated_run, tmp_path
):
    output = tmp_path / "shift.json"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "acquisition_shift.py"),
            "--store",
            evaluated_run.store.url,
            "--run",
            evaluated_run.layout.prefix,
            "--severities",
            "1.0",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(output.read_text())
    assert set(figures["auroc"]) == set(ACQUISITION_SHIFTS)
    assert all(0 <= r["1.0"] <= 1 for r in figures["auroc"].values())
    # The generated archive's 64x48 JPEGs at quality 90, as the run recorded them.
    assert figures["resolution_parity"] == {"train_long_side": 64, "train_jpeg_quality": 90}
    # Read from the store and scored as predict scores files, the unshifted test split gives
    # the pipeline's own test AUROC.
    test = evaluated_run.predictions("test")
    pipeline = auroc_with_interval(
        test["label"], test["probability"], test["lesion_id"], 200, 42, 0.95
    )["value"]
    assert np.isclose(figures["clean_auroc"], pipeline, atol=1e-4)
    assert "ratio shifted mean / clean" in done.stdout
