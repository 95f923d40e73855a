"""The acquisition-shift yardstick: a trained run's test split re-rendered under the shifts
that dermoscopy devices differ in (``melanoma.shifts``), each at graded strengths.

    .venv/bin/python benchmarks/acquisition_shift.py [--store URL] [--run REF]
        [--severities 0.4,0.8] [--shifts upscale,blur] [--no-parity] [--output shift.json]

In the spirit of ImageNet-C (Hendrycks and Dietterich, ICLR 2019). Every test image is read
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
import time
from pathlib import Path

import cv2
import numpy as np

from melanoma.cli import quiet_tensorflow
from melanoma.images import decode_image, preprocess_image
from melanoma.layout import DatasetLayout
from melanoma.metrics import auroc_with_interval
from melanoma.run import Run
from melanoma.shifts import ACQUISITION_SHIFTS, SEVERITIES, shift_seed
from melanoma.store import default_store_url, open_store, read_manifest
from training.run_model import RunScorer, find_run

SEED = 42


def stored_test_images(run: Run) -> tuple[list[str], list[np.ndarray], np.ndarray, np.ndarray]:
    """The run's test images as the dataset version stores them (RGB), with labels and lesions."""
    test = run.predictions("test").sort_values("image_id")
    manifest = read_manifest(run.store, run.config().manifest_key)
    dataset = DatasetLayout(manifest["dataset_version"])
    images = []
    for image_id in test["image_id"]:
        relative = next(
            DatasetLayout.image_relative(image_id, suffix)
            for suffix in (".jpg", ".png")
            if DatasetLayout.image_relative(image_id, suffix) in manifest["files"]
        )
        images.append(decode_image(run.store.get_bytes(dataset.file(relative))))
    return list(test["image_id"]), images, test["label"].to_numpy(), test["lesion_id"].to_numpy()


def model_inputs(
    images: list[np.ndarray], scorer: RunScorer, train_long_side: int | None
) -> np.ndarray:
    """Each (shifted) image as a file would reach the model: lossless PNG bytes, then the
    run's preprocessing with resolution parity."""
    inputs = []
    for image in images:
        png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()
        source_wh = (image.shape[1], image.shape[0])
        inputs.append(
            preprocess_image(png, scorer.preprocess, source_wh, train_long_side=train_long_side)
        )
    return np.stack(inputs)


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
    parity = None if args.no_parity else scorer.train_long_side
    ids, images, labels, lesions = stored_test_images(run)
    print(f"run {run.layout.prefix}: {len(ids)} test images, {int(labels.sum())} positive")
    print(f"resolution parity: {'off' if parity is None else f'long side {parity} px'}")

    def auroc(shifted: list[np.ndarray]) -> float:
        scores = predict_scores(
            scorer.model, model_inputs(shifted, scorer, parity), args.batch_size, scorer.tta_views
        )
        measured = auroc_with_interval(labels, scores, lesions, 200, SEED, 0.95)
        return float(measured["value"])

    started = time.monotonic()
    clean = auroc(images)
    print(f"clean (baseline, this run): AUROC {clean:.4f}")
    results: dict[str, dict[str, float]] = {}
    for name, shift in shifts.items():
        results[name] = {}
        for strength in severities:
            shifted = [
                shift(image, strength, shift_seed(SEED, image_id, name, strength))
                for image_id, image in zip(ids, images, strict=True)
            ]
            results[name][str(strength)] = auroc(shifted)
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
                    "parity_long_side": parity,
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
    main()
