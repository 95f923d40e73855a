"""One declaration per setting (melanoma.settings): the DAG's form, from_params, the stage
configs' defaults and bounds, and the configuration page may not disagree."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from melanoma.params import from_params
from melanoma.settings import (
    SETTINGS,
    STAGE_CONFIGS,
    Setting,
    configuration_markdown,
    param_schemas,
)

ROOT = Path(__file__).resolve().parents[2]


def _config(owner: str, **fields):
    """The stage config ``owner`` with ``fields`` (a PreprocessParams needs its own)."""
    return STAGE_CONFIGS[owner](**fields) if owner != "external" else None


def _bounded(setting: Setting) -> list[tuple[object, bool]]:
    """Values at and just past each declared bound or choice: (value, allowed)."""
    schema = setting.schema.get("items", setting.schema)
    if "enum" in schema:
        return [(v, True) for v in schema["enum"]] + [("not-a-choice", False)]
    cases = []
    step = 1 if isinstance(setting.config_default, int) else 1e-3
    for key, allowed_at, past in (
        ("minimum", True, -step),
        ("exclusiveMinimum", False, -step),
        ("maximum", True, step),
        ("exclusiveMaximum", False, step),
    ):
        if key in schema:
            bound = schema[key]
            inside = bound if allowed_at else bound - past
            cases += [(inside, True), (bound + past, False)]
    return cases


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_target_of_a_setting_has_its_default(setting):
    defaults = {target: setting.target_default(target) for target in setting.targets}
    assert len({json.dumps(v) for v in defaults.values()}) <= 1, defaults


@pytest.mark.parametrize(
    "setting",
    [s for s in SETTINGS if s.targets and _bounded(s)],
    ids=lambda s: s.name,
)
def test_the_stage_configs_hold_each_setting_to_its_declared_bounds(setting):
    for target in setting.targets:
        owner, field = target.rsplit(".", 1)
        if owner == "external":
            continue
        for value, allowed in _bounded(setting):
            given = (value,) if isinstance(setting.config_default, tuple) else value
            if allowed:
                assert getattr(_config(owner, **{field: given}), field) == given
            else:
                with pytest.raises(ValueError, match=setting.name):
                    _config(owner, **{field: given})


def test_the_form_is_the_declarations():
    import importlib.util
    import sys

    sys.path.insert(0, str(ROOT / "dags"))
    try:
        spec = importlib.util.spec_from_file_location(
            "dag_file", ROOT / "dags/melanoma_pipeline.py"
        )
        dag_file = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(dag_file)
    finally:
        sys.path.remove(str(ROOT / "dags"))
    schemas = param_schemas()
    assert list(dag_file.PARAMS) == [s.name for s in SETTINGS]
    for name, param in dag_file.PARAMS.items():
        default, schema = schemas[name]
        assert param.value == default and param.schema == schema, name


def _other_value(setting: Setting):
    """A valid value other than the default."""
    schema = setting.schema
    default = setting.config_default
    if setting.name == "image_width":  # 0 (square) or at least 32, which a schema cannot say
        return 200
    if "enum" in schema:
        return next(v for v in schema["enum"] if v != default)
    if isinstance(default, bool):
        return not default
    if isinstance(default, tuple):
        return [0.5]
    if isinstance(default, int):
        return default + 1 if "maximum" not in schema or default < schema["maximum"] else 0
    if isinstance(default, float):
        return default / 2
    return {"class_weight": "0.5,28.5", "pretrained_weights": "none"}.get(setting.name, "x")


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.targets], ids=lambda s: s.name)
def test_a_param_reaches_every_stage_config_field_it_declares(setting, monkeypatch):
    for variable in ("HAM10000_SOURCE", "MELANOMA_BACKBONE", "MELANOMA_PRETRAINED_WEIGHTS"):
        monkeypatch.delenv(variable, raising=False)
    value = _other_value(setting)
    stages = from_params({setting.name: value, "external_validation": True})
    for target in setting.targets:
        node = stages
        for part in target.split("."):
            node = getattr(node, part)
        assert node == setting.convert(value), target


def test_an_empty_form_gives_the_stage_configs_defaults(monkeypatch):
    for variable in ("HAM10000_SOURCE", "MELANOMA_BACKBONE", "MELANOMA_PRETRAINED_WEIGHTS"):
        monkeypatch.delenv(variable, raising=False)
    stages = from_params({name: default for name, (default, _) in param_schemas().items()})
    assert stages.train == STAGE_CONFIGS["train"]()
    assert stages.preprocess == STAGE_CONFIGS["preprocess"]()
    assert stages.external is None
    resolved = stages.resolved()
    assert set(resolved) == {f.name for f in dataclasses.fields(stages)}
    json.dumps(resolved)  # config.json takes it as it is


def test_the_configuration_page_is_generated_from_the_declarations():
    page = (ROOT / "docs/configuration.md").read_text()
    assert page == configuration_markdown(), (
        "docs/configuration.md is stale: python -m melanoma.settings > docs/configuration.md"
    )
    for setting in SETTINGS:
        assert f"| `{setting.name}` |" in page
