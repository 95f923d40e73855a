"""The object store's layout: the one module that knows where every artifact lives.

Every other module asks a layout for a key; none builds one itself (a test greps for it).

::

    datasets/ham10000/<version>/            DatasetLayout: one ingested HAM10000 version
        images/<id>.jpg, masks/<id>_segmentation.png, metadata.csv
        MANIFEST.json                       last: each file's size and sha256
    runs/<run key>/                         RunLayout: one pipeline run
        config.json                         the run id and its configuration (claims the prefix)
        splits.csv, splits_summary.json                        stage split
        preprocessed/<split>/part-NNNNN.parquet, stats.json    stage preprocess
        model/model.keras, history.json, training_config.json, ood.npz  stage train
        model/checkpoints/<phase>.{weights.h5,json}            (resumption state, not committed)
        predictions/{val,test}.csv                             stage train
        calibration.json                                       stage calibrate
        evaluation/metrics.json, evaluation/figures/*.png      stage evaluate
        gradcam/<outcome>/<id>.png, index.csv, summary.json    stage explain
        external/<set>/predictions.csv, not_scored.csv, metrics.json, figures/*.png
                                                               stage external/<set>
        promotion.json                                         stage promote
        report.html                                            stage report
        commits/<stage>.json                last in each stage: its artifacts' sizes and sha256s
    champions/<label task>/champion.json, previous/<run key>.json
    pretrained/<backbone>_imagenet_notop<suffix> (+ .json: its sha256 record)

A run id maps to its key injectively (:func:`run_key`): the id itself where it is a safe
key segment, else a readable cleaned form plus a short hash of the raw id.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

DATASETS = "datasets/ham10000"
RUNS = "runs"
CHAMPIONS = "champions"
PRETRAINED = "pretrained"

# Stages that commit artifacts, in pipeline order; external sets commit as external/<set>.
STAGES = (
    "split",
    "preprocess",
    "train",
    "calibrate",
    "evaluate",
    "robustness",
    "explain",
    "promote",
    "report",
)

# A key segment we write without change: what a safe run id or set name looks like.
SAFE_SEGMENT = re.compile(r"^(?!\.+$)[A-Za-z0-9._-]{1,128}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def run_key(run_id: str) -> str:
    """The run's key under ``runs/``: injective, readable where possible.

    A run id that is already a safe segment is its own key. Otherwise the cleaned id
    gets ``~`` and 10 hex digits of the raw id's sha256: ``manual__2026-01-01T00:00:00+00:00``
    and ``manual__2026-01-01T00_00_00_00_00`` no longer share a prefix. ``~`` never occurs in
    a safe id, so a hashed key cannot equal another id's plain key.
    """
    if not run_id:
        raise ValueError("empty run id")
    if SAFE_SEGMENT.match(run_id):
        return run_id
    cleaned = _UNSAFE.sub("_", run_id).strip("._")[:100] or "run"
    return f"{cleaned}~{hashlib.sha256(run_id.encode()).hexdigest()[:10]}"


RUN_KEY = re.compile(r"^(?!\.+$)[A-Za-z0-9._-]{1,128}(~[0-9a-f]{10})?$")


def check_run_key(key: str) -> str:
    """``key`` if it is a run key (what :func:`run_key` produces); else ValueError."""
    if not RUN_KEY.match(key):
        raise ValueError(f"{key!r} is not a run key (letters, digits, '.', '_', '-')")
    return key


def set_name(name: str) -> str:
    """An external set's name as a key segment; names are the user's, so refuse, never rewrite."""
    if not SAFE_SEGMENT.match(name):
        raise ValueError(
            f"external set name {name!r}: use letters, digits, '.', '_' and '-' only "
            "(e.g. --name ph2)"
        )
    return name


@dataclass(frozen=True)
class DatasetLayout:
    """One ingested HAM10000 version."""

    version: str

    @property
    def prefix(self) -> str:
        return f"{DATASETS}/{self.version}"

    @property
    def manifest(self) -> str:
        return f"{self.prefix}/MANIFEST.json"

    @property
    def metadata(self) -> str:
        return self.file("metadata.csv")

    def file(self, relative: str) -> str:
        """A file of the version by its path inside it (``images/ISIC_0024306.jpg``)."""
        return f"{self.prefix}/{relative}"

    @staticmethod
    def image_relative(image_id: str, suffix: str) -> str:
        return f"images/{image_id}{suffix}"

    @staticmethod
    def mask_relative(image_id: str) -> str:
        return f"masks/{image_id}_segmentation.png"

    @staticmethod
    def quarantine_relative(container: str, member: str) -> str:
        return f"quarantine/{container}/{member}"


def _artifact(*parts: str) -> property:
    """A run artifact's key as a read-only property: ``runs/<run key>/<parts>``."""
    return property(lambda layout: layout._at(*parts))


