"""A pipeline run in the store: typed reads and committed writes of its artifacts.

Every stage has one shape, ``stage(run, config) -> commit key``, and writes through
:meth:`Run.stage`::

    with run.stage("calibrate") as stage:
        stage.put_json("calibration", run.layout.calibration, record)
    # leaving the block commits: commits/calibrate.json lists each artifact's key, size, sha256

A stage that raises commits nothing, and a new attempt never destroys the last good
commit: an artifact of the committed attempt that the new one replaces or removes is
first moved aside (``<key>.previous``, a rename); if the attempt fails, the moved
objects are put back and the previous record still describes them; if it succeeds, the
new record replaces the old one in one write and the moved objects go. An attempt
killed half-way is repaired by the next one (:meth:`Run.stage` restores what the record
still describes). Readers go through the record (:meth:`Run.read_bytes` and the typed
readers) and every read is checked against it: an object changed after its commit
raises ``ArtifactCorruptError`` naming the key.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from melanoma import RESEARCH_NOTICE
from melanoma.artifacts import (
    Calibration,
    ExternalMetrics,
    JsonRecord,
    Metrics,
    PromotionDecision,
    TrainingRecord,
)
from melanoma.images import PreprocessConfig, ResolutionParity
from melanoma.layout import RUN_KEY, RUNS, RunLayout, check_run_key, run_key
from melanoma.store import (
    ArtifactCorruptError,
    ArtifactIncompleteError,
    ObjectStore,
    object_record,
    sha256_hex,
    verified_bytes,
)
from melanoma.tables import read_table

COMMIT_SCHEMA = 1


class RunOwnershipError(ValueError):
    """A run's prefix already holds another run's config.json."""


@dataclass(frozen=True)
class RunConfig:
    """``config.json``: which run, on which dataset version, with which configuration.

    ``config``: the pipeline's (``PipelineConfig``); ``stages``: every stage's configuration
    as the DAG resolved it (``StageConfigs.resolved``); ``profile``: the hardware profile's
    ``name`` and ``why`` it was chosen (both empty in runs made before them)."""

    run_id: str
    dataset_version: str
    manifest_key: str
    config: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, str] = field(default_factory=dict)

    @property
    def label_task(self) -> str:
        return self.config["label_task"]

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> RunConfig:
        return cls(
            payload["run_id"],
            payload["dataset_version"],
            payload["manifest_key"],
            payload.get("config", {}),
            payload.get("stages", {}),
            payload.get("profile", {}),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "dataset_version": self.dataset_version,
            "manifest_key": self.manifest_key,
            "config": self.config,
            **({"stages": self.stages} if self.stages else {}),
            **({"profile": self.profile} if self.profile else {}),
            "notice": RESEARCH_NOTICE,
        }


Record = TypeVar("Record", bound=JsonRecord)

# The suffix of a committed object moved aside while a new attempt of its stage runs.
PREVIOUS = ".previous"


class StageWriter:
    """Collects what a stage writes; :meth:`Run.stage` commits it when the stage succeeds.

    ``committed``: key -> sha256 of the objects the stage's last good commit lists; each
    is moved aside before this attempt first overwrites or removes it (``moved``)."""

    def __init__(self, run: Run, name: str, committed: dict[str, str] | None = None):
        self.run, self.name = run, name
        self.artifacts: dict[str, dict[str, Any]] = {}
        self.data: dict[str, Any] = {}
        self.committed = committed or {}
        self.moved: list[str] = []

    def _keep_committed(self, key: str) -> None:
        if key in self.committed and key not in self.moved:
            with suppress(FileNotFoundError):
                self.run.store.move(key, key + PREVIOUS)
                self.moved.append(key)

    def put_bytes(self, name: str, key: str, data: bytes, **meta: Any) -> str:
        self._keep_committed(key)
        self.run.store.put_bytes(key, data)
        self.artifacts[name] = {**object_record(key, data), **meta}
        return key

    def will_write(self, keys: Iterable[str]) -> None:
        """Objects that others (Spark's executors) will write under ``keys``: the ones the
        last commit lists are moved aside now, and come back if the attempt fails."""
        for key in keys:
            self._keep_committed(key)

    def remove(self, key: str) -> None:
        """Remove an object this attempt no longer writes (a stale figure, say); one the
        last commit lists comes back if the attempt fails."""
        self._keep_committed(key)
        self.run.store.delete(key)

    def put_back(self) -> None:
        """The attempt failed: every moved object back under its key."""
        for key in reversed(self.moved):
            self.run.store.move(key + PREVIOUS, key)

    def discard_moved(self) -> None:
        """The attempt committed: the moved objects are no longer described by any record."""
        for key in self.moved:
            self.run.store.delete(key + PREVIOUS)

    def put_json(self, name: str, key: str, payload: Any) -> str:
        return self.put_bytes(name, key, json.dumps(payload, indent=2, sort_keys=True).encode())

    def put_file(self, name: str, key: str, path: str | os.PathLike[str]) -> str:
        data = Path(path).read_bytes()
        return self.put_bytes(name, key, data)

    def record(self, name: str, key: str, size: int, sha256: str, **meta: Any) -> None:
        """An artifact written elsewhere (a Spark executor): its record, checked on read."""
        self.artifacts[name] = {"key": key, "size": int(size), "sha256": sha256, **meta}


class Run:
    """One run's artifacts in ``store`` at ``layout``."""

    def __init__(self, store: ObjectStore, layout: RunLayout, run_id: str | None = None):
        self.store, self.layout, self.run_id = store, layout, run_id

    def __repr__(self) -> str:
        return f"Run({self.store.url}/{self.layout.prefix})"

    @classmethod
    def for_run_id(cls, store: ObjectStore, run_id: str) -> Run:
        """The run ``run_id``, where its config.json is (see :func:`locate_run_key`)."""
        return cls(store, RunLayout(locate_run_key(store, run_id)), run_id)

    @classmethod
    def find(cls, store: ObjectStore, ref: str) -> Run:
        """A stored run by run id, run key or ``runs/<key>``; LookupError if none is there."""
        text = ref.strip().rstrip("/")
        candidates = []
        if text.startswith(f"{RUNS}/"):
            candidates.append(RunLayout.from_prefix(text).key)
        else:
            candidates.append(locate_run_key(store, text))
            with suppress(ValueError):
                candidates.append(check_run_key(text))
        for key in candidates:
            run = cls(store, RunLayout(key))
            if store.exists(run.layout.config):
                return run
        raise LookupError(f"{store.url} has no run {ref!r} (no {RUNS}/<key>/config.json)")

    # --- writing -------------------------------------------------------------------

    def check_owner(self, run_id: str) -> None:
        """Refuse to write run ``run_id`` into a prefix whose config.json names another run."""
        if self.store.exists(self.layout.config):
            owner = self.store.get_json(self.layout.config).get("run_id")
            if owner != run_id:
                raise RunOwnershipError(
                    f"{self.store.url}/{self.layout.config} belongs to run {owner!r}, "
                    f"not {run_id!r}: refusing to write into another run's prefix"
                )

    @contextmanager
    def stage(self, name: str) -> Iterator[StageWriter]:
        """Write a stage's artifacts; commit them (record last) if the block succeeds. The
        last good commit stays readable and intact until the new record replaces it."""
        commit_key = self.layout.commit(name)
        committed = self._repair_commit(commit_key)
        writer = StageWriter(self, name, committed)
        try:
            yield writer
        except BaseException:
            writer.put_back()
            raise
        self.store.put_json(
            commit_key,
            {
                "schema_version": COMMIT_SCHEMA,
                "stage": name,
                "run_key": self.layout.key,
                "artifacts": writer.artifacts,
                "data": writer.data,
                "notice": RESEARCH_NOTICE,
            },
        )
        writer.discard_moved()

    def _repair_commit(self, commit_key: str) -> dict[str, str]:
        """key -> sha256 of what the stage's record lists, after putting back the objects
        an attempt killed half-way had moved aside (those the record still describes);
        moved-aside objects no record describes are removed."""
        try:
            record = self.store.get_json(commit_key)
        except (FileNotFoundError, ArtifactCorruptError):
            return {}
        committed = {e["key"]: e["sha256"] for e in record.get("artifacts", {}).values()}
        moved_aside = {
            o.key for o in self.store.list(self.layout.prefix + "/") if o.key.endswith(PREVIOUS)
        }
        for key, sha256 in committed.items():
            moved = key + PREVIOUS
            if moved not in moved_aside:
                continue
            if sha256_hex(self.store.get_bytes(moved)) == sha256:
                self.store.move(moved, key)
            else:
                self.store.delete(moved)
        return committed

    # --- reading -------------------------------------------------------------------

    def committed(self, stage: str) -> bool:
        return self.store.exists(self.layout.commit(stage))

    def commit_record(self, stage: str) -> dict[str, Any]:
        key = self.layout.commit(stage)
        try:
            return self.store.get_json(key)
        except FileNotFoundError:
            legacy = (
                " (a run written before commit records: `melanoma-store migrate` converts it)"
                if self.store.exists(self.layout.config)
                and not any(True for _ in self.store.list(self.layout.commits + "/"))
                else ""
            )
            raise ArtifactIncompleteError(
                f"{self.store.url}/{key} does not exist: stage {stage} of "
                f"{self.layout.prefix} was never committed{legacy}"
            ) from None

    def entry(self, stage: str, name: str) -> dict[str, Any]:
        artifacts = self.commit_record(stage)["artifacts"]
        if name not in artifacts:
            raise KeyError(
                f"{self.store.url}/{self.layout.commit(stage)} lists no artifact {name!r}"
            )
        return artifacts[name]

    def entries(self, stage: str, prefix: str) -> list[dict[str, Any]]:
        """The stage's artifacts whose names start with ``prefix``, in name order."""
        artifacts = self.commit_record(stage)["artifacts"]
        return [artifacts[n] for n in sorted(artifacts) if n.startswith(prefix)]

    def read_entry(self, stage: str, entry: dict[str, Any]) -> bytes:
        return verified_bytes(self.store, entry, self.layout.commit(stage))

    def read_bytes(self, stage: str, name: str) -> bytes:
        return self.read_entry(stage, self.entry(stage, name))

    def read_json(self, stage: str, name: str) -> Any:
        return json.loads(self.read_bytes(stage, name))

    def read_csv(self, stage: str, name: str) -> pd.DataFrame:
        return read_table(self.read_bytes(stage, name))

    @contextmanager
    def local_file(self, stage: str, name: str) -> Iterator[Path]:
        """The artifact as a verified local file (for loaders that take a path)."""
        entry = self.entry(stage, name)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(entry["key"]).name
            self.store.get_file(entry["key"], path)
            data = path.read_bytes()
            if sha256_hex(data) != entry["sha256"] or len(data) != entry["size"]:
                self.read_entry(stage, entry)  # raises ArtifactCorruptError naming the key
            yield path

    # --- typed artifacts -----------------------------------------------------------

    def config(self) -> RunConfig:
        return RunConfig.from_json(self.read_json("split", "config"))

    def read_record(self, kind: type[Record]) -> Record:
        """A typed JSON artifact (``melanoma.artifacts``), read through its stage's commit."""
        return kind.from_json(self.read_json(kind.stage, kind.artifact))

    def calibration(self) -> Calibration:
        return self.read_record(Calibration)

    def training_record(self) -> TrainingRecord:
        return self.read_record(TrainingRecord)

    def metrics(self) -> Metrics:
        return self.read_record(Metrics)

    def external(self, name: str) -> ExternalMetrics:
        """An external set's metrics (``external/<name>``), read through its commit."""
        return ExternalMetrics.from_json(
            self.read_json(ExternalMetrics.stage_of(name), ExternalMetrics.artifact)
        )

    def promotion(self) -> PromotionDecision | None:
        """The promotion decision; None when the run has none (yet, or never: a hold-out)."""
        return self.read_record(PromotionDecision) if self.committed("promote") else None

    def splits(self) -> pd.DataFrame:
        return self.read_csv("split", "splits")

    def shards(self, split: str) -> list[dict[str, Any]]:
        """The preprocessing shards of ``split``: {key, size, sha256, split, rows}."""
        return [e for e in self.entries("preprocess", "shard/") if e["split"] == split]

    def preprocess_data(self) -> dict[str, Any]:
        """image_size, dataset_version, the preprocessing config, and train_long_side and
        train_jpeg_quality (the training images' long side and JPEG quality, for resolution
        parity; absent in older runs)."""
        return self.commit_record("preprocess")["data"]

    def preprocess_config(self) -> PreprocessConfig:
        """The preprocessing the run's images had (so that new images can have the same)."""
        return PreprocessConfig(**self.preprocess_data()["preprocess_config"])

    def resolution_parity(self) -> ResolutionParity:
        """The training images' long side and JPEG quality, which larger new images are
        brought to (each None in a run from before it was recorded)."""
        return ResolutionParity.from_record(self.preprocess_data())

    def promotion_benchmark(self) -> pd.DataFrame:
        """The dataset version's promotion benchmark for the run's label task (in no split)."""
        return self.read_csv("split", "promotion_benchmark")

    def predictions(self, split: str) -> pd.DataFrame:
        return self.read_csv("train", f"predictions_{split}")

    def external_sets(self) -> list[str]:
        """The names of the external sets validated and committed for this run."""
        prefix = self.layout.commits + "/external/"
        return sorted(Path(o.key).stem for o in self.store.list(prefix) if o.key.endswith(".json"))


def locate_run_key(store: ObjectStore, run_id: str) -> str:
    """The key of run ``run_id``: :func:`run_key`, or where a store written before that
    kept it (the cleaned id without a hash) when its config.json there names this run."""
    key = run_key(run_id)
    if store.exists(RunLayout(key).config):
        return key
    legacy = legacy_run_key(run_id)
    if legacy and legacy != key and RUN_KEY.match(legacy):
        config = RunLayout(legacy).config
        if store.exists(config) and store.get_json(config).get("run_id") == run_id:
            return legacy
    return key


def legacy_run_key(run_id: str) -> str | None:
    """The key the first layout gave ``run_id`` (not injective: only for reading old stores)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._")
    return cleaned or None
