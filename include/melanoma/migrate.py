"""``melanoma-store migrate``: give runs written before commit records their records.

The first layout put the same artifacts at the same keys but committed only two stages
(``model/MANIFEST.json``, ``preprocessed/MANIFEST.json``), without sizes or hashes for
most objects. Migration reads each run that has no ``commits/`` yet, hashes what each
stage wrote, and writes the stage's commit record; nothing is moved or rewritten. A shard
whose bytes differ from the sha256 its old manifest recorded is not committed: the stage
is reported and left for a rerun. A stage whose artifacts are missing is skipped, as it
was never complete. Runs keep their keys: a run id that the new layout would key with a
hash is still found at its old key (``melanoma.run.locate_run_key``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from melanoma import RESEARCH_NOTICE
from melanoma.cli import run_command
from melanoma.layout import RUN_KEY, RUNS, RunLayout
from melanoma.run import Run
from melanoma.store import ObjectStore, default_store_url, object_record, open_store
from melanoma.tables import read_table


class MigrationSkip(Exception):
    """A stage that cannot be committed, and why."""


@dataclass
class RunMigration:
    key: str
    committed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _record(store: ObjectStore, key: str, **meta: Any) -> dict[str, Any]:
    try:
        data = store.get_bytes(key)
    except FileNotFoundError:
        raise MigrationSkip(f"never completed: {key} is missing") from None
    return {**object_record(key, data), **meta}


def _json(store: ObjectStore, key: str) -> Any:
    if not store.exists(key):
        raise MigrationSkip(f"never completed: {key} is missing")
    return store.get_json(key)


def _split(run: Run) -> tuple[dict, dict]:
    layout, store = run.layout, run.store
    return {
        "config": _record(store, layout.config),
        "splits": _record(store, layout.splits),
        "splits_summary": _record(store, layout.splits_summary),
    }, {}


def _preprocess(run: Run) -> tuple[dict, dict]:
    layout, store = run.layout, run.store
    manifest = _json(store, layout.legacy_manifest("preprocess"))
    artifacts = {"stats": _record(store, layout.preprocess_stats)}
    for shard in manifest["shards"]:
        entry = _record(store, shard["key"], split=shard["split"], rows=shard["rows"])
        if shard.get("sha256") and entry["sha256"] != shard["sha256"]:
            raise MigrationSkip(
                f"{shard['key']} changed after its manifest recorded sha256 {shard['sha256'][:16]}"
            )
        artifacts[f"shard/{shard['split']}/{shard['key'].rsplit('/', 1)[-1]}"] = entry
    stats = store.get_json(layout.preprocess_stats)
    return artifacts, {
        "dataset_version": manifest["dataset_version"],
        "image_size": manifest["image_size"],
        "preprocess_config": stats["config"],
    }


def _train(run: Run) -> tuple[dict, dict]:
    layout, store = run.layout, run.store
    manifest = _json(store, layout.legacy_manifest("train"))
    names = {
        "model": layout.model,
        "history": layout.history,
        "training_config": layout.training_config,
        "predictions_val": layout.predictions("val"),
        "predictions_test": layout.predictions("test"),
    }
    return {n: _record(store, k) for n, k in names.items()}, {"summary": manifest.get("summary")}


def _single(name: str, key: Callable[[RunLayout], str]) -> Callable[[Run], tuple[dict, dict]]:
    return lambda run: ({name: _record(run.store, key(run.layout))}, {})


def _evaluate(run: Run) -> tuple[dict, dict]:
    metrics = _json(run.store, run.layout.metrics)
    artifacts = {"metrics": _record(run.store, run.layout.metrics)}
    for figure in metrics.get("figures", {}):
        artifacts[f"figure/{figure}"] = _record(run.store, run.layout.figure(figure))
    return artifacts, {}


def _explain(run: Run) -> tuple[dict, dict]:
    layout, store = run.layout, run.store
    artifacts = {
        "summary": _record(store, layout.gradcam_summary),
        "index": _record(store, layout.gradcam_index),
    }
    index = read_table(store.get_bytes(layout.gradcam_index))
    for row in index.itertuples():
        artifacts[f"image/{row.selected_as}/{row.image_id}"] = _record(store, row.png)
    return artifacts, {}


def _external(name: str) -> Callable[[Run], tuple[dict, dict]]:
    def read(run: Run) -> tuple[dict, dict]:
        layout, store = run.layout, run.store
        metrics = _json(store, layout.external_file(name, "metrics.json"))
        artifacts = {
            item: _record(store, layout.external_file(name, f"{item}.{suffix}"))
            for item, suffix in (("predictions", "csv"), ("not_scored", "csv"), ("metrics", "json"))
        }
        for figure in metrics.get("figures", {}):
            artifacts[f"figure/{figure}"] = _record(store, layout.external_figure(name, figure))
        return artifacts, {}

    return read


STAGE_READERS: dict[str, Callable[[Run], tuple[dict, dict]]] = {
    "split": _split,
    "preprocess": _preprocess,
    "train": _train,
    "calibrate": _single("calibration", lambda layout: layout.calibration),
    "evaluate": _evaluate,
    "explain": _explain,
    "promote": _single("promotion", lambda layout: layout.promotion),
    "report": _single("report", lambda layout: layout.report),
}


def legacy_runs(store: ObjectStore) -> list[str]:
    """Keys of runs that have a config.json and no commit records."""
    keys: dict[str, bool] = {}
    for info in store.list(f"{RUNS}/"):
        parts = info.key.split("/")
        if len(parts) >= 3 and RUN_KEY.match(parts[1]):
            layout = RunLayout(parts[1])
            keys.setdefault(parts[1], False)
            if info.key.startswith(layout.commits + "/"):
                keys[parts[1]] = True
    return sorted(k for k, has_commits in keys.items() if not has_commits)


def _external_names(run: Run) -> list[str]:
    prefix = run.layout.external + "/"
    names = {
        info.key[len(prefix) :].split("/", 1)[0]
        for info in run.store.list(prefix)
        if info.key.endswith("/metrics.json")
    }
    return sorted(names)


def migrate_run(store: ObjectStore, key: str, dry_run: bool = False) -> RunMigration:
    run = Run(store, RunLayout(key))
    result = RunMigration(key)
    readers = dict(STAGE_READERS)
    readers |= {f"external/{name}": _external(name) for name in _external_names(run)}
    for stage, read in readers.items():
        try:
            artifacts, data = read(run)
        except MigrationSkip as why:
            result.skipped[stage] = str(why)
            continue
        if not dry_run:
            with run.stage(stage) as writer:
                writer.artifacts, writer.data = artifacts, {**data, "migrated": True}
        result.committed.append(stage)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="melanoma-store",
        description="Maintain the object store. " + RESEARCH_NOTICE,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    migrate = commands.add_parser(
        "migrate", help="write commit records for runs written before them (nothing is moved)"
    )
    migrate.add_argument("--store", help="store URL (default MELANOMA_STORE_URL, else .store/)")
    migrate.add_argument("--dry-run", action="store_true", help="report what would be committed")
    args = parser.parse_args(argv)
    return run_command(parser.prog, lambda: migrate_store(args))


def migrate_store(args: argparse.Namespace) -> int:
    """``melanoma-store migrate``: on an existing store only."""
    store = open_store(args.store or default_store_url(), create=False)
    keys = legacy_runs(store)
    if not keys:
        print(f"{store.url}: every run already has commit records; nothing to migrate")
        return 0
    for key in keys:
        result = migrate_run(store, key, args.dry_run)
        verb = "would commit" if args.dry_run else "committed"
        print(f"{RunLayout(key).prefix}: {verb} {', '.join(result.committed) or 'nothing'}")
        for stage, why in result.skipped.items():
            print(f"  {stage}: not committed: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