@dataclass(frozen=True)
class RunLayout:
    """One run's keys. ``RunLayout.for_run_id(id)`` or ``RunLayout(key)`` for a stored key."""

    key: str

    def __post_init__(self) -> None:
        check_run_key(self.key)

    @classmethod
    def for_run_id(cls, run_id: str) -> RunLayout:
        return cls(run_key(run_id))

    @classmethod
    def from_prefix(cls, prefix: str) -> RunLayout:
        """The layout of ``runs/<key>`` (a trailing '/' allowed)."""
        head, _, key = prefix.rstrip("/").partition("/")
        if head != RUNS:
            raise ValueError(f"{prefix!r} is not a run prefix (runs/<key>)")
        return cls(key)

    @property
    def prefix(self) -> str:
        return f"{RUNS}/{self.key}"

    def _at(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts))

    # The fixed artifacts, by stage: each a property, runs/<key>/<path>.
    config = _artifact("config.json")  # split; its run id claims the prefix
    splits = _artifact("splits.csv")
    splits_summary = _artifact("splits_summary.json")
    promotion_benchmark = _artifact("promotion_benchmark.csv")  # in no split; see splits.py
    preprocessed = _artifact("preprocessed")  # preprocess: shards below, stats.json
    preprocess_stats = _artifact("preprocessed", "stats.json")
    model = _artifact("model", "model.keras")  # train
    history = _artifact("model", "history.json")
    training_config = _artifact("model", "training_config.json")
    ood = _artifact("model", "ood.npz")  # the out-of-distribution detector (melanoma.ood)
    calibration = _artifact("calibration.json")  # calibrate
    metrics = _artifact("evaluation", "metrics.json")  # evaluate
    robustness = _artifact("evaluation", "robustness.json")  # robustness
    gradcam = _artifact("gradcam")  # explain: images below, index.csv, summary.json
    gradcam_index = _artifact("gradcam", "index.csv")
    gradcam_summary = _artifact("gradcam", "summary.json")
    external = _artifact("external")  # external/<set>: one folder per set
    promotion = _artifact("promotion.json")  # promote
    promotion_scores = _artifact("promotion_scores.csv")  # both models on the benchmark
    report = _artifact("report.html")  # report
    commits = _artifact("commits")  # one record per stage

    def shard(self, split: str, index: int) -> str:
        return self._at("preprocessed", split, f"part-{index:05d}.parquet")

    def checkpoint(self, phase: str) -> tuple[str, str, str]:
        """A training phase's checkpoint keys: (last weights, best weights, state)."""
        return (
            self._at("model", "checkpoints", f"{phase}.weights.h5"),
            self._at("model", "checkpoints", f"{phase}.best.npz"),
            self._at("model", "checkpoints", f"{phase}.json"),
        )

    def predictions(self, split: str) -> str:
        return self._at("predictions", f"{split}.csv")

    def figure(self, name: str) -> str:
        return self._at("evaluation", "figures", f"{name}.png")

    def gradcam_image(self, selected_as: str, image_id: str) -> str:
        return self._at("gradcam", selected_as, f"{image_id}.png")

    def external_file(self, name: str, filename: str) -> str:
        """``predictions.csv``, ``not_scored.csv`` or ``metrics.json`` of external set ``name``."""
        return self._at("external", set_name(name), filename)

    def external_figure(self, name: str, figure: str) -> str:
        return self._at("external", set_name(name), "figures", f"{figure}.png")

    # commit records
    def commit(self, stage: str) -> str:
        """The commit record of ``stage`` (``external/<set>`` for an external set)."""
        name, _, external = stage.partition("/")
        if name == "external" and external:
            return self._at("commits", "external", f"{set_name(external)}.json")
        if name not in STAGES or external:
            raise ValueError(f"unknown stage {stage!r}; stages are {STAGES} and external/<set>")
        return self._at("commits", f"{name}.json")

    def legacy_manifest(self, stage: str) -> str:
        """Where the first layout kept the train or preprocess manifest (for migration)."""
        return self._at({"train": "model", "preprocess": "preprocessed"}[stage], "MANIFEST.json")

    def artifact(self, relative: str) -> str:
        """The key of ``relative`` (``evaluation/metrics.json``) inside the run's prefix."""
        parts = relative.split("/")
        if not relative or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"{relative!r} is not a path inside a run")
        return self._at(*parts)


def champion_key(label_task: str) -> str:
    return f"{CHAMPIONS}/{label_task}/champion.json"


def previous_champion_key(label_task: str, run_id: str) -> str:
    return f"{CHAMPIONS}/{label_task}/previous/{run_key(run_id)}.json"


def pretrained_weights_key(backbone: str, filename: str) -> str:
    """Where a backbone's ImageNet weights file is kept; its suffix is the file's."""
    suffix = ".weights.h5" if filename.endswith(".weights.h5") else PurePosixPath(filename).suffix
    return f"{PRETRAINED}/{backbone}_imagenet_notop{suffix}"


def record_of(key: str) -> str:
    """The JSON record kept beside an object (its source and sha256)."""
    return f"{key}.json"
