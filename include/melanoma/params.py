"""The DAG's params, made into each stage's typed configuration in one place.

``from_params(params)`` is all the DAG knows about configuration: each task takes its
stage's config from the result. Which param sets which config field is declared once, in
``melanoma.settings``. Imports stay free of TensorFlow and Spark, so the scheduler can
parse the DAG cheaply.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from melanoma import config
from melanoma.evaluation import EvaluationConfig
from melanoma.images import PreprocessConfig
from melanoma.profiles import FOLLOWS, PROFILES, resolved_profile
from melanoma.promotion import PromotionPolicy
from melanoma.settings import SETTINGS, STAGE_CONFIGS

if TYPE_CHECKING:
    from melanoma.run import Run


@dataclass(frozen=True)
class StageConfigs:
    pipeline: config.PipelineConfig
    preprocess: config.PreprocessParams
    train: config.TrainConfig
    evaluation: EvaluationConfig
    explain: config.ExplainConfig
    robustness: config.RobustnessConfig
    promotion: PromotionPolicy
    external: config.ExternalSetParams | None  # None: external validation is off

    def __post_init__(self) -> None:
        height, width = self.preprocess.config.shape
        for name in ("tta_views", "phase2_cached_views"):
            if height != width and getattr(self.train, name) == 8:
                raise ValueError(
                    f"{name} 8 rotates by 90°, which needs a square model input, not "
                    f"{height}x{width} (image_size, image_width): use 1, 2 or 4"
                )

    def resolved(self) -> dict[str, Any]:
        """Every stage's configuration as JSON: what ``config.json`` and the report show."""
        return json_ready(dataclasses.asdict(self))


def json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def from_params(
    params: Mapping[str, Any],
    recorded: Mapping[str, Any] | None = None,
    detected_profile: str | None = None,
) -> StageConfigs:
    """Every stage's configuration from the DAG's params (defaults where a param is absent
    or empty).

    ``recorded``: the configuration in the run's ``config.json``, once the split task has
    written it. A param left empty then takes the value recorded there, not the value of
    this worker's environment, so that every task of a run uses the same backbone,
    weights, source and profile.

    ``detected_profile``: what ``profile`` ``auto`` resolves to before the split has
    recorded it (the ``choose_profile`` task's answer). A param the profile sets, left
    empty, takes the profile's value (``melanoma.profiles``), unless the environment
    supplies it.
    """
    p = dict(params)
    if recorded:
        for setting in SETTINGS:
            field = setting.targets[0].rsplit(".", 1)[1] if setting.environment else None
            if field and p.get(setting.name) is None and field in recorded:
                p[setting.name] = recorded[field]
    p["profile"] = profile = resolved_profile(p.get("profile"), recorded, detected_profile)
    given_names = {name for name, value in p.items() if value not in (None, "")}
    for setting in (s for s in SETTINGS if s.profiled and s.name not in given_names):
        if FOLLOWS.get(setting.name) in given_names:
            continue  # the stage config's own default goes with the value given
        if not (setting.environment and os.environ.get(setting.environment)):
            p[setting.name] = PROFILES[profile][setting.name]
    given: dict[str, dict[str, Any]] = {owner: {} for owner in STAGE_CONFIGS}
    for setting in SETTINGS:
        value = p.get(setting.name)
        if value is None or value == "":
            continue
        for target in setting.targets:
            owner, field = target.rsplit(".", 1)
            given[owner][field] = setting.convert(value)
    pipeline = config.PipelineConfig.from_env(**given["pipeline"])
    # A setting the environment supplies reaches its other stages as the pipeline resolved it.
    for setting in (s for s in SETTINGS if s.environment):
        resolved = getattr(pipeline, setting.targets[0].rsplit(".", 1)[1])
        for target in setting.targets[1:]:
            owner, field = target.rsplit(".", 1)
            given[owner][field] = resolved
    return StageConfigs(
        pipeline=pipeline,
        preprocess=config.PreprocessParams(
            PreprocessConfig(**given["preprocess.config"]), **given["preprocess"]
        ),
        train=config.TrainConfig(**given["train"]),
        evaluation=EvaluationConfig(**given["evaluation"]),
        explain=config.ExplainConfig(**given["explain"]),
        robustness=config.RobustnessConfig(**given["robustness"]),
        promotion=PromotionPolicy(**given["promotion"]),
        external=config.ExternalSetParams(Path(pipeline.cache_dir), **given["external"])
        if p.get("external_validation")
        else None,
    )


def run_stage_configs(params: Mapping[str, Any], run: Run) -> StageConfigs:
    """Each stage's config for a run whose split has committed: params left empty take what
    the split recorded (its hardware profile among them). Every task after the split, the
    Spark job included, resolves its settings here, so that all of them agree with
    ``config.json``."""
    return from_params(params, run.config().config)
