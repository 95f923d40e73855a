"""The pipeline configuration: defaults in code, overridden by environment, then by DAG params.

One frozen object, serialised into ``runs/<run_id>/config.json`` so a run can be reproduced.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any

from melanoma.ham10000 import LABEL_TASKS

# Backbones the training code declares (training.model.BACKBONES); listed here so that
# the DAG's trigger form does not import TensorFlow. tiny_cnn is for tests and smoke runs.
BACKBONE_NAMES: tuple[str, ...] = ("resnet50", "mobilenet_v2", "tiny_cnn")

# Environment variable for each field that the environment may set.
ENVIRONMENT: dict[str, str] = {
    "store_url": "MELANOMA_STORE_URL",
    "source": "HAM10000_SOURCE",
    "cache_dir": "MELANOMA_CACHE_DIR",
    "backbone": "MELANOMA_BACKBONE",
    "pretrained_weights": "MELANOMA_PRETRAINED_WEIGHTS",
    "pretrained_sha256": "MELANOMA_PRETRAINED_SHA256",
    "weights_dir": "MELANOMA_WEIGHTS_DIR",
}


@dataclass(frozen=True)
class PipelineConfig:
    store_url: str = "file:///tmp/melanoma-store"
    # dataverse | dataverse:<url> | http(s)://mirror/ | /local/dir (see melanoma.sources)
    source: str = "dataverse"
    cache_dir: str = "/tmp/melanoma-cache"
    label_task: str = "mel_vs_rest"
    split_ratios: tuple[float, float, float] = (0.70, 0.15, 0.15)
    seed: int = 42
    backbone: str = "resnet50"
    # keras | none | /path/to/file | https://url (see melanoma.pretrained)
    pretrained_weights: str = "keras"
    pretrained_sha256: str = ""
    # Where `keras` weights are fetched to (and found, pre-fetched, in the Airflow image);
    # empty: <cache_dir>/weights.
    weights_dir: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.label_task not in LABEL_TASKS:
            raise ValueError(f"label_task {self.label_task!r} is not one of {sorted(LABEL_TASKS)}")
        ratios = tuple(float(r) for r in self.split_ratios)
        if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1) > 1e-6:
            raise ValueError(
                f"split_ratios must be three non-negative numbers summing to 1, got {self.split_ratios}"
            )
        object.__setattr__(self, "split_ratios", ratios)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> PipelineConfig:
        """Defaults, then the environment, then ``overrides`` (DAG params); None overrides are ignored."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {f: env[v] for f, v in ENVIRONMENT.items() if env.get(v)}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(overrides) - names
        if unknown:
            raise ValueError(f"unknown configuration field(s) {sorted(unknown)}")
        values.update({k: v for k, v in overrides.items() if v is not None and v != ""})
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def safe_run_id(run_id: str) -> str:
    """An Airflow run id (``manual__2026-01-01T00:00:00+00:00``) as an object-key segment."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._")
    if not cleaned:
        raise ValueError(f"run id {run_id!r} has no usable characters")
    return cleaned
