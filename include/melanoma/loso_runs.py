"""The leave-one-source-out runs in a store: which runs are one configuration's full run
and hold-outs, and what they scored.

``benchmarks/ablation.py --loso`` leaves, for each configuration, a run on every source and
one run per source of ``melanoma.loso.LOSO_SOURCES`` held out. The benchmarks that re-read
them (``unseen_clinic.py``, ``loso_ensemble.py``) find them here. Runs are of one
configuration when their dataset version and every resolved setting of the split,
preprocessing and training stages agree, but ``holdout_source`` and where things are.
Research use only, not a diagnostic device.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

import pandas as pd

from melanoma.layout import RunLayout
from melanoma.loso import LOSO_SOURCES
from melanoma.run import Run
from melanoma.runs_index import RunSummary
from melanoma.store import ObjectStore

# The stages whose settings decide what a run learns from what, and the settings in them
# that say only where things are (or, holdout_source, what tells the hold-out runs apart).
MODEL_STAGES = ("pipeline", "preprocess", "train")
NOT_THE_MODEL = frozenset({"holdout_source", "store_url", "cache_dir", "source", "weights_dir"})


def configuration(run: RunSummary) -> str:
    """What a run and its hold-out runs share, as one comparable string: the dataset
    version and the resolved settings of the split, preprocessing and training stages."""
    stages = {
        stage: {k: v for k, v in run.resolved.get(stage, {}).items() if k not in NOT_THE_MODEL}
        for stage in MODEL_STAGES
    }
    return json.dumps([run.dataset_version, stages], sort_keys=True, default=str)


def loso_families(runs: Iterable[RunSummary]) -> list[tuple[RunSummary, dict[str, RunSummary]]]:
    """Each configuration's full run and its hold-out runs by source (the newest of each;
    ``runs`` newest first, as ``index_runs`` lists them), for the configurations that have
    both; complete runs only."""
    full: dict[str, RunSummary] = {}
    held: dict[str, dict[str, RunSummary]] = {}
    for run in runs:
        if not run.complete:
            continue
        family = configuration(run)
        if not run.holdout_source:
            full.setdefault(family, run)
        elif run.holdout_source in LOSO_SOURCES:
            held.setdefault(family, {}).setdefault(run.holdout_source, run)
    return [(full[family], dict(sorted(held[family].items()))) for family in full if family in held]


def split_seed(run: RunSummary) -> object:
    """The split seed the run resolved (None for a run that recorded none)."""
    return run.resolved.get("pipeline", {}).get("seed")


def configuration_settings(run: RunSummary) -> list[str]:
    """A run's settings that differ from its profile's defaults, as ``name=value``, but
    the split seed and the held-out source (what tells a configuration's runs apart)."""
    return [f"{n}={v}" for n, v in run.changed if n not in ("split_seed", "holdout_source")]


def sourced_test_predictions(store: ObjectStore, run: RunSummary) -> pd.DataFrame:
    """A run's test predictions, each image with its source (the split's ``dataset``); a
    scored image that its split does not hold is refused, naming the run and the image."""
    stored = Run(store, RunLayout(run.key))
    splits = stored.splits()
    if "dataset" not in splits.columns:
        raise ValueError(f"run {run.key}: its split records no sources (no dataset column)")
    sources = splits[["image_id", "dataset"]].rename(columns={"dataset": "source"})
    predictions = stored.predictions("test").merge(sources, on="image_id", how="left")
    unsplit = predictions["image_id"][predictions["source"].isna()]
    if len(unsplit):
        raise ValueError(f"run {run.key}: test image {unsplit.iloc[0]} is not in its split")
    return predictions


def held_out_predictions(
    store: ObjectStore, held_out: Mapping[str, RunSummary]
) -> dict[str, pd.DataFrame]:
    """Each hold-out run's test predictions (its whole held-out source), by source."""
    return {
        source: Run(store, RunLayout(run.key)).predictions("test")
        for source, run in held_out.items()
    }
