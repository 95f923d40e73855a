"""Every setting a user can give a run, declared once.

A setting is a field of the DAG's trigger form and a field of one or more stage configs
(its ``targets``, such as ``train.batch_size``). Here it gets its name, title, form
section, description and bounds or choices; its type and default are the stage config's
field's, so each is written once. The DAG's ``Param``s (:func:`param_schemas`),
:func:`melanoma.params.from_params` and the configuration page (``docs/configuration.md``,
``python -m melanoma.settings``) are all made from :data:`SETTINGS`, and
``tests/unit/test_settings.py`` fails if a target's default or bounds disagree.

Adding a setting: one :class:`Setting` below, and its use in the stage that reads it.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any

from melanoma.backbones import BACKBONE_NAMES
from melanoma.config import (
    CAM_METHODS,
    FEATURE_DEPTHS,
    HEADS,
    IMBALANCE_STRATEGIES,
    OPERATING_POINTS,
    PRECISIONS,
    PROBABILITY_CALIBRATIONS,
    SCHEDULES,
    ExplainConfig,
    ExternalSetParams,
    PipelineConfig,
    PreprocessParams,
    RobustnessConfig,
    TrainConfig,
)
from melanoma.evaluation import EvaluationConfig
from melanoma.ham10000 import LABEL_TASKS, SOURCES
from melanoma.images import INTERPOLATIONS, PreprocessConfig
from melanoma.profiles import FOLLOWS, PROFILE_CHOICES, PROFILED, PROFILES
from melanoma.promotion import PromotionPolicy

# The stage configs a setting can target, by the path from_params builds them under.
STAGE_CONFIGS: dict[str, type] = {
    "pipeline": PipelineConfig,
    "preprocess": PreprocessParams,
    "preprocess.config": PreprocessConfig,
    "train": TrainConfig,
    "evaluation": EvaluationConfig,
    "explain": ExplainConfig,
    "robustness": RobustnessConfig,
    "promotion": PromotionPolicy,
    "external": ExternalSetParams,
}

# The trigger form's sections, in the order the form shows them.
DATA, PREPROCESSING, MODEL, TRAINING = "Data", "Preprocessing", "Model", "Training"
EVALUATION, EXPLANATION, PROMOTION = "Evaluation", "Explanation", "Promotion"
EXTERNAL = "External validation"
SECTIONS = (DATA, PREPROCESSING, MODEL, TRAINING, EVALUATION, EXPLANATION, PROMOTION, EXTERNAL)

_KINDS = {bool: "boolean", int: "integer", float: "number", str: "string", tuple: "array"}


@dataclass(frozen=True)
class Setting:
    """One setting: a form field, and the stage config fields (``targets``) it sets.

    ``environment``: the variable that sets it when the field is left empty (the form's
    default is then empty, so a trigger never overrides the workers' environment).
    ``default``: only for a setting with no target (it switches a stage on or off).
    ``schema``: JSON-schema bounds and choices (``minimum``, ``enum``, ``items``, …).
    """

    name: str
    title: str
    section: str
    targets: tuple[str, ...]
    description: str = ""
    environment: str | None = None
    kind: str | None = None  # the JSON-schema type, where the default does not say it
    default: Any = None
    schema: dict[str, Any] = dataclasses.field(default_factory=dict)

    def target_default(self, target: str) -> Any:
        owner, name = target.rsplit(".", 1)
        field = {f.name: f for f in dataclasses.fields(STAGE_CONFIGS[owner])}[name]
        if field.default is not dataclasses.MISSING:
            return field.default
        if field.default_factory is not dataclasses.MISSING:
            return field.default_factory()
        raise ValueError(f"{target} has no default: a setting's target needs one")

    @property
    def config_default(self) -> Any:
        """The default the stage configs give it (the first target's)."""
        return self.target_default(self.targets[0]) if self.targets else self.default

    @property
    def profiled(self) -> bool:
        """Whether the hardware profile (``melanoma.profiles``) supplies it when left empty."""
        return self.name in PROFILED

    @property
    def fallback(self) -> str:
        """What an empty field means, in words (empty string: it cannot be left empty)."""
        if self.profiled:
            values = ", ".join(f"`{p}`: `{_plain(PROFILES[p][self.name])}`" for p in PROFILES)
            last = f"the profile's ({values})"
            if self.name in FOLLOWS:
                last += f"; `{_plain(self.config_default)}` when `{FOLLOWS[self.name]}` is given"
        else:
            last = f"`{_plain(self.config_default)}`"
        if self.environment:
            return f"the workers' `{self.environment}`, else {last}"
        return last if self.profiled else ""

    @property
    def form_default(self) -> Any:
        """What the form shows: empty for a setting the environment or the profile
        supplies, and for one whose default is the empty string (off)."""
        if self.environment or self.profiled or self.config_default == "":
            return None
        value = self.config_default
        return list(value) if isinstance(value, tuple) else value

    @property
    def optional(self) -> bool:
        return self.form_default is None

    def json_schema(self) -> dict[str, Any]:
        """The field's JSON schema for Airflow's ``Param`` (without title and section).
        Optional fields take null too, so the form never marks them required."""
        kind = self.kind or _KINDS.get(type(self.config_default), "string")
        schema = {**self.schema, "type": ["null", kind] if self.optional else kind}
        if self.optional and "enum" in schema:
            schema["enum"] = [None, *schema["enum"]]
        description = self.description
        if self.fallback:
            description = f"{description} **Empty:** {self.fallback}.".strip()
        if description:
            schema["description_md"] = description
        return schema

    def convert(self, value: Any) -> Any:
        """A form value as its stage config field takes it (a JSON array as a tuple)."""
        return tuple(value) if isinstance(self.config_default, tuple) else value


def _setting(
    name: str,
    title: str,
    section: str,
    *targets: str,
    description: str = "",
    environment: str | None = None,
    kind: str | None = None,
    default: Any = None,
    **schema: Any,
) -> Setting:
    return Setting(name, title, section, targets, description, environment, kind, default, schema)


SETTINGS: tuple[Setting, ...] = (
    # --- data ---------------------------------------------------------------------
    _setting(
        "source",
        "HAM10000 source",
        DATA,
        "pipeline.source",
        description="Where to get HAM10000: `dataverse`, `dataverse:<url>`, an http(s) "
        "mirror URL, or a folder on the workers.",
        environment="HAM10000_SOURCE",
    ),
    _setting(
        "min_image_share",
        "Least share of metadata rows with an image",
        DATA,
        "pipeline.min_image_share",
        description="Ingest fails below it: an archive with empty or cut-short image zips "
        "is refused.",
        minimum=0,
        maximum=1,
    ),
    _setting("label_task", "Label task", DATA, "pipeline.label_task", enum=sorted(LABEL_TASKS)),
    _setting(
        "split_seed",
        "Split seed",
        DATA,
        "pipeline.seed",
        "preprocess.seed",
        "train.seed",
        "evaluation.seed",
        "explain.seed",
        "robustness.seed",
        description="Seeds the split, augmentation, training, the bootstrap, Grad-CAM's "
        "random sample and the robustness sample.",
        minimum=0,
    ),
    _setting(
        "holdout_source",
        "Held-out source (unseen clinic)",
        DATA,
        "pipeline.holdout_source",
        description="**Empty:** the usual split of all sources. Otherwise a source of "
        "HAM10000's `dataset` column: train and validate without it, test on it alone. "
        "Such a run is an estimate, never promoted.",
        kind="string",
        examples=list(SOURCES),
    ),
    # --- preprocessing ----------------------------------------------------------------
    _setting(
        "image_size",
        "Model input size (pixels)",
        PREPROCESSING,
        "preprocess.config.size",
        description="The height, and the width unless `image_width` is set.",
        minimum=32,
        maximum=1024,
    ),
    _setting(
        "image_width",
        "Model input width (pixels)",
        PREPROCESSING,
        "preprocess.config.width",
        description="**0:** `image_size` (square). HAM10000's images are 4:3: `image_size` "
        "150 with width 200 trains at the archive's own aspect and resolution, on 0.6 of "
        "224x224's pixels. A non-square input takes 1, 2 or 4 test-time and cached views.",
        minimum=0,
        maximum=1024,
    ),
    _setting(
        "interpolation",
        "Resize interpolation",
        PREPROCESSING,
        "preprocess.config.interpolation",
        enum=sorted(INTERPOLATIONS),
    ),
    _setting(
        "hair_removal",
        "Hair removal (black-hat + inpainting)",
        PREPROCESSING,
        "preprocess.config.hair_removal",
    ),
    _setting("lesion_crop", "Lesion-centred crop", PREPROCESSING, "preprocess.config.lesion_crop"),
    _setting(
        "color_constancy",
        "Colour constancy (Shades of Gray, p = 6)",
        PREPROCESSING,
        "preprocess.config.color_constancy",
        description="Applied the same way in preprocessing and in `melanoma-predict`.",
    ),
    _setting(
        "augment_copies",
        "Augmented copies per minority-class training image",
        PREPROCESSING,
        "preprocess.augment_copies",
        minimum=0,
        maximum=20,
    ),
    # --- model ------------------------------------------------------------------------
    _setting(
        "profile",
        "Hardware profile",
        MODEL,
        "pipeline.profile",
        description="The defaults that fit the machine that trains (the table under "
        "Profiles). `auto`: `gpu` when TensorFlow on the training worker sees a GPU, else "
        "`cpu`. A setting given here always wins over the profile.",
        enum=list(PROFILE_CHOICES),
    ),
    _setting(
        "backbone",
        "Backbone",
        MODEL,
        "pipeline.backbone",
        "train.backbone",
        environment="MELANOMA_BACKBONE",
        enum=list(BACKBONE_NAMES),
    ),
    _setting(
        "pretrained_weights",
        "Pretrained weights",
        MODEL,
        "pipeline.pretrained_weights",
        description="`keras` (download), `none`, a file path on the workers or an https URL.",
        environment="MELANOMA_PRETRAINED_WEIGHTS",
    ),
    _setting(
        "head",
        "Classifier head",
        MODEL,
        "train.head",
        description="`binary`: one sigmoid for the label task. `multiclass`: a softmax over "
        "the seven diagnoses, scored as the sum of the task's positive classes.",
        enum=list(HEADS),
    ),
    _setting(
        "multiscale_features",
        "Multiscale features",
        MODEL,
        "train.multiscale_features",
        description="The pooled maps of earlier backbone layers join those of the layer the "
        "head pools (finer texture).",
    ),
    _setting(
        "feature_depth",
        "Feature depth",
        MODEL,
        "train.feature_depth",
        description="Where the head reads the backbone. `last`: its last layer. `mid`: the "
        "backbone is cut at a mid-level layer (MobileNetV2: block 13; ResNet50: stage 4): "
        "a smaller model, level with the cpu profile at unseen clinics (docs/results.md).",
        enum=list(FEATURE_DEPTHS),
    ),
    _setting(
        "metadata_fusion",
        "Metadata fusion (age, sex, body site)",
        MODEL,
        "train.metadata_fusion",
        description="Joined to the image features. Images without metadata (predict, "
        "external sets) still score, and their predictions say so.",
    ),
    _setting(
        "metadata_dropout",
        "Metadata dropout",
        MODEL,
        "train.metadata_dropout",
        description="The chance a training image's metadata is hidden, so that the model "
        "also learns without it.",
        minimum=0,
        exclusiveMaximum=1,
    ),
    # --- training ---------------------------------------------------------------------
    _setting(
        "phase1_epochs",
        "Epochs, phase 1 (frozen backbone)",
        TRAINING,
        "train.phase1_epochs",
        minimum=0,
    ),
    _setting(
        "phase1_learning_rate",
        "Learning rate, phase 1",
        TRAINING,
        "train.phase1_learning_rate",
        exclusiveMinimum=0,
    ),
    _setting(
        "phase2_epochs",
        "Epochs, phase 2 (fine-tuning)",
        TRAINING,
        "train.phase2_epochs",
        description="0: no fine-tuning (phase 1's head only).",
        minimum=0,
    ),
    _setting(
        "unfreeze_blocks",
        "Backbone blocks unfrozen in phase 2",
        TRAINING,
        "train.unfreeze_blocks",
        minimum=0,
    ),
    _setting(
        "phase2_learning_rate",
        "Learning rate, phase 2",
        TRAINING,
        "train.phase2_learning_rate",
        exclusiveMinimum=0,
    ),
    _setting(
        "phase2_schedule",
        "Learning-rate schedule, phase 2",
        TRAINING,
        "train.phase2_schedule",
        enum=list(SCHEDULES),
    ),
    _setting(
        "phase2_cached_views",
        "Phase 2 on a cached trunk: views per image",
        TRAINING,
        "train.phase2_cached_views",
        description="Runs the frozen part of the backbone once per image and per each of "
        "this many flips and rotations, and fine-tunes the unfrozen blocks on that cache: "
        "far less compute per epoch, at the cost of online augmentation's zoom and colour "
        "changes. 0: the whole model on online-augmented images.",
        enum=[0, 1, 2, 4, 8],
    ),
    _setting(
        "acquisition_views",
        "Acquisition-shift copies per training image",
        TRAINING,
        "train.acquisition_views",
        description="Each copy shows the image under one random shift of the robustness "
        "yardstick (resolution, JPEG, blur, noise, colour cast, exposure, contrast, gamma, "
        "vignetting). On a CPU, phase 1 extracts their features too: each copy costs one "
        "more pass of the backbone over the training split. Phase 2 shows a share "
        "copies/(copies+1) of its images (or of each cached view) shifted. 0: off.",
        minimum=0,
        maximum=8,
    ),
    _setting("batch_size", "Batch size", TRAINING, "train.batch_size", minimum=1),
    _setting(
        "precision",
        "Numeric precision",
        TRAINING,
        "train.precision",
        description="`auto`: `mixed_float16` on a GPU (with loss scaling), `float32` on a CPU. "
        "`mixed_bfloat16` runs on CPUs with bfloat16 kernels, but was slower than float32 "
        "on the CPUs measured. The head's output is float32 under every policy.",
        enum=list(PRECISIONS),
    ),
    _setting(
        "early_stopping_patience",
        "Early-stopping patience (epochs)",
        TRAINING,
        "train.patience",
        minimum=1,
    ),
    _setting(
        "imbalance",
        "Class-imbalance strategy",
        TRAINING,
        "train.imbalance",
        description="`oversample` uses preprocessing's augmented copies; the others ignore them.",
        enum=list(IMBALANCE_STRATEGIES),
    ),
    _setting(
        "class_weight",
        "Class weights",
        TRAINING,
        "train.class_weight",
        description="`balanced`, or `w0,w1` such as `0.5,28.5`.",
    ),
    _setting(
        "label_smoothing",
        "Label smoothing",
        TRAINING,
        "train.label_smoothing",
        minimum=0,
        exclusiveMaximum=0.5,
    ),
    # --- evaluation -------------------------------------------------------------------
    _setting(
        "tta_views",
        "Test-time augmentation views",
        EVALUATION,
        "train.tta_views",
        description="Flips and 90-degree rotations, averaged at validation, test, external "
        "sets and predict.",
        enum=[1, 2, 4, 8],
    ),
    _setting(
        "target_sensitivity",
        "Target sensitivity",
        EVALUATION,
        "evaluation.target_sensitivity",
        description="Its threshold is the highest one that reaches this sensitivity on "
        "**validation**.",
        exclusiveMinimum=0,
        maximum=1,
    ),
    _setting(
        "operating_point",
        "Operating threshold",
        EVALUATION,
        "explain.operating_point",
        "promotion.operating_point",
        description="The threshold that the promotion rule, the report and "
        "`melanoma-predict` treat as the decision.",
        enum=list(OPERATING_POINTS),
    ),
    _setting(
        "probability_calibration",
        "Probability calibration",
        EVALUATION,
        "evaluation.probability_calibration",
        enum=list(PROBABILITY_CALIBRATIONS),
    ),
    _setting(
        "bootstrap_replicates",
        "Bootstrap replicates (lesion resampling)",
        EVALUATION,
        "evaluation.bootstrap_replicates",
        minimum=100,
    ),
    _setting(
        "robustness_images",
        "Robustness: test images",
        EVALUATION,
        "robustness.images",
        description="A sample of the test split (whole lesions, its prevalence kept) "
        "re-rendered under each acquisition shift: scaling, JPEG, blur, noise, colour "
        "cast, brightness, contrast, gamma, vignetting. One AUROC per shift goes in the "
        "report. 0 turns it off.",
        minimum=0,
    ),
    _setting(
        "robustness_strengths",
        "Robustness: shift strengths",
        EVALUATION,
        "robustness.strengths",
        description="Each shift's strengths, in (0, 1]: 0 would be the image unchanged, 1 "
        "the strongest.",
        items={"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        minItems=1,
    ),
    # --- explanation ------------------------------------------------------------------
    _setting(
        "gradcam_per_outcome",
        "Grad-CAM: images per outcome",
        EXPLANATION,
        "explain.per_outcome",
        description="The most confident true and false positives and negatives are explained.",
        minimum=0,
    ),
    _setting(
        "gradcam_random",
        "Grad-CAM: random test images",
        EXPLANATION,
        "explain.random_count",
        minimum=0,
    ),
    _setting(
        "gradcam_method",
        "Grad-CAM variant",
        EXPLANATION,
        "explain.method",
        enum=list(CAM_METHODS),
    ),
    # --- promotion --------------------------------------------------------------------
    _setting(
        "promotion_auroc_margin",
        "Promotion margin",
        PROMOTION,
        "promotion.auroc_margin",
        description="Promote when AUROC on the promotion benchmark (images in no run's "
        "split) is not below the champion's by more than this.",
        minimum=0,
        maximum=1,
    ),
    _setting(
        "sensitivity_floor",
        "Sensitivity floor",
        PROMOTION,
        "promotion.sensitivity_floor",
        description="The test sensitivity at the operating threshold that a champion must reach.",
        minimum=0,
        maximum=1,
    ),
    # --- external validation ----------------------------------------------------------
    _setting(
        "external_validation",
        "External validation",
        EXTERNAL,
        description="Also evaluate the run's model on an external labelled set.",
        default=False,
    ),
    _setting(
        "external_images",
        "External set: images",
        EXTERNAL,
        "external.images",
        description="`isic2018` (the ISIC 2018 Task 3 test set, from Dataverse), or a "
        "folder or zip on the workers.",
    ),
    _setting(
        "external_labels",
        "External set: labels CSV",
        EXTERNAL,
        "external.labels",
        description="For a local set: ISIC 2018 one-hot, HAM10000 metadata (`image_id`, "
        "`dx`) or binary (`image_id`, `melanoma`) format. **Empty** for `isic2018`.",
        kind="string",
    ),
    _setting(
        "external_name",
        "External set: name",
        EXTERNAL,
        "external.name",
        description="Its name in the store and the report. **Empty:** `isic2018`, or the "
        "labels file's name without `.csv`.",
        kind="string",
    ),
)


# The environment of the workers and of `make run`, beyond the settings' own variables:
# name, default and what it does (read where it is used; listed here for the docs).
ENVIRONMENT_VARIABLES: tuple[tuple[str, str, str], ...] = (
    ("MELANOMA_STORE_URL", "embedded: `file://<repo>/.store`", "the object store"),
    ("MELANOMA_CACHE_DIR", "embedded: `<repo>/.cache`", "downloads and unpacked sets"),
    ("MELANOMA_PRETRAINED_SHA256", "empty", "the sha256 of a user-supplied weights file"),
    (
        "MELANOMA_WEIGHTS_DIR",
        "`<MELANOMA_CACHE_DIR>/weights`",
        "where `keras` weights are fetched to (the Airflow image: `/opt/melanoma/weights`, "
        "ResNet50 pre-fetched)",
    ),
    ("MELANOMA_PHASE2_CACHE_GB", "`6`", "a larger phase-2 cache falls back to the whole model"),
    (
        "MELANOMA_MAX_IMAGE_PIXELS",
        "`50000000`",
        "an image whose header claims more is refused before decoding",
    ),
    ("MELANOMA_MIN_IMAGE_SIDE", "`32`", "an image smaller a side is refused"),
    (
        "MELANOMA_MAX_MEMBER_BYTES",
        "`536870912`",
        "512 MiB: a zip member or source file larger is not read",
    ),
    (
        "MELANOMA_MAX_COMPRESSION_RATIO",
        "`100`",
        "a zip member over 8 MiB compressed more is not unpacked",
    ),
    ("MELANOMA_TF_THREADS", "every core of the process's CPU affinity", "TensorFlow's threads"),
    (
        "MELANOMA_SCHEDULE",
        "`@weekly`",
        "a cron expression or preset; `none`: retrain only on a new dataset version",
    ),
    (
        "MELANOMA_DATASET_CHECK_SCHEDULE",
        "`@daily`",
        "how often `ham10000_new_version` checks the source",
    ),
    (
        "MELANOMA_SPARK_JOBS_DIR",
        "`spark_jobs/` beside `dags/`",
        "the Airflow image sets `/opt/melanoma/spark_jobs`",
    ),
    (
        "SPARK_DRIVER_HOST",
        "unset",
        "compose: `auto`, the address of the worker container running the task",
    ),
    (
        "S3_ENDPOINT_URL, S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION",
        "`http://127.0.0.1:9000`, -, -, `us-east-1`",
        "the S3 endpoint and its credentials",
    ),
    (
        "S3_CONNECT_TIMEOUT_S, S3_READ_TIMEOUT_S, S3_RETRIES",
        "`10`, `60`, `3`",
        "every S3 call",
    ),
    (
        "S3_LOCK_LEASE_S",
        "`900`",
        "after this long a lock left by a dead holder is taken over",
    ),
    ("MELANOMA_RETRY_DELAY_S", "`60`", "seconds before Airflow retries a failed task; twice"),
    (
        "MELANOMA_UI_HOST",
        "`127.0.0.1`",
        "where `make ui` serves the Airflow UI; `0.0.0.0` opens it to the network",
    ),
    ("MELANOMA_UI_PORT", "`8080`", "the Airflow UI of `make ui`, and of `make run` while it runs"),
)


def _refusal(schema: dict[str, Any], value: Any) -> str | None:
    """Why ``value`` breaks ``schema``'s bounds or choices; None when it keeps them."""
    if "enum" in schema and value not in schema["enum"]:
        return f"must be one of {', '.join(map(str, schema['enum']))}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    for key, holds, words in (
        ("minimum", lambda v, b: v >= b, "at least"),
        ("exclusiveMinimum", lambda v, b: v > b, "above"),
        ("maximum", lambda v, b: v <= b, "at most"),
        ("exclusiveMaximum", lambda v, b: v < b, "below"),
    ):
        if key in schema and not holds(value, schema[key]):
            return f"must be {words} {schema[key]}"
    return None


def check_config(config: Any) -> None:
    """ValueError naming the setting when a field of ``config`` (a stage config) is
    outside the bounds or choices its setting declares."""
    owners = [path for path, kind in STAGE_CONFIGS.items() if isinstance(config, kind)]
    for setting in SETTINGS:
        for target in setting.targets:
            owner, field = target.rsplit(".", 1)
            if owner not in owners:
                continue
            value = getattr(config, field)
            if value is None:
                continue
            values = value if isinstance(value, tuple) else (value,)
            schema = setting.schema.get("items", setting.schema)
            if isinstance(value, tuple) and len(value) < setting.schema.get("minItems", 0):
                raise ValueError(f"{setting.name} ({target}) needs at least one value")
            for each in values:
                if (why := _refusal(schema, each)) is not None:
                    raise ValueError(f"{setting.name} ({target}) {why}, got {each!r}")


def param_schemas() -> dict[str, tuple[Any, dict[str, Any]]]:
    """name -> (default, JSON schema with title and section): what the DAG makes each
    ``Param`` from (this module never imports Airflow)."""
    return {
        s.name: (s.form_default, {"title": s.title, "section": s.section, **s.json_schema()})
        for s in SETTINGS
    }


def _plain(value: Any) -> str:
    """A value as JSON spells it (true, not True), for descriptions."""
    if isinstance(value, bool):
        return str(value).lower()
    return str(list(value) if isinstance(value, tuple) else value)


def _cell(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{_plain(value)}`"


def _bounds(setting: Setting) -> str:
    schema = setting.schema
    parts = []
    if "enum" in schema:
        parts.append(", ".join(f"`{v}`" for v in schema["enum"]))
    for key, sign in (
        ("minimum", "≥"),
        ("exclusiveMinimum", ">"),
        ("maximum", "≤"),
        ("exclusiveMaximum", "<"),
    ):
        if key in schema:
            parts.append(f"{sign} {schema[key]}")
    if "items" in schema:
        items = schema["items"]
        parts.append(f"each in ({items['exclusiveMinimum']}, {items['maximum']}]")
    return "; ".join(parts)


def configuration_markdown() -> str:
    """The configuration page (``docs/configuration.md``), one table per form section."""
    lines = [
        "# Configuration",
        "",
        "<!-- Generated by `python -m melanoma.settings > docs/configuration.md` from",
        "     melanoma.settings; tests/unit/test_settings.py fails when it is stale. -->",
        "",
        "Research use only, not a diagnostic device.",
        "",
        "Every setting is a field of the DAG's trigger form, in the section named here, and",
        "can be given to `make run` as JSON (`make run CONF='{\"phase1_epochs\": 40}'`).",
        "Each sets the stage config fields in the last column; the stage configs refuse a",
        "value outside the bounds given here.",
        "",
        "Params override the environment, which overrides the stage configs' defaults. A",
        "param left empty in the form (`source`, `backbone`, `pretrained_weights`) is",
        "resolved from the environment of the worker that runs the task: no default in the",
        "form comes from the machine that parsed the DAG. The split task records what it",
        "resolved, and every stage's resolved configuration, in `runs/<run key>/config.json`",
        "(shown in the report); every task after it reads the recorded values, so that one",
        "run uses one backbone and one source even if workers' environments differ.",
        "(`store_pretrained_weights` and `download_dataset` run before the split and resolve",
        "for themselves; under compose every Airflow service takes the same environment.)",
        "",
        "Adding a setting: one `Setting` in `melanoma.settings` (its targets, title, section,",
        "bounds) plus its use in the stage; then regenerate this page.",
        "",
    ]
    for section in SECTIONS:
        lines += _section_table(section)
    lines += [
        *_profiles_table(),
        "## Environment",
        "",
        "Read by the workers and by `make run`; under compose every Airflow service takes",
        "the same environment. The settings' own variables are in the tables above.",
        "",
        "| variable | default | what it does |",
        "| --- | --- | --- |",
        *(f"| `{name}` | {default} | {what} |" for name, default, what in ENVIRONMENT_VARIABLES),
        "",
    ]
    return "\n".join(lines)


def _section_table(section: str) -> list[str]:
    """One form section's settings, as a Markdown table."""
    lines = [
        f"## {section}",
        "",
        "| setting | default | allowed | what it does | sets |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in (s for s in SETTINGS if s.section == section):
        what = f"{s.title}." + (f" {s.description}" if s.description else "")
        if s.fallback:
            what += f" Empty: {s.fallback}."
        targets = ", ".join(f"`{t}`" for t in s.targets) or "(switches the stage on)"
        lines.append(
            f"| `{s.name}` | {_cell(s.form_default)} | {_bounds(s)} | "
            f"{what.replace('|', '/')} | {targets} |"
        )
    return [*lines, ""]


def _profiles_table() -> list[str]:
    """Each profile's value of each setting it sets, as a Markdown table."""
    return [
        "## Profiles",
        "",
        "A setting left empty in the form takes the profile's value (`melanoma.profiles`);",
        "`make run` prints the profile it ran and why, and the report shows it.",
        "",
        "| setting | " + " | ".join(f"`{p}`" for p in PROFILES) + " |",
        "| --- |" + " --- |" * len(PROFILES),
        *(
            f"| `{name}` | " + " | ".join(_cell(PROFILES[p][name]) for p in PROFILES) + " |"
            for name in sorted(PROFILED)
        ),
        "",
    ]


if __name__ == "__main__":
    sys.stdout.write(configuration_markdown())
