"""Hardware profiles: the defaults that fit the machine, and what always wins over them."""

import pytest

from melanoma.params import from_params
from melanoma.profiles import PROFILED, PROFILES, choose_profile
from melanoma.settings import SETTINGS, param_schemas


def test_auto_picks_the_gpu_profile_only_when_the_training_worker_sees_a_gpu():
    assert choose_profile("auto", []) == ("cpu", "TensorFlow on the training worker sees no GPU")
    name, why = choose_profile("auto", ["/physical_device:GPU:0"])
    assert name == "gpu" and "1 GPU(s): /physical_device:GPU:0" in why
    assert choose_profile("cpu", ["/physical_device:GPU:0"]) == (
        "cpu",
        "the profile param is cpu",
    )
    with pytest.raises(ValueError, match="profile 'tpu' is not one of auto, cpu, gpu"):
        choose_profile("tpu", [])


def test_every_profile_sets_the_same_settings_and_each_is_a_declared_setting():
    names = {s.name for s in SETTINGS}
    for profile in PROFILES.values():
        assert set(profile) == PROFILED <= names


def test_empty_params_take_the_detected_profile(monkeypatch):
    monkeypatch.delenv("MELANOMA_BACKBONE", raising=False)
    cpu = from_params({}, detected_profile="cpu")
    assert cpu.pipeline.profile == "cpu"
    assert (cpu.train.backbone, cpu.pipeline.backbone) == ("mobilenet_v2", "mobilenet_v2")
    assert (cpu.train.phase1_epochs, cpu.train.phase2_epochs) == (40, 6)
    assert (cpu.train.phase2_cached_views, cpu.train.phase2_schedule) == (4, "cosine")
    assert cpu.train.multiscale_features is True
    assert cpu.preprocess.config.shape == (150, 200), "HAM10000's own aspect and resolution"
    gpu = from_params({}, detected_profile="gpu")
    assert (gpu.train.backbone, gpu.train.phase1_epochs, gpu.train.phase2_epochs) == (
        "resnet50",
        10,
        20,
    )


def test_a_param_given_explicitly_wins_over_the_profile(monkeypatch):
    monkeypatch.delenv("MELANOMA_BACKBONE", raising=False)
    stages = from_params(
        {"phase2_epochs": 5, "backbone": "tiny_cnn", "multiscale_features": False},
        detected_profile="cpu",
    )
    assert stages.train.phase2_epochs == 5 and stages.train.backbone == "tiny_cnn"
    assert stages.train.multiscale_features is False, "false is given, not empty"
    assert stages.train.phase1_epochs == 40, "the rest is still the profile's"
    assert from_params({"profile": "gpu"}, detected_profile="cpu").train.backbone == "resnet50"


def test_the_environment_wins_over_the_profile(monkeypatch):
    monkeypatch.setenv("MELANOMA_BACKBONE", "tiny_cnn")
    stages = from_params({}, detected_profile="cpu")
    assert stages.train.backbone == "tiny_cnn" == stages.pipeline.backbone
    assert stages.train.phase1_epochs == 40


def test_after_the_split_every_task_takes_the_recorded_profile(monkeypatch):
    monkeypatch.delenv("MELANOMA_BACKBONE", raising=False)
    split = from_params({}, detected_profile="cpu")
    recorded = split.pipeline.to_dict()
    # A later task, on a worker that would detect otherwise, with no detection at all.
    later = from_params({}, recorded)
    assert later.pipeline.profile == "cpu" and later.train == split.train


def test_the_form_leaves_profiled_settings_empty_and_names_each_profiles_value():
    schemas = param_schemas()
    for name in PROFILED:
        default, schema = schemas[name]
        assert default is None, f"{name}: the form must not pin the gpu profile's value"
        for profile, values in PROFILES.items():
            value = str(values[name]).lower() if isinstance(values[name], bool) else values[name]
            assert f"`{profile}`: `{value}`" in schema["description_md"]
    default, schema = schemas["profile"]
    assert default == "auto" and schema["enum"] == ["auto", "cpu", "gpu"]


def test_an_unknown_profile_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="profile 'big' is not one of auto, cpu, gpu"):
        from_params({"profile": "big"})


def test_a_given_image_size_takes_a_square_input_not_the_profiles_width(monkeypatch):
    monkeypatch.delenv("MELANOMA_BACKBONE", raising=False)
    assert from_params({"image_size": 224}, detected_profile="cpu").preprocess.config.shape == (
        224,
        224,
    )
    both = from_params({"image_size": 96, "image_width": 128}, detected_profile="cpu")
    assert both.preprocess.config.shape == (96, 128)
    # The width alone keeps the profile's height.
    width_only = from_params({"image_width": 180}, detected_profile="cpu")
    assert width_only.preprocess.config.shape == (150, 180)
    assert from_params({}, detected_profile="gpu").preprocess.config.shape == (224, 224)


def test_the_gpu_profile_is_the_stage_configs_own_defaults():
    """``resolved_profile`` falls back to gpu because the configs' defaults are its values."""
    for setting in (s for s in SETTINGS if s.profiled):
        assert PROFILES["gpu"][setting.name] == setting.config_default, setting.name
