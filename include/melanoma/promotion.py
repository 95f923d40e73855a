"""Promote a run to champion only when it is not worse than the current one.

One champion per label task, at ``champions/<label_task>/champion.json``. The rule
(``decide_promotion``), in order:

1. the run's test sensitivity at its operating threshold must reach the floor;
2. a run tested on a held-out source only is never promoted;
3. with no champion yet, the run is promoted;
4. a run that already is the champion stays so (a rerun changes nothing);
5. a comparison that cannot be made fairly keeps the champion, with the reason;
6. otherwise the run is promoted when its AUROC on the *promotion benchmark* is not below
   the champion's by more than the margin (the paired difference; its lesion-bootstrap
   interval is reported beside it).

The promotion benchmark (``melanoma.splits.promotion_benchmark_lesions``) is a fixed,
lesion-grouped, stratified share of the dataset version that no run trains, validates,
calibrates or tests on, whatever its seed. Both models score its stored images, each
through its own recorded preprocessing and resolution (``benchmark_inputs``), as
``melanoma-predict`` scores a file. Neither model's test split is used to compare.

A champion file that cannot be read is an error, never a reason to promote.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from melanoma.config import CheckedSettings
from melanoma.dataset_version import DatasetVersion
from melanoma.images import preprocess_image
from melanoma.layout import champion_key
from melanoma.run import Run
from melanoma.store import ObjectStore, read_manifest

CHAMPION_FIELDS = (
    "run_id",
    "label_task",
    "dataset_version",
    "test_fingerprint",
    "auroc",
    "operating_point",
    "threshold",
    "sensitivity",
    "model_key",
)


class ChampionCorruptError(ValueError):
    """The champion record exists but cannot be used."""


@dataclass(frozen=True)
class PromotionPolicy(CheckedSettings):
    auroc_margin: float = 0.01
    sensitivity_floor: float = 0.80
    operating_point: str = "target_sensitivity"


def read_champion(store: ObjectStore, label_task: str) -> dict[str, Any] | None:
    """The champion record, None when there is none; ChampionCorruptError when unusable."""
    key = champion_key(label_task)
    if not store.exists(key):
        return None
    where = f"{store.url}/{key}"
    try:
        record = json.loads(store.get_bytes(key))
    except (ValueError, UnicodeDecodeError) as error:
        raise ChampionCorruptError(f"{where}: not valid JSON ({error})") from None
    if not isinstance(record, dict):
        raise ChampionCorruptError(f"{where}: expected a JSON object")
    missing = [f for f in CHAMPION_FIELDS if f not in record]
    if missing:
        raise ChampionCorruptError(f"{where}: missing field(s) {missing}")
    if record["label_task"] != label_task:
        raise ChampionCorruptError(
            f"{where}: label_task is {record['label_task']!r}, expected {label_task!r}"
        )
    if not isinstance(record["auroc"], int | float) or not 0 <= record["auroc"] <= 1:
        raise ChampionCorruptError(f"{where}: auroc {record['auroc']!r} is not in [0, 1]")
    return record


def benchmark_inputs(model_run: Run, data_run: Run, rows: pd.DataFrame) -> np.ndarray:
    """The stored images of ``rows`` (from ``data_run``'s dataset version) as ``model_run``'s
    model takes them: through ``model_run``'s recorded preprocessing (colour constancy, hair
    removal, crop, size) and resolution parity, as ``melanoma-predict`` treats a file.

    Each model is scored through its own preprocessing, so a champion trained with colour
    constancy is compared on images with colour constancy, whatever the candidate did.
    """
    dataset = DatasetVersion(read_manifest(data_run.store, data_run.config().manifest_key))
    config, parity = model_run.preprocess_config(), model_run.resolution_parity()
    inputs = np.zeros((len(rows), *config.shape, 3), np.uint8)
    for i, image_id in enumerate(rows["image_id"]):
        relative = dataset.image_relative(str(image_id))
        inputs[i] = preprocess_image(
            dataset.read(data_run.store, relative),
            config,
            dataset.pixels(relative),
            parity=parity,
        )
    return inputs


def benchmark_refusal(champion_run: Run, benchmark: pd.DataFrame) -> str | None:
    """Why the champion cannot be compared with a candidate on ``benchmark`` fairly (None: it can)."""
    labels = benchmark["label"].astype(int)
    if labels.nunique() < 2:
        return (
            f"the promotion benchmark ({len(benchmark)} images) holds "
            f"{'no' if labels.sum() == 0 else 'only'} positive images: AUROC is undefined"
        )
    if not champion_run.committed("train"):
        return f"the champion's run {champion_run.layout.prefix} has no committed model"
    learnt = champion_run.splits()
    learnt = learnt[learnt["split"].isin(["train", "val"])]
    shared = set(learnt["lesion_id"].astype(str)) & set(benchmark["lesion_id"].astype(str))
    if shared:
        return (
            f"the champion {champion_run.layout.prefix} trained or calibrated on {len(shared)} "
            "of the promotion benchmark's lesions (its dataset's lesion ids differ): its AUROC "
            "there would be inflated"
        )
    return None


def decide_promotion(
    candidate: dict[str, Any],
    champion: dict[str, Any] | None,
    comparison: dict[str, Any] | None,
    policy: PromotionPolicy,
) -> dict[str, Any]:
    """Apply the rule. ``comparison``: both models on the promotion benchmark
    (``difference``, ``candidate_auroc``, ``champion_auroc``, ``images``, ``positives``)
    or ``{"refused": reason}``; needed when there is a champion other than the candidate."""
    reasons: list[str] = []
    sensitivity, floor = candidate["sensitivity"], policy.sensitivity_floor
    passes_floor = sensitivity >= floor
    reasons.append(
        f"test sensitivity {sensitivity:.4f} at the {policy.operating_point} threshold "
        f"{'meets' if passes_floor else 'is below'} the floor {floor:.2f}"
    )
    if candidate.get("holdout_source"):
        promote = False
        reasons.append(
            f"tested on the held-out source {candidate['holdout_source']!r} only: an "
            "unseen-clinic estimate, never a champion"
        )
    elif not passes_floor:
        promote = False
    elif champion is None:
        promote = True
        reasons.append(f"no champion yet for {candidate['label_task']}")
    elif champion["run_id"] == candidate["run_id"]:
        promote = False
        reasons.append("this run already is the champion")
    elif comparison is None:
        raise ValueError("comparing with the champion needs both scored on the promotion benchmark")
    elif "refused" in comparison:
        promote = False
        reasons.append(
            f"no fair comparison with champion {champion['run_id']}: {comparison['refused']}; "
            "the champion is kept"
        )
    else:
        promote = comparison["difference"]["value"] >= -policy.auroc_margin
        reasons.append(_comparison_reason(comparison, champion["run_id"], policy, promote))
    return {
        "promote": promote,
        "reasons": reasons,
        "policy": asdict(policy),
        "candidate": candidate,
        "champion": champion,
        "comparison": comparison,
    }


def _comparison_reason(
    comparison: dict[str, Any], champion_id: str, policy: PromotionPolicy, promote: bool
) -> str:
    """The benchmark comparison in words: both AUROCs, the paired difference, the verdict."""
    difference, margin = comparison["difference"], policy.auroc_margin
    verdict = "not worse" if promote else "worse"
    return (
        f"on the promotion benchmark ({comparison['images']} images, "
        f"{comparison['positives']} positive; neither model trained or calibrated on "
        f"them): AUROC {comparison['candidate_auroc']:.4f} vs champion "
        f"{champion_id} {comparison['champion_auroc']:.4f}, paired difference "
        f"{difference['value']:+.4f} ({difference['ci_low']:+.4f} to "
        f"{difference['ci_high']:+.4f}): {verdict} by more than the margin {margin:.3f}"
    )
