"""What averaging configurations already trained would give on LOSO: runs re-read.

    .venv/bin/python benchmarks/loso_ensemble.py --store file:///tmp/cost-store --store file:///tmp/mid-store

An ensemble (Lakshminarayanan et al., 2017, "Simple and scalable predictive uncertainty
estimation using deep ensembles") is the usual answer to dataset shift (Ovadia et al.,
2019, "Can you trust your model's uncertainty?"), and it costs a training run per member.
This benchmark asks what it would buy before anyone pays: for each configuration that
``benchmarks/ablation.py --loso`` left a full run and three hold-out runs of, on the same
dataset version and split seed as others, it averages every combination's scores image by
image (the mean of the members' logits) and prints the pooled LOSO AUROC
(``melanoma.loso``), its difference from the combination's best member on LOSO (paired,
same-source pairs, lesion bootstrap) and the full runs' test AUROC, overall and within
source. Configurations are grouped by ``melanoma.loso_runs``; one found in several stores
counts once, and four at most are combined (the rest are listed as left out). It reads
stored predictions only and trains nothing. The interval is the test images' sampling,
not the spread of retraining. Research use only, not a diagnostic device.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from melanoma.cli import run_command
from melanoma.loso import LOSO_SOURCES, check_scores, pooled_loso_auroc
from melanoma.loso_runs import (
    configuration,
    configuration_settings,
    held_out_predictions,
    loso_families,
    sourced_test_predictions,
    split_seed,
)
from melanoma.metrics import auroc_with_interval, paired_auroc_difference
from melanoma.report_html import interval, number
from melanoma.runs_index import RunSummary, index_runs
from melanoma.store import ObjectStore, open_store

# Stored probabilities have six decimals; a logit needs them off 0 and 1 (and 0 apart
# from the smallest stored value, 1e-6).
PROBABILITY_FLOOR = 5e-7
MAX_MEMBERS = 4  # 15 combinations of four configurations


class Member(NamedTuple):
    """One configuration: its number in the printed list, its full run's test predictions
    (with sources) and its hold-out runs' (by held-out source)."""

    number: int
    full: pd.DataFrame
    held_out: dict[str, pd.DataFrame]


def mean_logit(scored: Mapping[str, pd.DataFrame], what: str) -> pd.DataFrame:
    """The first member's predictions with ``probability`` replaced by the members' mean
    logit (a score, not a probability) on the same images. ``scored`` is keyed by member
    name; a member that scored other images, an image twice or without a finite score is
    refused, naming the member and ``what`` it scored."""
    (first_name, first), *_ = scored.items()
    logits = []
    for name, member in scored.items():
        check_scores(member, f"{name} ({what})")
        if set(member.image_id) != set(first.image_id):
            raise ValueError(f"{name} scored other {what} images than {first_name}")
        p = member.set_index("image_id").loc[first.image_id, "probability"].to_numpy(float)
        p = np.clip(p, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
        logits.append(np.log(p / (1 - p)))
    return first.assign(probability=np.mean(logits, axis=0))


def ensemble_figures(
    members: Sequence[Member], replicates: int
) -> dict[str, dict[str, float | None]]:
    """One combination's LOSO AUROC, its paired difference from its best member's (the
    member with the highest LOSO AUROC of its own), and its full runs' test AUROC overall
    and within source."""

    def name(member: Member) -> str:
        return f"configuration {member.number}"

    loso = {
        s: mean_logit({name(m): m.held_out[s] for m in members}, f"held-out {s}")
        for s in LOSO_SOURCES
    }
    pooled = pd.concat([frame.assign(source=s) for s, frame in loso.items()])
    # the members' own LOSO AUROCs (values only: one replicate)
    singles = [pooled_loso_auroc(m.held_out, 1)["value"] for m in members]
    best = members[int(np.nanargmax(np.asarray(singles, dtype=float)))]
    best_scores = np.concatenate(  # the best member's, in the same order as ``pooled``
        [
            best.held_out[s].set_index("image_id").loc[loso[s].image_id, "probability"]
            for s in LOSO_SOURCES
        ]
    )
    test = mean_logit({name(m): m.full for m in members}, "test")
    labels, lesions = test.label.to_numpy(), test.lesion_id.to_numpy()
    return {
        "loso": pooled_loso_auroc(loso, replicates),
        "over_best_member": paired_auroc_difference(
            pooled.label.to_numpy(),
            pooled.probability.to_numpy(),
            best_scores,
            pooled.lesion_id.to_numpy(),
            replicates,
            42,
            0.95,
            groups=pooled.source.to_numpy(),
        ),
        "test": auroc_with_interval(labels, test.probability, lesions, replicates, 42, 0.95),
        "within_source_test": auroc_with_interval(
            labels, test.probability, lesions, replicates, 42, 0.95, groups=test.source
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", action="append", required=True, help="a store of runs")
    parser.add_argument("--replicates", type=int, default=2000, help="bootstrap replicates")
    args = parser.parse_args()
    # (dataset version, split seed) -> configuration -> its full run, store and hold-outs
    groups: dict[
        tuple[str, str], dict[str, tuple[RunSummary, ObjectStore, dict[str, RunSummary]]]
    ] = {}
    for url in args.store:
        store = open_store(url, create=False)
        for full, held_out in loso_families(index_runs(store, cache=None).runs):
            missing = sorted(set(LOSO_SOURCES) - set(held_out))
            if missing:
                print(f"skipped {full.key}: no run holding out {', '.join(missing)}")
                continue
            key = (str(full.dataset_version), str(split_seed(full)))
            # a configuration in two stores counts once: the first store's
            groups.setdefault(key, {}).setdefault(configuration(full), (full, store, held_out))
    if not any(len(configurations) > 1 for configurations in groups.values()):
        raise SystemExit("no two configurations share a dataset version and a split seed")
    for (version, seed), configurations in sorted(groups.items()):
        if len(configurations) < 2:
            continue
        runs = list(configurations.values())
        print(f"\nDataset version {version[:12]}, split seed {seed}:")
        for index, (full, _, _) in enumerate(runs, 1):
            kept = "" if index <= MAX_MEMBERS else f" (left out: at most {MAX_MEMBERS})"
            settings = configuration_settings(full)
            print(
                f"{index}. {full.backbone}, profile {full.profile}"
                + (f": {', '.join(settings)}" if settings else "")
                + kept
            )
        members = [
            Member(i, sourced_test_predictions(store, full), held_out_predictions(store, held))
            for i, (full, store, held) in enumerate(runs[:MAX_MEMBERS], 1)
        ]
        print(
            "\n| members | LOSO AUROC (95 % CI) | over the best member on LOSO | "
            "test AUROC | within-source test AUROC |\n| --- | --- | --- | --- | --- |"
        )
        for size in range(1, len(members) + 1):
            for combo in itertools.combinations(members, size):
                try:
                    figures = ensemble_figures(combo, args.replicates)
                except ValueError as error:  # members that did not split alike
                    raise SystemExit(f"split seed {seed}: {error}") from None
                over = interval(figures["over_best_member"], sign="+") if size > 1 else "(itself)"
                print(
                    f"| {' + '.join(str(m.number) for m in combo)} | {interval(figures['loso'])} | "
                    f"{over} | {number(figures['test']['value'])} | "
                    f"{number(figures['within_source_test']['value'])} |"
                )
    print("\nResearch use only, not a diagnostic device.")


if __name__ == "__main__":
    sys.exit(run_command("loso_ensemble.py", main))
