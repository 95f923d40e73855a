"""The model ablation: today's configuration, each lever alone, then a combination, on real data.

    HAM10000_SOURCE=../shared/data/ham10000 MELANOMA_BACKBONE=mobilenet_v2 \\
    MELANOMA_PRETRAINED_WEIGHTS=../shared/data/weights/mobilenet_v2_1.0_224_no_top.weights.h5 \\
    .venv/bin/python benchmarks/ablation.py --seeds 42 7 [--levers today multiclass ...] \\
        [--holdout rosendahl] [--loso] [--held-out-only] [--base '{"phase2_epochs": 0}'] \\
        [--out ablation.md]

Each (lever, seed) is one full DAG run on the embedded stack (``melanoma-stack run``),
one at a time, in a store of its own (``.ablation-store``: no champion of yours changes).
The seed is the DAG's ``split_seed``, which seeds the split and the training. With
``--holdout``, each also runs again with ``holdout_source`` set: the unseen-clinic AUROC.
With ``--loso``, each also runs once per source of ``melanoma.loso.LOSO_SOURCES`` held out,
and the held-out test predictions are pooled into one leave-one-source-out AUROC
(same-source pairs only, lesion-bootstrap CI). ``--held-out-only`` runs only those, for a
lever whose own runs were measured before.

Printed and written as a Markdown table, one row per run: validation AUROC, test AUROC
with its lesion-bootstrap CI, the within-source test AUROC with its CI, the held-out
source's AUROC (with ``--loso``, each held-out source's), the pooled LOSO AUROC, the mean
test AUROC under acquisition shift (the robustness stage, with the clean AUROC of the same
images), and the DAG's wall time; then
each lever's mean over seeds of val, test, LOSO and shift AUROC, and its difference from
``today`` (the baseline, measured in the same invocation; none is shown without it).
Choose on the LOSO and acquisition-shift columns together (issue 27); the test column is
reported, not tuned on. The table is written after every run; a DAG run that fails is a row
saying so, the other runs go on, and the ablation exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from melanoma.artifacts import Metrics
from melanoma.cli import run_command
from melanoma.layout import RUNS, RunLayout
from melanoma.loso import LOSO_SOURCES, pooled_loso_auroc
from melanoma.run import Run
from melanoma.store import open_store

ROOT = Path(__file__).resolve().parents[1]

# The CPU configuration issue 17 started from: what "today" means. The former cpu profile
# is the `multiscale` lever on `{"phase2_epochs": 0}`, the current one `own_aspect_finetune`
# on that base. The settings the cpu profile has set since are pinned to what they were then.
TODAY = {
    "image_size": 224,
    "image_width": 0,
    "phase2_cached_views": 0,
    "phase2_schedule": "constant",
    "phase1_epochs": 40,
    "phase2_epochs": 3,
    "unfreeze_blocks": 4,
    "phase2_learning_rate": 1e-4,
}

# Issue 27, item 5: fine-tuning a CPU can afford. The top 4 blocks fine-tuned on the
# frozen trunk's cached output (4 flips/rotations per image), cosine-decayed.
CACHED_FINETUNE: dict[str, Any] = {
    "phase2_epochs": 6,
    "unfreeze_blocks": 4,
    "phase2_learning_rate": 1e-4,
    "phase2_cached_views": 4,
    "phase2_schedule": "cosine",
}
# Issue 27, item 5: HAM10000's own 4:3 aspect and resolution (its 200x150 images as they
# are, not stretched to 224x224).
OWN_ASPECT: dict[str, Any] = {"image_size": 150, "image_width": 200}

# Each lever alone, as DAG params on top of the base.
LEVERS: dict[str, dict[str, Any]] = {
    "today": {},
    "multiclass": {"head": "multiclass"},
    "tta4": {"tta_views": 4},
    "color_constancy": {"color_constancy": True},
    "schedule": {"phase2_schedule": "cosine", "label_smoothing": 0.1},
    "metadata": {"metadata_fusion": True},
    "multiscale": {"multiscale_features": True},
    "cached_finetune": CACHED_FINETUNE,
    "own_aspect": OWN_ASPECT,
    "own_aspect_finetune": {**OWN_ASPECT, **CACHED_FINETUNE},
    # The same, with 2 acquisition-shift copies: phase 1's features of them, and a share
    # 2/3 of each cached phase-2 view shown under a random acquisition shift.
    "own_aspect_finetune_acquisition": {**OWN_ASPECT, **CACHED_FINETUNE, "acquisition_views": 2},
    # The head on mid-level features: MobileNetV2 cut at block 13 (with multiscale
    # features, blocks 6 and 13 pooled), at HAM10000's own aspect; phase 1 only with the
    # base the results' commands give (phase2_epochs 0).
    "mid_level": {**OWN_ASPECT, "feature_depth": "mid"},
    # The same, then its top 4 blocks fine-tuned as `own_aspect_finetune` does: 10 to 12, and
    # of block 13 only its expansion, where the cut is.
    "mid_level_finetune": {**OWN_ASPECT, "feature_depth": "mid", **CACHED_FINETUNE},
    "combination": {
        "head": "multiclass",
        "tta_views": 4,
        "color_constancy": True,
        "phase2_schedule": "cosine",
        "label_smoothing": 0.1,
    },
}


def run_keys(store) -> set[str]:
    return {o.key.split("/")[1] for o in store.list(f"{RUNS}/")}


def run_dag(store_url: str, conf: dict[str, Any]) -> tuple[Run, float]:
    """One DAG run with ``conf``; the run it wrote and its wall time (seconds)."""
    store = open_store(store_url)
    before = run_keys(store)
    started = time.monotonic()
    subprocess.run(
        [str(Path(sys.executable).parent / "melanoma-stack"), "run", "--conf", json.dumps(conf)],
        env={**os.environ, "MELANOMA_STORE_URL": store_url},
        cwd=ROOT,
        check=True,
    )
    seconds = time.monotonic() - started
    (key,) = run_keys(store) - before
    return Run(store, RunLayout(key)), seconds


def measure(run: Run) -> dict[str, Any]:
    metrics = run.read_json(Metrics.stage, Metrics.artifact)
    summary = run.read_json("train", "history")["summary"]
    within = metrics.get("source_confounding", {}).get("within_source_auroc")
    robustness = run.read_json("robustness", "robustness") if run.committed("robustness") else None
    return {
        "val_auroc": summary["val_auroc_final"],
        # Metadata fusion only: what images without metadata (external sets) can expect.
        "val_without_metadata": summary.get("val_auroc_without_metadata"),
        "test_auroc": metrics["threshold_free"]["auroc"],
        "within_source": within,
        "shift_mean": robustness["mean_auroc"] if robustness else None,
        "shift_clean": robustness["clean_auroc"]["value"] if robustness else None,
    }


def ci(entry: dict[str, float] | None) -> str:
    if not entry:
        return "n/a"
    return f"{entry['value']:.3f} ({entry['ci_low']:.3f}-{entry['ci_high']:.3f})"


def without(row: dict[str, Any]) -> str:
    value = row["val_without_metadata"]
    return "" if value is None else f" ({value:.3f})"


def shift(row: dict[str, Any]) -> str:
    if row["shift_mean"] is None:
        return "n/a"
    return f"{row['shift_mean']:.3f} ({row['shift_clean']:.3f})"


def mean_of(rows: list[dict[str, Any]], value) -> float | None:
    """The mean over seeds; None when a run did not measure it (LOSO without --loso)."""
    values = [value(r) for r in rows]
    return float(np.mean(values)) if values and None not in values else None


def mean_cell(mean: float | None, today: float | None) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.3f} ({mean - today:+.3f})" if today is not None else f"{mean:.3f}"


# What a lever's own run measures (``measure``): None with ``--held-out-only``.
NOT_RUN = ("val_auroc", "val_without_metadata", "test_auroc", "within_source", "shift_mean")


def measure_lever(args: argparse.Namespace, conf: dict[str, Any]) -> dict[str, Any]:
    """One lever on one seed: its DAG run, and its hold-out or LOSO runs when asked for."""
    # The hold-out runs only give their held-out AUROC: the yardstick's minutes go to the
    # lever's own run.
    held_out_conf = {**conf, "robustness_images": 0}
    if args.held_out_only:  # the lever's own run was measured before
        row: dict[str, Any] = dict.fromkeys(NOT_RUN) | {"seconds": None}
    else:
        run, seconds = run_dag(args.store, conf)
        row = measure(run) | {"seconds": seconds}
    row |= {"holdout": None, "loso": None, "by_source": {}}
    if args.holdout:
        held, _ = run_dag(args.store, {**held_out_conf, "holdout_source": args.holdout})
        row["holdout"] = measure(held)["test_auroc"]
    if args.loso:
        held_out = {
            source: run_dag(args.store, {**held_out_conf, "holdout_source": source})[0]
            for source in LOSO_SOURCES
        }
        row["loso"] = pooled_loso_auroc(
            {source: held.predictions("test") for source, held in held_out.items()}
        )
        row["by_source"] = {
            source: measure(held)["test_auroc"]["value"] for source, held in held_out.items()
        }
    return row


def table_line(lever: str, seed: int, row: dict[str, Any]) -> str:
    if "failed" in row:
        return f"| {lever} | {seed} | {row['failed']} |" + " |" * 6
    held_out = ci(row["holdout"])
    if row["by_source"]:  # LOSO: each held-out source's AUROC
        held_out = " / ".join(f"{s} {v:.3f}" for s, v in row["by_source"].items())
    val = "n/a" if row["val_auroc"] is None else f"{row['val_auroc']:.3f}{without(row)}"
    seconds = "n/a" if row["seconds"] is None else f"{row['seconds'] / 60:.1f} min"
    return (
        f"| {lever} | {seed} | {val} | {ci(row['test_auroc'])} | {ci(row['within_source'])} | "
        f"{held_out} | {ci(row['loso'])} | {shift(row)} | {seconds} |"
    )


# Each lever's mean over seeds, per yardstick.
MEAN_COLUMNS = {
    "val AUROC": lambda r: r["val_auroc"],
    "test AUROC": lambda r: r["test_auroc"]["value"] if r["test_auroc"] else None,
    "LOSO AUROC": lambda r: r["loso"]["value"] if r["loso"] else None,
    "AUROC under shift": lambda r: r["shift_mean"],
}


def means_table(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Each lever's means over its measured seeds, and their differences from ``today``."""
    lines = ["| lever | " + " | ".join(f"mean {c} (vs today)" for c in MEAN_COLUMNS) + " |"]
    lines.append("|" + " --- |" * (len(MEAN_COLUMNS) + 1))
    means = {
        lever: {
            c: mean_of([r for r in rows if "failed" not in r], v) for c, v in MEAN_COLUMNS.items()
        }
        for lever, rows in results.items()
    }
    # Without ``today`` in the invocation there is nothing measured to compare with.
    today = means.get("today")
    for lever, mean in means.items():
        cells = [mean_cell(mean[c], today[c] if today else None) for c in MEAN_COLUMNS]
        lines.append(f"| {lever} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 7])
    parser.add_argument("--holdout", default="", help="a source to hold out, e.g. rosendahl")
    parser.add_argument(
        "--loso", action="store_true", help=f"leave each of {LOSO_SOURCES} out in turn, pooled"
    )
    parser.add_argument(
        "--held-out-only",
        action="store_true",
        help="only the --holdout or --loso runs, not the lever's own (measured before)",
    )
    parser.add_argument("--base", default="{}", help="DAG params on top of today's, as JSON")
    parser.add_argument("--store", default=(ROOT / ".ablation-store").as_uri())
    parser.add_argument("--out", default=str(ROOT / "ablation.md"))  # git-ignored
    args = parser.parse_args()
    try:
        given = json.loads(args.base)
    except json.JSONDecodeError as error:
        raise ValueError(f"--base is not JSON: {error}") from None
    if not isinstance(given, dict):
        raise ValueError("--base is not a JSON object of settings")
    base = {**TODAY, **given}
    header = "| lever | seed | val AUROC (without metadata) | test AUROC (95% CI) | "
    header += "within-source test AUROC | "
    header += f"{args.holdout or 'held-out source(s)'} AUROC | LOSO AUROC | "
    header += "mean AUROC under shift (clean) | DAG wall time |"
    lines = [f"Base: `{json.dumps(base)}`", "", header, "|" + " --- |" * 9]
    results: dict[str, list[dict[str, Any]]] = {}
    for lever in args.levers:
        for seed in args.seeds:
            try:
                row = measure_lever(args, {**base, **LEVERS[lever], "split_seed": seed})
            except subprocess.CalledProcessError as failed:
                # The other runs still count: the table says which DAG failed.
                row = {"failed": f"a DAG run failed (exit {failed.returncode})"}
            results.setdefault(lever, []).append(row)
            lines.append(table_line(lever, seed, row))
            print(lines[-1], flush=True)
            # Written after every run, so that an interrupted ablation keeps what it measured.
            Path(args.out).write_text("\n".join(lines) + "\n")
    summary = means_table(results)
    Path(args.out).write_text("\n".join([*lines, "", *summary]) + "\n")
    print("\n".join(summary))
    print(f"written to {args.out}")
    if any("failed" in row for rows in results.values() for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(run_command("ablation.py", main))
