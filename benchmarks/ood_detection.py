"""How well a run's out-of-distribution score tells photographs that are not dermoscopy
from its own test images (``melanoma.ood``: Mahalanobis distance, Lee et al. 2018).

    .venv/bin/python benchmarks/ood_detection.py [--store URL] [--run REF] [--output ood.json]

In distribution: the run's test split, as stored, through its own preprocessing and
resolution parity. Out of distribution: scikit-image's bundled photographs (a test
dependency: ``requirements/dev.in``) and generated degenerate pictures (one colour, noise,
stripes, a gradient, a checkerboard, a tiny image blown up). The degenerate ones go
straight to the model here; ``melanoma-predict`` refuses one-colour and tiny images
before scoring (``melanoma.limits``). A run trained before the detector existed gets one
fitted here, as its train stage would (train shards; threshold on validation).

Prints the detection AUROC (out-of-distribution images positive, the distance their score)
and the share flagged per group, beside the baseline measured in the same run: the
maximum-softmax-probability score (Hendrycks and Gimpel, ICLR 2017; for one sigmoid,
1 - max(p, 1 - p)), and the ratio of the two AUROCs. Research use only, not a diagnostic
device.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score

from melanoma.cli import quiet_tensorflow, run_command
from melanoma.images import preprocess_image
from melanoma.ood import VALIDATION_PASS_SHARE
from melanoma.promotion import benchmark_inputs
from melanoma.store import default_store_url, open_store
from training.run_model import find_run

# skimage.data's colour photographs that ship inside the wheel (no download).
PHOTOGRAPHS = ("astronaut", "chelsea", "coffee", "rocket", "retina", "hubble_deep_field",
               "immunohistochemistry", "colorwheel", "logo", "skin", "lily")  # fmt: skip


def photographs() -> dict[str, np.ndarray]:
    import skimage.data

    found = {}
    for name in PHOTOGRAPHS:
        try:
            image = np.asarray(getattr(skimage.data, name)())
        except Exception as error:  # a sample that needs a download
            print(f"  skipped skimage.data.{name}: {type(error).__name__}")
            continue
        if image.ndim == 3 and image.shape[2] >= 3:
            found[f"photo:{name}"] = image[..., :3].astype(np.uint8)
    return found


def degenerate(rng: np.random.Generator) -> dict[str, np.ndarray]:
    y, x = np.mgrid[0:450, 0:600]
    return {
        "one colour (skin tone)": np.full((450, 600, 3), (215, 170, 150), np.uint8),
        "noise": rng.integers(0, 256, (450, 600, 3), dtype=np.uint8),
        "stripes": np.repeat(((y // 10) % 2 * 255).astype(np.uint8)[..., None], 3, axis=2),
        "gradient": np.dstack([x * 255 // 599, y * 255 // 449, np.full_like(x, 128)]).astype(
            np.uint8
        ),
        "checkerboard": np.repeat(
            (((y // 50) + (x // 50)) % 2 * 255).astype(np.uint8)[..., None], 3, axis=2
        ),
        "tiny (4x3, blown up)": cv2.resize(
            rng.integers(0, 256, (3, 4, 3), dtype=np.uint8), (600, 450), cv2.INTER_NEAREST
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", help="store URL (default: MELANOMA_STORE_URL, else .store/)")
    parser.add_argument("--run", help="run id, key or runs/<key> (default: the champion)")
    parser.add_argument("--label-task", default="mel_vs_rest")
    parser.add_argument("--output", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    run = find_run(
        open_store(args.store or default_store_url(), create=False), args.run, args.label_task
    )
    with quiet_tensorflow():
        from training.data import split_arrays
        from training.model import (
            feature_extractor,
            predict_scores,
            predict_scores_and_features,
            with_features,
        )
        from training.run_model import load_run_scorer
        from training.train import fit_ood_detector
    scorer = load_run_scorer(run)
    extractor = feature_extractor(scorer.model)
    detector, fitted_here = scorer.ood, scorer.ood is None
    if detector is None:
        detector = fit_ood_detector(run, extractor)
        val_images, _ = split_arrays(run, "val")
        val = detector.distances(extractor.predict(val_images, batch_size=64, verbose=0))
        detector = detector.with_threshold(val, VALIDATION_PASS_SHARE)

    scoring = with_features(scorer.model)

    def measure(inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p, features = predict_scores_and_features(scoring, inputs, 64, scorer.tta_views)
        return detector.distances(features), 1 - np.maximum(p, 1 - p)

    def measure_in_two_passes(inputs: np.ndarray) -> None:
        detector.distances(extractor.predict(inputs, batch_size=64, verbose=0))
        predict_scores(scorer.model, inputs, 64, scorer.tta_views)

    test = run.predictions("test").sort_values("image_id")
    test_inputs = benchmark_inputs(run, run, test)
    measure(test_inputs[:64])  # warm both paths up before timing them
    measure_in_two_passes(test_inputs[:64])
    started = time.perf_counter()
    test_distance, test_msp = measure(test_inputs)
    one_pass = len(test_inputs) / (time.perf_counter() - started)
    started = time.perf_counter()
    measure_in_two_passes(test_inputs)
    two_passes = len(test_inputs) / (time.perf_counter() - started)
    rng = np.random.default_rng(42)
    others = {**photographs(), **degenerate(rng)}
    inputs = np.stack(
        [
            preprocess_image(
                cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes(),
                scorer.preprocess,
                image.shape[1::-1],
                parity=scorer.parity,
            )
            for image in others.values()
        ]
    )
    other_distance, other_msp = measure(inputs)
    truth = np.r_[np.zeros(len(test_distance)), np.ones(len(other_distance))]
    mahalanobis = float(roc_auc_score(truth, np.r_[test_distance, other_distance]))
    baseline = float(roc_auc_score(truth, np.r_[test_msp, other_msp]))
    flagged = ~detector.in_distribution(other_distance)
    origin = "fitted here" if fitted_here else "the run's own"
    print(f"run {run.layout.prefix}; detector {origin}")
    print(f"threshold {detector.threshold:.2f} (95% of validation images pass)")
    print(f"test split: {len(test_distance)} images, flagged "
          f"{np.mean(~detector.in_distribution(test_distance)):.1%}")  # fmt: skip
    for (name, _), distance, flag in zip(others.items(), other_distance, flagged, strict=True):
        print(f"  {name:28s} distance {distance:8.2f}  {'flagged' if flag else 'passes'}")
    print(f"not dermoscopy: {len(other_distance)} images, flagged {flagged.mean():.1%}")
    print(f"scoring with the detector: {one_pass:.1f} images/s in one pass (score and features "
          f"from one model); baseline, two passes: {two_passes:.1f}; ratio "
          f"{one_pass / two_passes:.2f}")  # fmt: skip
    print(f"detection AUROC: Mahalanobis {mahalanobis:.3f}; baseline (max softmax "
          f"probability) {baseline:.3f}; ratio {mahalanobis / baseline:.2f}")  # fmt: skip
    if args.output:
        args.output.write_text(
            json.dumps(
                {
                    "run": run.layout.prefix,
                    "threshold": detector.threshold,
                    "test_images": len(test_distance),
                    "test_flagged_share": float(np.mean(~detector.in_distribution(test_distance))),
                    "others": {n: float(d) for n, d in zip(others, other_distance, strict=True)},
                    "others_flagged_share": float(flagged.mean()),
                    "detection_auroc": mahalanobis,
                    "baseline_auroc": baseline,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    sys.exit(run_command("ood_detection.py", main))
