"""The typed, frozen configurations of the pipeline and its TensorFlow stages.

``PipelineConfig``: defaults in code, overridden by the environment, then by DAG params;
serialised into the run's ``config.json`` so a run can be reproduced. ``TrainConfig`` and
``ExplainConfig`` live here, not beside TensorFlow, so that the DAG can build them
(``melanoma.params.from_params``) without importing it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from melanoma.images import PreprocessConfig


def check_settings(config: Any) -> None:
    """Refuse a field outside the bounds or choices its setting declares
    (``melanoma.settings``, which imports this module: hence the late import)."""
    from melanoma.settings import check_config

    check_config(config)


class CheckedSettings:
    """A stage configuration whose fields are checked, when it is made, against the bounds
    and choices their settings declare; one with more checks calls check_settings after them."""

    def __post_init__(self) -> None:
        check_settings(self)


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
class PipelineConfig(CheckedSettings):
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
    # Ingest fails when fewer of the metadata rows than this have a readable image (an
    # archive whose image zips are empty or cut short must not become a dataset version).
    min_image_share: float = 0.9
    # A source (HAM10000's `dataset` column) to test on alone, trained and validated
    # without it: the "unseen clinic" estimate. Empty: the usual split of all sources.
    holdout_source: str = ""
    # The hardware profile (melanoma.profiles): auto until the split resolves it to cpu or gpu.
    profile: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ratios = tuple(float(r) for r in self.split_ratios)
        if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1) > 1e-6:
            raise ValueError(
                f"split_ratios must be three non-negative numbers summing to 1, got {self.split_ratios}"
            )
        object.__setattr__(self, "split_ratios", ratios)
        check_settings(self)

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


IMBALANCE_STRATEGIES = ("class_weight", "oversample", "undersample", "focal", "none")
HEADS = ("binary", "multiclass")
SCHEDULES = ("constant", "cosine")
# Where the head reads the backbone: its last layer, or a mid-level one (melanoma.backbones).
FEATURE_DEPTHS = ("last", "mid")
# Keras dtype policies training may run under; auto: mixed_float16 on a GPU, float32 on a CPU.
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


@dataclass(frozen=True)
class TrainConfig(CheckedSettings):
    backbone: str = "resnet50"
    batch_size: int = 32
    phase1_epochs: int = 10
    phase2_epochs: int = 20
    unfreeze_blocks: int = 3
    phase1_learning_rate: float = 1e-4
    phase2_learning_rate: float = 1e-5
    patience: int = 10
    # class_weight: weights below; oversample: preprocessing's augmented copies;
    # undersample: balanced batches from the majority class; focal: focal loss.
    imbalance: str = "class_weight"
    class_weight: str = "balanced"  # or "w0,w1", e.g. the reference study's "0.5,28.5"
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25
    online_augmentation: bool = True
    feature_cache: str = "auto"  # auto: on for CPU, off for GPU
    precision: str = "auto"  # one of PRECISIONS
    # binary: one sigmoid for the label task; multiclass: a softmax over HAM10000's seven
    # diagnoses, the task's score being the sum of its positive classes' probabilities.
    head: str = "binary"
    # Flips/90° rotations averaged when scoring (validation, test, external, predict).
    tta_views: int = 1
    phase2_schedule: str = "constant"  # or cosine: decays to 0 over phase 2's epochs
    # Phase 2 on the frozen trunk's output, computed once per image and per each of this
    # many flips/rotations and cached; 0: the whole model on online-augmented images.
    phase2_cached_views: int = 0
    # Extra copies of each training image, each under one random acquisition shift
    # (melanoma.shifts): cached phase 1 extracts their features too; the online
    # augmentation shifts a share views/(views+1) of its images. 0: off.
    acquisition_views: int = 0
    label_smoothing: float = 0.0
    # Age, sex and body site joined to the image features; each training sample's
    # metadata is dropped with probability metadata_dropout, so images without it score too.
    metadata_fusion: bool = False
    metadata_dropout: float = 0.3
    # The pooled maps of earlier backbone layers join the pooled layer's (finer texture).
    multiscale_features: bool = False
    # last: the head pools the backbone's last layer. mid: the backbone is cut at its
    # mid_layer (MobileNetV2: block 13); level with the cpu profile on LOSO (docs/results.md).
    feature_depth: str = "last"
    seed: int = 42

    def __post_init__(self) -> None:
        if self.head == "multiclass" and self.imbalance not in ("class_weight", "none"):
            raise ValueError(
                f"the multiclass head takes imbalance class_weight or none, not {self.imbalance!r}"
            )
        if self.feature_cache not in ("auto", "on", "off"):
            raise ValueError(f"feature_cache {self.feature_cache!r} not in auto/on/off")
        if self.class_weight != "balanced":
            parse_class_weight(self.class_weight)
        check_settings(self)


def parse_class_weight(text: str) -> tuple[float, float]:
    try:
        w0, w1 = (float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(
            f"class_weight must be 'balanced' or 'w0,w1' (e.g. 0.5,28.5), got {text!r}"
        ) from None
    return w0, w1


CAM_METHODS = ("gradcam", "gradcam++")
OPERATING_POINTS = ("target_sensitivity", "youden", "max_f1")
PROBABILITY_CALIBRATIONS = ("none", "platt", "isotonic")


@dataclass(frozen=True)
class ExplainConfig(CheckedSettings):
    per_outcome: int = 4  # most confident TP, FP, FN, TN each
    random_count: int = 8  # plus a seeded random sample of the other test images
    operating_point: str = "target_sensitivity"
    seed: int = 42
    batch_size: int = 16
    method: str = "gradcam"  # or "gradcam++"


@dataclass(frozen=True)
class RobustnessConfig(CheckedSettings):
    """The robustness section: a sample of the test split re-rendered under each acquisition
    shift (``melanoma.shifts``) at ``strengths``; ``images`` 0 turns it off."""

    images: int = 500  # test images sampled, whole lesions, the test prevalence kept
    strengths: tuple[float, ...] = (0.4, 0.8)
    seed: int = 42
    batch_size: int = 64


@dataclass(frozen=True)
class PreprocessParams(CheckedSettings):
    """The preprocessing job: the per-image ``config``, and how the job is planned."""

    config: PreprocessConfig = field(default_factory=PreprocessConfig)
    # Augmented copies of each minority-class training image, made by the job.
    augment_copies: int = 2
    seed: int = 42


@dataclass(frozen=True)
class ExternalSetParams(CheckedSettings):
    """Where the external validation task finds its set."""

    cache_dir: Path
    images: str = "isic2018"  # isic2018, or a folder or zip on the workers
    labels: str | None = None
    name: str | None = None
