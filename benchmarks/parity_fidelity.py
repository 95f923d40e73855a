"""How close resolution parity brings a full-resolution image to what a run trained on.

The shared mirror holds HAM10000 at 200x150 and a sample of the same images at the original
600x450 (``HAM10000_images_fullres_sample.zip``). A run trains on the 200x150 copies; a
user scores originals. For every image of the sample this scores, with each run given, the
mirror's copy (what the run trained on) and the original brought to the training
resolution in each of several ways, and prints how far each way's scores are from the
copy's: the correlation of their logits, the mean absolute logit gap (and its ratio to
the long-side-only way's, the baseline), the mean probability, and the share of images
that get the copy's decision at the run's operating threshold, averaged over the runs. No
label is read, so images a run trained on count as much as any other.

The ways: resolution parity as preprocessing, predict and external validation apply it
(``melanoma.images.ResolutionParity``: the full decode, the area shrink), with the long
side only (a run whose training images are not JPEGs), and with the long side and each
``--qualities`` (the shrunk image saved as JPEG at that quality; a run records its
training images' quality, which ``melanoma.images.jpeg_quality`` estimates from their
quantisation tables), and Pillow's bicubic shrink at the copies' quality (another
resampler).

    .venv/bin/python benchmarks/parity_fidelity.py --store file:///tmp/seed1-store \\
        --run <run key> --run <run key> --source ../shared/data/ham10000

Research use only, not a diagnostic device.
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL.Image

from melanoma.cli import run_command
from melanoma.images import (
    ResolutionParity,
    check_image,
    jpeg_quality,
    preprocess_image,
)
from melanoma.layout import RunLayout
from melanoma.run import Run
from melanoma.store import open_store


def as_jpeg(image: np.ndarray, quality: int) -> bytes:
    out = io.BytesIO()
    PIL.Image.fromarray(image).save(out, "JPEG", quality=quality)
    return out.getvalue()


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def paired_images(source: Path) -> list[tuple[bytes, bytes]]:
    """(original, the mirror's copy) for each image of the full-resolution sample."""
    parts = [zipfile.ZipFile(source / f"HAM10000_images_part_{i}.zip") for i in (1, 2)]
    copies = {Path(n).name: (z, n) for z in parts for n in z.namelist() if n.endswith(".jpg")}
    sample = zipfile.ZipFile(source / "HAM10000_images_fullres_sample.zip")
    pairs = []
    for name in sorted(sample.namelist()):
        if Path(name).name in copies:
            archive, member = copies[Path(name).name]
            pairs.append((sample.read(name), archive.read(member)))
    return pairs


def measure_run(scorer, pairs, qualities: list[int], copy_quality: int) -> dict[str, tuple]:
    """Each way's (logit correlation, mean absolute logit gap, mean probability, share of
    images with the copy's decision at the run's operating threshold) against the copies'
    scores, for one run's scorer (``training.run_model.RunScorer``)."""
    from training.model import predict_scores  # TensorFlow: only once there is a run

    config, side = scorer.preprocess, scorer.parity.long_side
    if side is None:
        raise SystemExit(f"run {scorer.run_id} predates resolution parity")

    def model_input(data: bytes, parity: ResolutionParity) -> np.ndarray:
        return preprocess_image(data, config, check_image(data), parity=parity)

    def bicubic(data: bytes) -> np.ndarray:
        with PIL.Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            scale = side / max(width, height)
            size = (round(width * scale), round(height * scale))
            return np.asarray(image.convert("RGB").resize(size, PIL.Image.BICUBIC))

    ways: dict[str, Callable[[bytes], np.ndarray]] = {
        f"long side only (area shrink to {side} px)": lambda d: model_input(
            d, ResolutionParity(side)
        ),
        **{
            f"+ JPEG at quality {q}": lambda d, q=q: model_input(d, ResolutionParity(side, q))
            for q in qualities
        },
        f"Pillow bicubic + JPEG at {copy_quality}": lambda d: model_input(
            as_jpeg(bicubic(d), copy_quality), ResolutionParity(side)
        ),
    }

    def scores(inputs: list[np.ndarray]) -> np.ndarray:
        return predict_scores(scorer.model, np.stack(inputs), 64, scorer.tta_views)

    copied = scores([model_input(copy, scorer.parity) for _, copy in pairs])
    copy_scores, copy_decisions = logit(copied), copied >= scorer.threshold
    measured = {
        "the mirror's copies (what the run trained on)": (1.0, 0.0, float(copied.mean()), 1.0)
    }
    for way, make in ways.items():
        scored = scores([make(original) for original, _ in pairs])
        gap = logit(scored) - copy_scores
        correlation = float(np.corrcoef(logit(scored), copy_scores)[0, 1])
        agreement = float(np.mean((scored >= scorer.threshold) == copy_decisions))
        measured[way] = (correlation, float(np.abs(gap).mean()), float(scored.mean()), agreement)
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--run", action="append", required=True, help="a run key; repeat")
    parser.add_argument("--source", type=Path, default=Path("../shared/data/ham10000"))
    parser.add_argument("--qualities", type=int, nargs="+", default=[75, 95])
    args = parser.parse_args()

    from training.run_model import load_run_scorer  # TensorFlow: after the arguments

    pairs = paired_images(args.source)
    copy_quality = int(np.median([jpeg_quality(copy) for _, copy in pairs]))
    original_quality = int(np.median([jpeg_quality(original) for original, _ in pairs]))
    print(
        f"{len(pairs)} images; JPEG quality (median, estimated): copies {copy_quality}, "
        f"originals {original_quality}"
    )
    store = open_store(args.store, create=False)
    rows: dict[str, list[tuple]] = {}
    for key in args.run:
        measured = measure_run(
            load_run_scorer(Run(store, RunLayout(key))), pairs, args.qualities, copy_quality
        )
        for way, figures in measured.items():
            rows.setdefault(way, []).append(figures)

    print(
        "\n| the originals | logit correlation with the copies' (runs) "
        "| mean absolute logit gap (runs) | gap / long side only's | mean probability "
        "| the copy's decision (runs) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    # The baseline: the first way after the copies, the long side only.
    baseline = np.mean([figures[1] for figures in list(rows.values())[1]])
    for way, figures in rows.items():
        corr, gap, mean, agree = np.array(figures).T
        print(
            f"| {way} | {corr.mean():.3f} ({corr.min():.3f} to {corr.max():.3f}) "
            f"| {gap.mean():.3f} ({gap.min():.3f} to {gap.max():.3f}) "
            f"| {gap.mean() / baseline:.2f} | {mean.mean():.3f} "
            f"| {agree.mean():.1%} ({agree.min():.1%} to {agree.max():.1%}) |"
        )
    print("\nResearch use only, not a diagnostic device.")


if __name__ == "__main__":
    sys.exit(run_command("parity_fidelity.py", main))
