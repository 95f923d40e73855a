"""Promote a run to champion only when it is not worse than the current one.

One champion per label task, at ``champions/<label_task>/champion.json``. The rule
(``decide_promotion``), in order:

1. the run's test sensitivity at its operating threshold must reach the floor;
2. with no champion yet, the run is promoted;
3. a run that already is the champion stays so (a rerun changes nothing);
4. otherwise the run is promoted when its test AUROC is not below the champion's
   AUROC on *the same test split* by more than the margin. When the champion was
   evaluated on another split (another dataset version or seed), the caller
   re-scores the champion's model on this run's test split first.

A champion file that cannot be read is an error, never a reason to promote.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from melanoma.calibration import THRESHOLD_METHODS
from melanoma.layout import champion_key
from melanoma.store import ObjectStore

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
class PromotionPolicy:
    auroc_margin: float = 0.01
    sensitivity_floor: float = 0.80
    operating_point: str = "target_sensitivity"

    def __post_init__(self) -> None:
        if self.operating_point not in THRESHOLD_METHODS:
            raise ValueError(f"operating_point {self.operating_point!r} not in {THRESHOLD_METHODS}")
        if not 0 <= self.auroc_margin <= 1 or not 0 <= self.sensitivity_floor <= 1:
            raise ValueError("auroc_margin and sensitivity_floor must be in [0, 1]")


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


def decide_promotion(
    candidate: dict[str, Any],
    champion: dict[str, Any] | None,
    champion_auroc_here: float | None,
    policy: PromotionPolicy,
) -> dict[str, Any]:
    """Apply the rule; ``champion_auroc_here`` is the champion's AUROC on the candidate's test split."""
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
    else:
        if champion_auroc_here is None:
            raise ValueError("the champion's AUROC on this test split is needed to compare")
        promote = candidate["auroc"] >= champion_auroc_here - policy.auroc_margin
        reasons.append(
            f"test AUROC {candidate['auroc']:.4f} vs champion {champion['run_id']} "
            f"{champion_auroc_here:.4f} on the same test split: "
            + (
                f"not worse by more than the margin {policy.auroc_margin:.3f}"
                if promote
                else f"worse by more than the margin {policy.auroc_margin:.3f}"
            )
        )
    return {
        "promote": promote,
        "reasons": reasons,
        "policy": asdict(policy),
        "candidate": candidate,
        "champion": champion,
        "champion_auroc_on_this_test_split": champion_auroc_here,
    }
