"""The acquisition-shift yardstick: a trained run's test split re-rendered under the shifts
that dermoscopy devices differ in (``melanoma.shifts``), each at graded strengths.

    .venv/bin/python benchmarks/acquisition_shift.py [--store URL] [--run REF]
        [--severities 0.4,0.8] [--shifts upscale,blur] [--no-parity] [--output shift.json]

In the spirit of ImageNet-C (Hendrycks and Dietterich, ICLR 2019). The whole test split at
any strengths; every run's report has the same measure on a sample of it (the DAG's
``measure_robustness``, ``melanoma.robustness``). Every test image is read
from the dataset version as stored, shifted, then scored through the run's own
preprocessing and resolution parity, as ``melanoma-predict`` would score it. Prints the
AUROC for each shift and strength, the mean for each shift, and the mean over all shifts,
with the clean AUROC (strength 0, scored the same way in the same run) as the baseline and
the ratio of the shifted mean to it. ``--no-parity`` scores without resolution parity, to
show what the parity fix is worth. Research use only, not a diagnostic device.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from melanoma.cli import quiet_tensorflow, run_command
from melanoma.images import NO_PARITY
from melanoma.metrics import auroc_with_interval
from melanoma.robustness import shifted_inputs, stored_images
from melanoma.shifts import ACQUISITION_SHIFTS, SEVERITIES
from melanoma.store import default_store_url, open_store
from training.run_model import find_run

SEED = 42


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", help="store URL (default: MELANOMA_STORE_URL, else .store/)")
    parser.add_argument("--run", help="run id, key or runs/<key> (default: the champion)")
    parser.add_argument("--label-task", default="mel_vs_rest")
    parser.add_argument(
        "--severities",
        default="0.4,0.8",
        help=f"strengths in (0, 1], comma-separated (ImageNet-C's five: {SEVERITIES})",
    )
    parser.add_argument(
        "--shifts",
        default=",".join(ACQUISITION_SHIFTS),
        help="which shifts, comma-separated (default: all)",
    )
    parser.add_argument("--no-parity", action="store_true", help="score without parity")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    severities = [float(s) for s in args.severities.split(",")]
    unknown = set(args.shifts.split(",")) - set(ACQUISITION_SHIFTS)
    if unknown:
        parser.error(f"unknown shift(s) {sorted(unknown)}; known: {list(ACQUISITION_SHIFTS)}")
    shifts = {name: ACQUISITION_SHIFTS[name] for name in args.shifts.split(",")}

    run = find_run(
        open_store(args.store or default_store_url(), create=False), args.run, args.label_task
    )
    with quiet_tensorflow():
        from training.model import predict_scores
        from training.run_model import load_run_scorer
    scorer = load_run_scorer(run)
    parity = NO_PARITY if args.no_parity else scorer.parity
    test = run.predictions("test").sort_values("image_id")
    ids, labels, lesions = list(test["image_id"]), test["label"].to_numpy(), test["lesion_id"]
    images = stored_images(run, ids)
    print(f"run {run.layout.prefix}: {len(ids)} test images, {int(labels.sum())} positive")
    print(parity.describe())

    def auroc(shift, strength: float) -> float:
        inputs = shifted_inputs(images, ids, shift, strength, scorer.preprocess, parity, SEED)
        scores = predict_scores(scorer.model, inputs, args.batch_size, scorer.tta_views)
        return float(auroc_with_interval(labels, scores, lesions, 200, SEED, 0.95)["value"])

    started = time.monotonic()
    clean = auroc(None, 0.0)
    print(f"clean (baseline, this run): AUROC {clean:.4f}")
    results: dict[str, dict[str, float]] = {}
    for name, shift in shifts.items():
        results[name] = {}
        for strength in severities:
            results[name][str(strength)] = auroc((name, shift), strength)
        mean = float(np.mean(list(results[name].values())))
        grades = "  ".join(f"{s}: {v:.4f}" for s, v in results[name].items())
        print(f"{name:<14} {grades}  mean {mean:.4f}")
    shift_mean = float(np.mean([v for r in results.values() for v in r.values()]))
    elapsed = time.monotonic() - started
    print(f"acquisition-shift mean AUROC: {shift_mean:.4f}")
    print(f"ratio shifted mean / clean: {shift_mean / clean:.3f}  ({elapsed:.0f} s)")
    if args.output:
        args.output.write_text(
            json.dumps(
                {
                    "run": run.layout.prefix,
                    "resolution_parity": parity.record(),
                    "images": len(ids),
                    "clean_auroc": clean,
                    "auroc": results,
                    "mean_auroc": shift_mean,
                    "seconds": round(elapsed, 1),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    sys.exit(run_command("acquisition_shift.py", main))
