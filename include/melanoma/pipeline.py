"""The pipeline's first steps as plain functions: download, pretrained weights, split.

The DAG wraps each in an Airflow task; tests and the command line call them
directly. Nothing here imports Airflow.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from melanoma import sources
from melanoma.config import PipelineConfig
from melanoma.dataset_version import DatasetVersion
from melanoma.ham10000 import apply_label_task
from melanoma.ingest import ingest
from melanoma.pretrained import place_pretrained_weights
from melanoma.run import Run, RunConfig
from melanoma.splits import (
    check_every_image_placed,
    promotion_benchmark_lesions,
    split_by_lesion,
    split_holding_out_source,
    split_summary,
)
from melanoma.store import open_store, read_manifest
from melanoma.subgroups import METADATA_COLUMNS
from melanoma.tables import read_table

log = logging.getLogger(__name__)


def download_dataset(config: PipelineConfig) -> dict[str, Any]:
    """Fetch, validate and version HAM10000; return the version and its manifest key."""
    store = open_store(config.store_url)
    layout = sources.fetch(config.source, Path(config.cache_dir))
    result = ingest(
        layout, store, sources.describe(config.source), min_image_share=config.min_image_share
    )
    if not result.created:
        log.info("dataset version %s already exists: ingest was a no-op", result.dataset_version)
    counts = result.manifest["counts"]
    return {
        "dataset_version": result.dataset_version,
        "manifest_key": result.manifest_key,
        "created": result.created,
        "images": counts["images"],
        "quarantined": counts["quarantined"],
        "metadata_rows_without_image": result.manifest["validation"]["metadata_rows_without_image"],
    }


def store_pretrained_weights(config: PipelineConfig) -> str | None:
    """Place the backbone's ImageNet weights in the store; return their key (None for ``none``)."""
    record = place_pretrained_weights(
        open_store(config.store_url),
        config.backbone,
        config.pretrained_weights,
        Path(config.weights_dir or Path(config.cache_dir) / "weights"),
        config.pretrained_sha256 or None,
    )
    return record["key"] if record else None


def place_images(
    rows: pd.DataFrame, metadata: pd.DataFrame, config: PipelineConfig
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """(the split, the promotion benchmark's rows, the excluded image ids): every row of the
    label task in exactly one of them (SplitPlacementError otherwise)."""
    # The promotion benchmark is the dataset version's, whatever the label task or seed:
    # no run's split holds its lesions (melanoma.splits.promotion_benchmark_lesions).
    in_benchmark = rows["lesion_id"].isin(promotion_benchmark_lesions(metadata))
    benchmark, rest = rows[in_benchmark], rows[~in_benchmark]
    if config.holdout_source:
        split = split_holding_out_source(
            rest, config.holdout_source, config.split_ratios, config.seed
        )
    else:
        split = split_by_lesion(rest, config.split_ratios, config.seed)
    # Images of lesions shared with a held-out source: in no split, listed with why.
    excluded = rest.loc[~rest["image_id"].isin(split["image_id"]), "image_id"]
    check_every_image_placed(rows["image_id"], split, benchmark, excluded)
    return split, benchmark, excluded


def placement_summary(benchmark: pd.DataFrame, excluded: pd.Series) -> dict[str, Any]:
    """What ``splits_summary.json`` says of the images in no split."""
    return {
        # images of lesions shared with the held-out source, in no split
        "excluded_images": len(excluded),
        "excluded": [
            {"image_id": i, "reason": "its lesion has images in the held-out source"}
            for i in sorted(excluded)
        ],
        "promotion_benchmark": {
            "images": len(benchmark),
            "lesions": int(benchmark["lesion_id"].nunique()),
            "positives": int(benchmark["label"].sum()),
        },
    }


def write_split(
    run: Run,
    config: PipelineConfig,
    manifest_key: str,
    stages: dict[str, Any] | None = None,
    profile: dict[str, str] | None = None,
) -> str:
    """Stage split: the run's config and its lesion-grouped split; return the commit key.
    ``stages``: every stage's resolved configuration, and ``profile``, the hardware
    profile's name and why it was chosen, both recorded in ``config.json``."""
    if run.run_id is None:
        raise ValueError(f"{run}: writing a split needs the run id")
    run.check_owner(run.run_id)
    manifest = read_manifest(run.store, manifest_key)
    version = manifest["dataset_version"]
    metadata = read_table(DatasetVersion(manifest).read(run.store, "metadata.csv"))
    rows = apply_label_task(metadata, config.label_task)
    if rows.empty:
        raise ValueError(
            f"{run.store.url}/{manifest_key}: no image of dataset version {version} is in "
            f"label task {config.label_task}: nothing to split"
        )
    split, benchmark, excluded = place_images(rows, metadata, config)
    summary = split_summary(split)
    # The metadata travel with the split, so evaluation can measure per source, sex, age, site.
    metadata_columns = [c for c in METADATA_COLUMNS if c in split.columns]
    columns = ["image_id", "lesion_id", "dx", "label", "split", *metadata_columns]
    layout = run.layout
    with run.stage("split") as stage:
        stage.put_json(
            "config",
            layout.config,
            RunConfig(
                run.run_id, version, manifest_key, config.to_dict(), stages or {}, profile or {}
            ).to_json(),
        )
        stage.put_json(
            "splits_summary",
            layout.splits_summary,
            {
                "dataset_version": version,
                **_split_rule(config),
                **placement_summary(benchmark, excluded),
                "splits": summary,
            },
        )
        stage.put_bytes("splits", layout.splits, _csv(split[columns]))
        benchmark_rows = benchmark.sort_values("image_id")[columns[:4] + metadata_columns]
        stage.put_bytes("promotion_benchmark", layout.promotion_benchmark, _csv(benchmark_rows))
    for name, entry in summary.items():
        log.info("split %s: %s", name, {k: entry[k] for k in ("images", "lesions", "melanomas")})
    return layout.commit("split")


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, lineterminator="\n").encode()


def _split_rule(config: PipelineConfig) -> dict[str, Any]:
    """How the split was drawn, as ``splits_summary.json`` records it."""
    return {
        "label_task": config.label_task,
        "seed": config.seed,
        "ratios": list(config.split_ratios),
        "holdout_source": config.holdout_source or None,
    }
