"""Two to four runs side by side: configurations, metrics, paired differences, curves.

What the runs page's compare view shows, computed from each run's committed artifacts:
their resolved configurations (``config.json``) with the differences marked, the paired
AUROC difference on every image set they share (the same test split, promotion benchmark
or external set), and ROC and precision-recall curves from their stored predictions.
Knows nothing of Airflow or HTML. Research use only, not a diagnostic device.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve

from melanoma.layout import RunLayout
from melanoma.metrics import paired_auroc_difference
from melanoma.run import Run
from melanoma.runs_index import RunSummary
from melanoma.store import ObjectStore

MAX_COMPARED = 4
# The paired bootstrap of a comparison on the page: fixed, so a page reloads the same.
BOOTSTRAP_REPLICATES = 1000
BOOTSTRAP_SEED = 42
CONFIDENCE = 0.95
CURVE_POINTS = 200  # each curve is thinned to about this many points for drawing


def check_compared(keys: Sequence[str]) -> list[str]:
    """The run keys to compare, in order, without repeats; ValueError unless 2 to 4."""
    unique = list(dict.fromkeys(keys))
    if not 2 <= len(unique) <= MAX_COMPARED:
        raise ValueError(f"tick 2 to {MAX_COMPARED} runs to compare (got {len(unique)})")
    return unique


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested configuration as ``{"train.phase2_epochs": 0, ...}`` (lists stay values)."""
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for name, item in value.items():
            flat |= flatten(item, f"{prefix}{name}.")
        return flat
    return {prefix.rstrip("."): value}


@dataclass(frozen=True)
class ConfigRow:
    name: str  # dotted: train.phase2_epochs
    values: tuple[Any, ...]  # one per run; None where a run does not record it

    @property
    def differs(self) -> bool:
        """Whether the runs that recorded it disagree (a run from before a setting existed
        records nothing: that is not a difference)."""
        return len({repr(v) for v in self.values if v is not None}) > 1


def config_rows(runs: Sequence[RunSummary]) -> list[ConfigRow]:
    """Every setting any of the runs recorded, differing ones first, then by name."""
    flats = [
        {"dataset_version": r.dataset_version, "profile": r.profile} | flatten(r.resolved)
        for r in runs
    ]
    names = sorted({name for flat in flats for name in flat})
    rows = [ConfigRow(name, tuple(flat.get(name) for flat in flats)) for name in names]
    return sorted(rows, key=lambda row: not row.differs)


@dataclass(frozen=True)
class PairedDifference:
    """AUROC of ``run`` minus that of ``reference`` on the images both were scored on."""

    image_set: str  # "test", "promotion benchmark", "external <name>"
    run: str  # run key
    reference: str  # run key
    images: int
    positives: int
    difference: Mapping[str, float]  # value, ci_low, ci_high


# Each image set two runs may share: its name, and how to read a run's scores on it
# (columns image_id, lesion_id, label, score), None where the run has none.
ScoreReader = Callable[[Run], pd.DataFrame | None]


def _test_scores(run: Run) -> pd.DataFrame | None:
    if not run.committed("train"):
        return None
    return run.predictions("test").rename(columns={"probability": "score"})


def _benchmark_scores(run: Run) -> pd.DataFrame | None:
    if (
        not run.committed("promote")
        or "promotion_scores" not in run.commit_record("promote")["artifacts"]
    ):
        return None
    return run.read_csv("promote", "promotion_scores").rename(columns={"candidate": "score"})


def _external_scores(name: str) -> ScoreReader:
    def read(run: Run) -> pd.DataFrame | None:
        stage = f"external/{name}"
        if not run.committed(stage) or "predictions" not in run.commit_record(stage)["artifacts"]:
            return None
        scored = run.read_csv(stage, "predictions").rename(columns={"probability": "score"})
        if "lesion_id" not in scored:  # an external set without lesion ids: each image its own
            scored["lesion_id"] = scored["image_id"]
        return scored

    return read


def _by_image(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    return None if frame is None else frame.sort_values("image_id").reset_index(drop=True)


def _same_images(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Whether two runs were scored on the very same images, with the same labels."""
    return a[["image_id", "label"]].equals(b[["image_id", "label"]])


def paired_differences(store: ObjectStore, runs: Sequence[RunSummary]) -> list[PairedDifference]:
    """Each run against the first, on every image set both were scored on: the paired
    lesion-bootstrap AUROC difference (``BOOTSTRAP_REPLICATES``). Two runs on different
    test splits are not compared on test, and so on: a difference is only made where it
    is fair."""
    opened = [Run(store, RunLayout(r.key)) for r in runs]
    externals = sorted({name for r in runs for name in r.external_auroc})
    readers: list[tuple[str, ScoreReader]] = [
        ("test", _test_scores),
        ("promotion benchmark", _benchmark_scores),
        *((f"external {name}", _external_scores(name)) for name in externals),
    ]
    differences = []
    for image_set, reader in readers:
        reference = _by_image(reader(opened[0]))
        if reference is None:
            continue
        for summary, run in zip(runs[1:], opened[1:], strict=True):
            other = _by_image(reader(run))
            if other is None or not _same_images(reference, other):
                continue
            difference = paired_auroc_difference(
                reference["label"].to_numpy(),
                other["score"].to_numpy(),
                reference["score"].to_numpy(),
                reference["lesion_id"].astype(str).to_numpy(),
                BOOTSTRAP_REPLICATES,
                BOOTSTRAP_SEED,
                CONFIDENCE,
            )
            differences.append(
                PairedDifference(
                    image_set,
                    summary.key,
                    runs[0].key,
                    len(reference),
                    int(reference["label"].sum()),
                    difference,
                )
            )
    return differences


@dataclass(frozen=True)
class Curves:
    """A run's ROC and precision-recall curves on its test split, thinned for drawing."""

    run: str  # run key
    roc: tuple[tuple[float, float], ...]  # (false positive rate, true positive rate)
    pr: tuple[tuple[float, float], ...]  # (recall, precision)


def _thin(points: np.ndarray) -> tuple[tuple[float, float], ...]:
    if len(points) > CURVE_POINTS:
        keep = np.unique(np.linspace(0, len(points) - 1, CURVE_POINTS).round().astype(int))
        points = points[keep]
    return tuple((round(float(x), 5), round(float(y), 5)) for x, y in points)


def curves_on_test(store: ObjectStore, runs: Sequence[RunSummary]) -> list[Curves]:
    """Each run's test ROC and PR curves from ``predictions/test.csv`` (runs not yet
    trained, or with one class only, have none)."""
    curves = []
    for summary in runs:
        scores = _test_scores(Run(store, RunLayout(summary.key)))
        if scores is None or scores["label"].nunique() < 2:
            continue
        fpr, tpr, _ = roc_curve(scores["label"], scores["score"])
        precision, recall, _ = precision_recall_curve(scores["label"], scores["score"])
        curves.append(
            Curves(
                summary.key,
                _thin(np.column_stack([fpr, tpr])),
                _thin(np.column_stack([recall, precision])[::-1]),
            )
        )
    return curves
