"""The run's JSON artifacts that other stages read, as small frozen records.

Each record knows its JSON: ``from_json`` takes what the store holds (every read still
goes through the stage's commit record, :meth:`melanoma.run.Run.read_json`), ``to_json``
gives what its stage writes, with the research-use notice. Readers use the record's
fields and helpers, never a string spelled at the call site: ``run.calibration()
.threshold("youden")``, not ``run.read_json("calibrate", "calibration")["thresholds"]
["youden"]["threshold"]``. Nested parts (per-threshold metrics, bootstrap intervals)
stay dictionaries: their schema is the stage's (``melanoma.evaluation``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from melanoma import RESEARCH_NOTICE


@dataclass(frozen=True)
class JsonRecord:
    """A record of a JSON object: its fields are the object's keys (``notice`` aside)."""

    stage: ClassVar[str]
    artifact: ClassVar[str]

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> Self:
        """The record of ``payload``; ValueError naming the fields it lacks."""
        fields = dataclasses.fields(cls)
        required = {
            f.name
            for f in fields
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        if missing := sorted(required - set(payload)):
            raise ValueError(f"{cls.artifact}.json of stage {cls.stage} lacks {missing}")
        names = {f.name for f in fields}
        return cls(**{key: value for key, value in payload.items() if key in names})

    def to_json(self) -> dict[str, Any]:
        return {
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
            "notice": RESEARCH_NOTICE,
        }


@dataclass(frozen=True)
class Calibration(JsonRecord):
    """``calibration.json``: thresholds and the probability calibration, fitted on validation."""

    stage: ClassVar[str] = "calibrate"
    artifact: ClassVar[str] = "calibration"

    thresholds: dict[str, dict[str, Any]]  # operating point -> threshold, validation metrics
    probability_calibration: dict[str, Any]
    fitted_on: str = "val"
    validation: dict[str, int] = dataclasses.field(default_factory=dict)  # images, positives
    config: dict[str, Any] = dataclasses.field(default_factory=dict)  # its EvaluationConfig

    def threshold(self, operating_point: str) -> float:
        return float(self.thresholds[operating_point]["threshold"])

    @property
    def operating_thresholds(self) -> dict[str, float]:
        return {name: float(entry["threshold"]) for name, entry in self.thresholds.items()}


@dataclass(frozen=True)
class TrainingRecord(JsonRecord):
    """``model/training_config.json``: the configuration the model was trained with."""

    stage: ClassVar[str] = "train"
    artifact: ClassVar[str] = "training_config"

    config: dict[str, Any]  # the TrainConfig
    feature_cache: Any = None
    device: str | None = None
    weights_key: str | None = None
    train_images: int | None = None
    train_positives: int | None = None
    class_weight: Any = None

    @property
    def backbone(self) -> str:
        return str(self.config["backbone"])

    @property
    def tta_views(self) -> int:
        return int(self.config.get("tta_views", 1))


@dataclass(frozen=True)
class Metrics(JsonRecord):
    """``evaluation/metrics.json``: every test figure (schema: ``melanoma.evaluation``)."""

    stage: ClassVar[str] = "evaluate"
    artifact: ClassVar[str] = "metrics"

    label_task: str
    counts: dict[str, Any]
    bootstrap: dict[str, Any]  # replicates, seed, confidence
    threshold_free: dict[str, Any]
    operating_points: dict[str, Any]
    probability_calibration: dict[str, Any]
    run_id: str | None = None
    schema_version: int | None = None
    dataset_version: str | None = None
    split: str | None = None
    holdout_source: str | None = None
    figures: dict[str, Any] | None = None
    subgroups: dict[str, Any] | None = None
    source_confounding: dict[str, Any] | None = None
    test_fingerprint: str | None = None

    @property
    def auroc(self) -> dict[str, Any]:
        """Test AUROC: value, and its interval (low, high)."""
        return self.threshold_free["auroc"]


@dataclass(frozen=True)
class PromotionDecision(JsonRecord):
    """``promotion.json``: whether the run became its label task's champion, and why."""

    stage: ClassVar[str] = "promote"
    artifact: ClassVar[str] = "promotion"

    promote: bool
    reasons: list[str]
    candidate: dict[str, Any]
    champion: dict[str, Any] | None = None
    comparison: dict[str, Any] | None = None
    policy: dict[str, Any] | None = None


@dataclass(frozen=True)
class ExternalMetrics(JsonRecord):
    """``external/<set>/metrics.json``: the run's model on an external labelled set
    (stage ``external/<set>``: its name is the set's, so ``stage`` is per set)."""

    stage: ClassVar[str] = "external"  # the prefix: the stage is external/<set>
    artifact: ClassVar[str] = "metrics"

    # What every reader needs of a set, old or new; the rest is optional for older sets.
    threshold_free: dict[str, Any]
    # What identifies the set: its paths, sha256s and image count.
    source: dict[str, Any] = dataclasses.field(default_factory=dict)
    counts: dict[str, Any] = dataclasses.field(default_factory=dict)
    external_set: str | None = None
    label_task: str | None = None
    bootstrap: dict[str, Any] | None = None
    operating_points: dict[str, Any] | None = None
    probability_calibration: dict[str, Any] | None = None
    run_id: str | None = None
    schema_version: int | None = None
    labels_format: str | None = None
    thresholds_chosen_on: str | None = None
    resolution_parity: dict[str, Any] | None = None
    not_scored: dict[str, int] | None = None
    ood_flagged_share: float | None = None
    differences: dict[str, Any] | None = None
    figures: dict[str, str] | None = None

    @staticmethod
    def stage_of(name: str) -> str:
        return f"{ExternalMetrics.stage}/{name}"

    @property
    def auroc(self) -> dict[str, Any]:
        return self.threshold_free["auroc"]
