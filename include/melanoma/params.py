"""The DAG's params, mapped to each stage's typed configuration in one place.

``from_params(params)`` is all the DAG knows about configuration: each task takes its
stage's config from the result. Imports stay free of TensorFlow and Spark, so the
scheduler can parse the DAG cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from melanoma.config import ExplainConfig, PipelineConfig, RobustnessConfig, TrainConfig
from melanoma.evaluation import EvaluationConfig
from melanoma.images import PreprocessConfig
from melanoma.promotion import PromotionPolicy


@dataclass(frozen=True)
class ExternalSetParams:
    images: str  # isic2018, or a local folder or zip
    labels: str | None
    name: str | None
    cache_dir: Path


@dataclass(frozen=True)
class PreprocessParams:
    config: PreprocessConfig
    augment_copies: int
    seed: int


@dataclass(frozen=True)
class StageConfigs:
    pipeline: PipelineConfig
    preprocess: PreprocessParams
    train: TrainConfig
    evaluation: EvaluationConfig
    explain: ExplainConfig
    robustness: RobustnessConfig
    promotion: PromotionPolicy
    external: ExternalSetParams | None  # None: external validation is off


# PipelineConfig field -> DAG param (absent or None: the environment, then the default).
PIPELINE_PARAMS = {
    "source": "source",
    "label_task": "label_task",
    "seed": "split_seed",
    "backbone": "backbone",
    "pretrained_weights": "pretrained_weights",
    "min_image_share": "min_image_share",
    "holdout_source": "holdout_source",
}


# TrainConfig field -> DAG param (absent or None: the default).
TRAIN_PARAMS = {
    "batch_size": "batch_size",
    "phase1_epochs": "phase1_epochs",
    "phase2_epochs": "phase2_epochs",
    "unfreeze_blocks": "unfreeze_blocks",
    "phase2_learning_rate": "phase2_learning_rate",
    "patience": "early_stopping_patience",
    "imbalance": "imbalance",
    "class_weight": "class_weight",
    "head": "head",
    "tta_views": "tta_views",
    "phase2_schedule": "phase2_schedule",
    "phase2_cached_views": "phase2_cached_views",
    "acquisition_views": "acquisition_views",
    "label_smoothing": "label_smoothing",
    "metadata_fusion": "metadata_fusion",
    "metadata_dropout": "metadata_dropout",
    "multiscale_features": "multiscale_features",
}


# Params whose empty value means "the environment": the split task resolves them and
# records them in the run's config.json; every task after it reads them back from there.
RECORDED_PARAMS = ("source", "backbone", "pretrained_weights")


def from_params(
    params: Mapping[str, Any], recorded: Mapping[str, Any] | None = None
) -> StageConfigs:
    """Every stage's configuration from the DAG's params (defaults where a param is absent).

    ``recorded``: the configuration in the run's ``config.json``, once the split task has
    written it. A param left empty then takes the value recorded there, not the value of
    this worker's environment, so that every task of a run uses the same backbone,
    weights and source.
    """
    p = params
    if recorded:
        p = {**params, **{n: recorded[n] for n in RECORDED_PARAMS if params.get(n) is None}}
    pipeline = PipelineConfig.from_env(
        **{field: p.get(param) for field, param in PIPELINE_PARAMS.items()}
    )
    seed = pipeline.seed

    def given(**fields: Any) -> dict[str, Any]:
        return {name: value for name, value in fields.items() if value is not None}

    return StageConfigs(
        pipeline=pipeline,
        preprocess=PreprocessParams(
            PreprocessConfig(
                **given(
                    size=p.get("image_size"),
                    interpolation=p.get("interpolation"),
                    hair_removal=p.get("hair_removal"),
                    lesion_crop=p.get("lesion_crop"),
                    color_constancy=p.get("color_constancy"),
                )
            ),
            augment_copies=p.get("augment_copies", 2),
            seed=seed,
        ),
        train=TrainConfig(
            backbone=pipeline.backbone,
            seed=seed,
            **given(**{field: p.get(param) for field, param in TRAIN_PARAMS.items()}),
        ),
        evaluation=EvaluationConfig(
            seed=seed,
            **given(
                target_sensitivity=p.get("target_sensitivity"),
                probability_calibration=p.get("probability_calibration"),
                bootstrap_replicates=p.get("bootstrap_replicates"),
            ),
        ),
        explain=ExplainConfig(
            seed=seed,
            **given(
                per_outcome=p.get("gradcam_per_outcome"),
                random_count=p.get("gradcam_random"),
                method=p.get("gradcam_method"),
                operating_point=p.get("operating_point"),
            ),
        ),
        robustness=RobustnessConfig(
            seed=seed,
            **given(
                images=p.get("robustness_images"),
                strengths=tuple(p["robustness_strengths"])
                if p.get("robustness_strengths")
                else None,
            ),
        ),
        promotion=PromotionPolicy(
            **given(
                auroc_margin=p.get("promotion_auroc_margin"),
                sensitivity_floor=p.get("sensitivity_floor"),
                operating_point=p.get("operating_point"),
            )
        ),
        external=ExternalSetParams(
            p.get("external_images") or "isic2018",
            p.get("external_labels") or None,
            p.get("external_name") or None,
            Path(pipeline.cache_dir),
        )
        if p.get("external_validation")
        else None,
    )
