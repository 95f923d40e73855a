"""What a clinic the model never saw costs, on the same images: LOSO's runs, re-read.

    .venv/bin/python benchmarks/unseen_clinic.py --store file:///tmp/cost-store

LOSO's AUROC (``benchmarks/ablation.py --loso``) mixes two things: how hard a clinic's
lesions are to tell apart, and what it costs that the model never saw the clinic. A lever
that makes a model hold up at a new clinic can only win back the second. This benchmark
measures it. For each configuration in the store that has a run on every source and runs
of the same configuration that each hold one source out (what ``ablation.py --loso``
leaves), both score the full run's test images of each held-out source: the full run saw
that clinic in training (the baseline), the hold-out run did not. The table gives each
source's AUROC by both, the paired difference (unseen minus seen, lesion bootstrap), and
the same pooled over the sources (same-source pairs only, ``melanoma.loso``). A second
table pools the positives (melanomas) against each diagnosis among the negatives: which
lesions the model that never saw the clinic ranks above its melanomas.

Runs are grouped into configurations by ``melanoma.loso_runs``: the same dataset version
and resolved split, preprocessing and training settings, but ``holdout_source`` and where
things are (where two runs of a configuration hold the same source out, the newest
counts). The paired difference is what holding the clinic out cost: its look, and with it
a share of the images to learn from. Its interval is the test images' sampling, not the
spread of retraining; the configurations measured on two split seeds give that. It
reads stored predictions only and trains nothing; it never reads a run's test images
beyond those predictions. Research use only, not a diagnostic device.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

import pandas as pd

from melanoma.cli import run_command
from melanoma.loso import (
    seen_and_unseen_scores,
    unseen_source_cost,
    unseen_source_cost_by_diagnosis,
)
from melanoma.loso_runs import (
    configuration_settings,
    held_out_predictions,
    loso_families,
    sourced_test_predictions,
    split_seed,
)
from melanoma.report_html import interval
from melanoma.runs_index import RunSummary, index_runs
from melanoma.store import ObjectStore, open_store


def family_scores(
    store: ObjectStore, full: RunSummary, held_out: Mapping[str, RunSummary]
) -> pd.DataFrame:
    """Both runs' scores of the full run's test images of each held-out source."""
    return seen_and_unseen_scores(
        sourced_test_predictions(store, full), held_out_predictions(store, held_out)
    )


def describe(run: RunSummary) -> str:
    """The run, its split seed, and its settings that differ from its profile's defaults."""
    settings = configuration_settings(run)
    head = f"`{run.key[:30]}`: {run.label_task}, {run.backbone}, profile {run.profile}"
    return f"{head}, split seed {split_seed(run)}" + (
        f", {', '.join(settings)}" if settings else ""
    )


def rows(name: str, results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return [
        f"| {name} | {key} | {r['images']} ({r['positives']}) | {interval(r['seen'])} | "
        f"{interval(r['unseen'])} | {interval(r['difference'], sign='+')} |"
        for key, r in results.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="the object store the runs are in")
    parser.add_argument("--replicates", type=int, default=2000, help="bootstrap replicates")
    args = parser.parse_args()
    store = open_store(args.store, create=False)
    families = loso_families(index_runs(store, cache=None).runs)
    if not families:
        raise SystemExit(
            f"{args.store}: no configuration has both a run on every source and runs holding "
            "sources out (benchmarks/ablation.py --loso makes them)"
        )
    by_source = [
        "| configuration | held-out source | images (positives) | AUROC, the clinic "
        "seen in training | AUROC, never seen | unseen minus seen (95 % CI) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    by_dx = [line.replace("held-out source", "positives against") for line in by_source]
    for index, (full, held_out) in enumerate(families, 1):
        print(f"{index}. {describe(full)}; held out: {', '.join(held_out)}")
        try:
            scores = family_scores(store, full, held_out)
        except ValueError as error:  # runs of one configuration that did not split alike
            raise SystemExit(f"{full.key}: {error}") from None
        by_source += rows(str(index), unseen_source_cost(scores, args.replicates))
        by_dx += rows(str(index), unseen_source_cost_by_diagnosis(scores, args.replicates))
    print("\nOn the full run's test images of each held-out source:\n")
    print("\n".join(by_source))
    print("\nPooled over the held-out sources, the positives against each diagnosis:\n")
    print("\n".join(by_dx))
    print("\nResearch use only, not a diagnostic device.")


if __name__ == "__main__":
    sys.exit(run_command("unseen_clinic.py", main))
