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
source. Configurations are grouped by ``melanoma.loso_runs``. It
reads stored predictions only and trains nothing. The interval is the test images'
sampling, not the spread of retraining. Research use only, not a diagnostic device.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from melanoma.loso import LOSO_SOURCES, pooled_loso_auroc
from melanoma.loso_runs import held_out_predictions, loso_families, test_predictions_with_sources
from melanoma.metrics import auroc_with_interval, paired_auroc_difference
from melanoma.report_html import interval, number
from melanoma.runs_index import RunSummary, index_runs
from melanoma.store import ObjectStore, open_store

# Stored probabilities have six decimals; a logit needs them off 0 and 1.
PROBABILITY_FLOOR = 1e-6
MAX_MEMBERS = 4  # 15 combinations of four configurations


def mean_logit(members: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The first member's predictions with ``probability`` replaced by the members' mean
    logit (a score, not a probability) on the same images; members that scored other
    images are refused."""
    first = members[0]
    logits = []
    for index, member in enumerate(members):
        if sorted(member.image_id) != sorted(first.image_id):
            raise ValueError(f"member {index + 1} scored other images than member 1")
        p = member.set_index("image_id").loc[first.image_id, "probability"].to_numpy(float)
        p = np.clip(p, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
        logits.append(np.log(p / (1 - p)))
    return first.assign(probability=np.mean(logits, axis=0))


def ensemble_figures(
    full: Sequence[pd.DataFrame],
    held_out: Sequence[Mapping[str, pd.DataFrame]],
    replicates: int,
) -> dict[str, dict[str, float | None]]:
    """One combination's LOSO AUROC, its paired difference from its best member's, and its
    full runs' test AUROC overall and within source (members in the same order in both)."""
    loso = {s: mean_logit([member[s] for member in held_out]) for s in LOSO_SOURCES}
    pooled = pd.concat([frame.assign(source=s) for s, frame in loso.items()])
    # the members' own LOSO AUROCs (values only: one replicate)
    singles = [pooled_loso_auroc(member, 1)["value"] or 0.0 for member in held_out]
    best = held_out[int(np.argmax(singles))]
    best_scores = np.concatenate(  # the best member's, in the same order as ``pooled``
        [best[s].set_index("image_id").loc[loso[s].image_id, "probability"] for s in LOSO_SOURCES]
    )
    test = mean_logit(full)
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


def member_name(run: RunSummary) -> str:
    """A configuration by its settings that differ from its profile's defaults."""
    settings = [f"{n}={v}" for n, v in run.changed if n not in ("split_seed", "holdout_source")]
    return f"{run.backbone}, profile {run.profile}" + (
        f": {', '.join(settings)}" if settings else ""
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", action="append", required=True, help="a store of runs")
    parser.add_argument("--replicates", type=int, default=2000, help="bootstrap replicates")
    args = parser.parse_args()
    # (dataset version, split seed) -> members: (name, full run's and hold-outs' predictions)
    groups: dict[tuple[str, object], list[tuple[str, pd.DataFrame, dict]]] = {}
    for url in args.store:
        store: ObjectStore = open_store(url, create=False)
        for full, held_out in loso_families(index_runs(store, cache=None).runs):
            if set(held_out) != set(LOSO_SOURCES):
                continue
            seed = full.resolved.get("pipeline", {}).get("seed")
            member = (
                member_name(full),
                test_predictions_with_sources(store, full),
                held_out_predictions(store, held_out),
            )
            groups.setdefault((full.dataset_version, seed), []).append(member)
    if not any(len(members) > 1 for members in groups.values()):
        raise SystemExit("no two configurations share a dataset version and a split seed")
    for (version, seed), members in sorted(groups.items(), key=str):
        if len(members) < 2:
            continue
        members = members[:MAX_MEMBERS]
        print(f"\nDataset version {version[:12]}, split seed {seed}:")
        for index, (name, _, _) in enumerate(members, 1):
            print(f"{index}. {name}")
        print(
            "\n| members | LOSO AUROC (95 % CI) | over the best member on LOSO | "
            "test AUROC | within-source test AUROC |\n| --- | --- | --- | --- | --- |"
        )
        for size in range(1, len(members) + 1):
            for combo in itertools.combinations(range(len(members)), size):
                try:
                    figures = ensemble_figures(
                        [members[i][1] for i in combo],
                        [members[i][2] for i in combo],
                        args.replicates,
                    )
                except ValueError as error:  # members that did not split alike
                    raise SystemExit(f"split seed {seed}: {error}") from None
                over = interval(figures["over_best_member"], sign="+") if size > 1 else "(itself)"
                print(
                    f"| {' + '.join(str(i + 1) for i in combo)} | {interval(figures['loso'])} | "
                    f"{over} | {number(figures['test']['value'])} | "
                    f"{number(figures['within_source_test']['value'])} |"
                )
    print("\nResearch use only, not a diagnostic device.")


if __name__ == "__main__":
    main()
