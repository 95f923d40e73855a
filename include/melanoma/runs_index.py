"""The runs in the store, summarised for the runs page: one ``RunSummary`` per run.

A run is summarised from its committed stages only (its commit records), so a run in
progress shows how far it got, and a finished run's summary never changes. Summaries are
cached per run, keyed by the versions of its commit records and ``config.json``: a page
over 500 runs reads only the store's listing once the runs are known. Knows nothing of
Airflow or HTML. Research use only, not a diagnostic device.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from melanoma.layout import CHAMPIONS, RUN_KEY, RUNS, STAGES, RunLayout, run_key
from melanoma.profiles import PROFILES
from melanoma.promotion import ChampionCorruptError, read_champion
from melanoma.run import Run
from melanoma.settings import SETTINGS, Setting
from melanoma.store import ArtifactCorruptError, ArtifactIncompleteError, ObjectStore

# How far a run got: its latest committed stage, in words.
STAGE_NAMES = {
    "report": "reported",
    "promote": "promotion decided",
    "explain": "explained",
    "robustness": "robustness measured",
    "evaluate": "evaluated",
    "calibrate": "calibrated",
    "train": "trained",
    "preprocess": "preprocessed",
    "split": "split",
}
# The DAG's task that commits each stage: where a run's log for that stage is.
STAGE_TASKS = {
    "split": "split_dataset",
    "preprocess": "preprocess",
    "train": "train",
    "calibrate": "calibrate",
    "evaluate": "evaluate",
    "robustness": "measure_robustness",
    "explain": "explain",
    "promote": "decide_promotion",
    "report": "write_report",
}
# Airflow run ids carry the run's date: manual__2026-11-23T17:23:08.460512+00:00 (or its
# store key, with _ for the colons).
RUN_DATE = re.compile(r"__(\d{4}-\d\d-\d\d)T(\d\d)[:_](\d\d)[:_](\d\d)")
# Settings that say where things are, not what the model is: never "a changed parameter".
DEPLOYMENT_SETTINGS = frozenset({"source", "pretrained_weights"})

Interval = dict[str, float | None]  # {"value", "ci_low", "ci_high"}


@dataclass(frozen=True)
class RunSummary:
    """One run as the runs page shows it; None where the run has not produced the artifact."""

    key: str  # runs/<key>/ in the store
    run_id: str
    started: datetime | None
    stage: str  # the latest committed stage, in words
    committed: tuple[str, ...] = ()  # its committed stages, in pipeline order
    dataset_version: str | None = None
    label_task: str | None = None
    backbone: str | None = None
    profile: str | None = None
    # The settings whose values differ from the defaults of the run's profile.
    changed: tuple[tuple[str, Any], ...] = ()
    resolved: Mapping[str, Any] = field(default_factory=dict)  # config.json's stages
    auroc: Interval | None = None
    auprc: Interval | None = None
    within_source: Interval | None = None
    holdout_source: str | None = None  # the source the run's test split holds out
    benchmark_auroc: Interval | None = None  # on the promotion benchmark
    test_fingerprint: str | None = None
    operating_point: str | None = None
    sensitivity: Interval | None = None
    specificity: Interval | None = None
    promoted: bool | None = None
    promotion_reason: str | None = None
    replaced: str | None = None  # the run id of the champion it was compared with
    gradcam_images: int = 0
    energy_in_lesion: float | None = None
    external_auroc: Mapping[str, Interval] = field(default_factory=dict)
    # Why the run cannot be summarised (an artifact changed or gone), or None.
    damaged: str | None = None

    @property
    def complete(self) -> bool:
        return "report" in self.committed

    @property
    def next_task(self) -> str:
        """The DAG task of the stage after the latest committed one: the task running, or
        the one that failed (the report's task once the run is reported)."""
        if self.complete:
            return STAGE_TASKS["report"]
        latest = max((STAGES.index(s) for s in self.committed), default=-1)
        return STAGE_TASKS[STAGES[latest + 1]]


@dataclass(frozen=True)
class RunIndex:
    """Every run, newest first, and each label task's champion (its run key).

    ``airflow_states``: run id -> the state of its DAG run in Airflow (``running``,
    ``failed``, …), where the caller could ask Airflow; the store alone cannot tell a run
    in progress from one that stopped."""

    runs: tuple[RunSummary, ...]
    champions: Mapping[str, str]  # label task -> run key
    airflow_states: Mapping[str, str] = field(default_factory=dict)

    def in_progress(self) -> list[str]:
        """The run ids of the runs not yet reported (and not damaged)."""
        return [r.run_id for r in self.runs if not r.complete and not r.damaged]

    def is_champion(self, run: RunSummary) -> bool:
        return self.champions.get(run.label_task or "") == run.key

    def external_sets(self) -> list[str]:
        return sorted({name for run in self.runs for name in run.external_auroc})

    def find(self, key: str) -> RunSummary:
        for run in self.runs:
            if run.key == key:
                return run
        raise KeyError(f"no run {key} in the store")


def run_started(run_id: str) -> datetime | None:
    match = RUN_DATE.search(run_id)
    if not match:
        return None
    day, hour, minute, second = match.groups()
    return datetime.fromisoformat(f"{day}T{hour}:{minute}:{second}")


def _value_at(resolved: Mapping[str, Any], target: str) -> Any:
    value: Any = resolved
    for part in target.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(target)
        value = value[part]
    return value


def setting_default(setting: Setting, profile: str | None) -> Any:
    """What ``setting`` is in a run of ``profile`` whose trigger form was left as it came."""
    if setting.profiled and profile is not None and profile in PROFILES:
        return PROFILES[profile][setting.name]
    return setting.config_default


def changed_settings(resolved: Mapping[str, Any], profile: str | None) -> dict[str, Any]:
    """The settings (by the trigger form's names) whose resolved values in ``config.json``'s
    ``stages`` differ from the defaults of the run's profile: what tells two runs apart.

    Where things are (source, weights) is left out: it is not a model choice. External
    validation's settings count only when it ran."""
    changed: dict[str, Any] = {}
    external_on = bool(resolved.get("external"))
    if external_on:
        changed["external_validation"] = True
    for setting in SETTINGS:
        if not setting.targets or setting.name in DEPLOYMENT_SETTINGS or setting.name == "profile":
            continue
        if setting.targets[0].startswith("external.") and not external_on:
            continue
        try:
            value = _value_at(resolved, setting.targets[0])
        except KeyError:
            continue  # a run from before this setting existed
        default = setting_default(setting, profile)
        if isinstance(default, tuple):
            default = list(default)
        if value != default:
            changed[setting.name] = value
    return changed


def _interval(entry: Any) -> Interval | None:
    return dict(entry) if isinstance(entry, Mapping) and "value" in entry else None


def summarize_run(store: ObjectStore, key: str, present: set[str]) -> RunSummary:
    """Summarise ``runs/<key>/`` from its committed stages (``present``: its keys)."""
    run = Run(store, RunLayout(key))
    committed = tuple(stage for stage in STAGES if run.layout.commit(stage) in present)

    def read(stage: str, name: str) -> Any:
        return run.read_json(stage, name) if stage in committed else None

    # config.json is written before its stage commits: it names an in-progress run too.
    config = (store.get_json(run.layout.config) if run.layout.config in present else None) or {}
    training = read("train", "training_config")
    # Runs from before config.json held every stage: what they did record.
    resolved = config.get("stages") or {
        "pipeline": config.get("config") or {},
        **({"train": training["config"]} if training else {}),
    }
    profile = (config.get("profile") or {}).get("name")
    stage = next((STAGE_NAMES[s] for s in reversed(STAGES) if s in committed), None)
    if stage is None:
        legacy = any(k.endswith("/report.html") for k in present)
        stage = "written before commit records: migrate the store" if legacy else "started"
    run_id = config.get("run_id", key)
    values: dict[str, Any] = {
        "key": key,
        "run_id": run_id,
        "started": run_started(run_id),
        "stage": stage,
        "committed": committed,
        "dataset_version": config.get("dataset_version"),
        "label_task": (config.get("config") or {}).get("label_task"),
        "profile": profile,
        "changed": tuple(changed_settings(resolved, profile).items()),
        "resolved": resolved,
    }
    if training:
        values["backbone"] = training["config"].get("backbone")
    values |= _evaluation_values(read("evaluate", "metrics"), read("promote", "promotion"))
    gradcam = read("explain", "summary")
    if gradcam:
        values |= {
            "gradcam_images": gradcam["overall"]["images"],
            "energy_in_lesion": gradcam["overall"]["energy_in_lesion"]["mean"],
        }
    values["external_auroc"] = {name: run.external(name).auroc for name in run.external_sets()}
    return RunSummary(**values)


def _evaluation_values(metrics: Any, promotion: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if metrics:
        point = (promotion or {}).get("candidate", {}).get("operating_point", "target_sensitivity")
        rates = metrics["operating_points"].get(point, {})
        confounding = metrics.get("source_confounding") or {}
        values |= {
            "label_task": metrics["label_task"],
            "auroc": metrics["threshold_free"]["auroc"],
            "auprc": metrics["threshold_free"]["auprc"],
            "within_source": _interval(confounding.get("within_source_auroc")),
            "holdout_source": metrics.get("holdout_source") or None,
            "test_fingerprint": metrics.get("test_fingerprint"),
            "operating_point": point,
            "sensitivity": rates.get("sensitivity"),
            "specificity": rates.get("specificity"),
        }
    if promotion:
        values |= {
            "promoted": bool(promotion["promote"]),
            "promotion_reason": "; ".join(promotion.get("reasons", [])),
            "benchmark_auroc": _interval(promotion["candidate"].get("benchmark_auroc")),
            "replaced": (promotion.get("champion") or {}).get("run_id"),
        }
    return values


# What reading a damaged run raises: a changed or missing artifact, a record not JSON.
DAMAGE = (ArtifactCorruptError, ArtifactIncompleteError, OSError, ValueError, KeyError, TypeError)


class SummaryCache:
    """Run summaries, each kept while its commit records and config.json are unchanged
    (same keys, sizes and versions): a committed stage is never rewritten in place."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[frozenset[tuple[str, int, str]], RunSummary]]
        self._entries = {}
        self._lock = threading.Lock()

    def summary(self, store: ObjectStore, key: str, infos: list[Any]) -> RunSummary:
        layout = RunLayout(key)
        records = layout.commits + "/"
        fingerprint = frozenset(
            (i.key, i.size, i.version)
            for i in infos
            if i.key.startswith(records) or i.key == layout.config
        )
        cached = self._entries.get((store.url, key))
        if cached and cached[0] == fingerprint and all(version for _, _, version in fingerprint):
            return cached[1]
        try:
            summary = summarize_run(store, key, {i.key for i in infos})
        except DAMAGE as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            summary = RunSummary(key, key, run_started(key), "damaged", damaged=reason)
        with self._lock:
            self._entries[(store.url, key)] = (fingerprint, summary)
        return summary


CACHE = SummaryCache()


def champion_runs(store: ObjectStore) -> dict[str, str]:
    """Label task -> the champion's run key, for every readable champion record."""
    champions = {}
    for info in store.list(f"{CHAMPIONS}/"):
        parts = info.key.split("/")
        if len(parts) == 3 and parts[2] == "champion.json":
            try:
                champion = read_champion(store, parts[1])
            except ChampionCorruptError:
                continue  # the promotion task reports it; the page still lists the runs
            if champion:
                prefix = champion.get("run_prefix") or f"{RUNS}/{run_key(champion['run_id'])}"
                champions[parts[1]] = prefix.removeprefix(f"{RUNS}/")
    return champions


def index_runs(store: ObjectStore, cache: SummaryCache | None = CACHE) -> RunIndex:
    """Every run under ``runs/`` (a folder with a ``config.json``: anything else there is
    not a run), newest first (runs without a date last, by key). A run that cannot be
    read is listed as damaged, with why; the others are listed as ever."""
    present: dict[str, list[Any]] = {}
    for info in store.list(f"{RUNS}/"):
        parts = info.key.split("/", 2)
        if len(parts) == 3 and RUN_KEY.match(parts[1]):
            present.setdefault(parts[1], []).append(info)
    cache = cache or SummaryCache()
    runs = [
        cache.summary(store, key, infos)
        for key, infos in present.items()
        if any(i.key == RunLayout(key).config for i in infos)
    ]
    runs.sort(key=lambda r: (r.started is not None, r.started or datetime.min, r.key), reverse=True)
    return RunIndex(tuple(runs), champion_runs(store))


@dataclass(frozen=True)
class ChampionChange:
    """One champion of a label task: the run, what it replaced and by how much."""

    label_task: str
    run_id: str
    run_key: str | None  # None: its run is no longer in the store
    became_champion: datetime | None  # when its run ran
    current: bool
    replaced: str | None  # the run id of the champion before it
    test_auroc: float | None
    replaced_test_auroc: float | None
    comparison: Mapping[str, Any] | None  # the promotion's paired difference, when made


def champion_history(store: ObjectStore, index: RunIndex, label_task: str) -> list[ChampionChange]:
    """Every champion ``label_task`` has had, newest first: the current one
    (``champions/<task>/champion.json``) and those it replaced (``previous/``)."""
    records = []
    for info in store.list(f"{CHAMPIONS}/{label_task}/"):
        if info.key.endswith(".json"):
            try:
                record = store.get_json(info.key)
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and "run_id" in record:
                records.append((info.key.endswith("/champion.json"), record))
    by_id = {run.run_id: run for run in index.runs}
    changes = []
    for current, record in records:
        run = by_id.get(record["run_id"])
        promotion = _promotion(store, run) if run else None
        replaced = (promotion or {}).get("champion") or {}
        changes.append(
            ChampionChange(
                label_task=label_task,
                run_id=record["run_id"],
                run_key=run.key if run else None,
                became_champion=run_started(record["run_id"]),
                current=current,
                replaced=replaced.get("run_id"),
                test_auroc=record.get("auroc"),
                replaced_test_auroc=replaced.get("auroc"),
                comparison=(promotion or {}).get("comparison"),
            )
        )
    changes.sort(key=lambda c: (c.current, c.became_champion or datetime.min), reverse=True)
    return changes


def _promotion(store: ObjectStore, run: RunSummary) -> dict[str, Any] | None:
    if "promote" not in run.committed:
        return None
    try:
        return Run(store, RunLayout(run.key)).read_json("promote", "promotion")
    except DAMAGE:
        return None
