import pytest

from melanoma.backbones import BackboneSpec
from melanoma.config import PipelineConfig


def test_environment_then_params_override_defaults():
    env = {
        "MELANOMA_STORE_URL": "s3://bucket",
        "HAM10000_SOURCE": "/data",
        "MELANOMA_BACKBONE": "mobilenet_v2",
    }
    config = PipelineConfig.from_env(env, backbone="resnet50", seed=None, label_task="")
    assert config.store_url == "s3://bucket"
    assert config.source == "/data"
    assert config.backbone == "resnet50"  # the param wins over the environment
    assert config.seed == 42 and config.label_task == "mel_vs_rest"  # empty overrides keep defaults


def test_invalid_values_are_refused():
    with pytest.raises(ValueError, match="label_task"):
        PipelineConfig(label_task="mel_vs_all")
    with pytest.raises(ValueError, match="split_ratios"):
        PipelineConfig(split_ratios=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="unknown configuration"):
        PipelineConfig.from_env({}, epochs=3)


@pytest.mark.parametrize("views", ["tta_views", "phase2_cached_views"])
def test_eight_views_with_a_non_square_input_are_refused_before_the_run(views):
    from melanoma.params import from_params

    with pytest.raises(ValueError, match=f"{views} 8 .* not 150x200 .*use 1, 2 or 4"):
        from_params({"image_size": 150, "image_width": 200, views: 8})
    assert from_params({"image_size": 150, "image_width": 200, views: 4}).train


def test_a_backbone_whose_mid_layer_is_not_a_multiscale_layer_is_refused_at_registration():
    # feature_depth mid keeps the multiscale layers before mid_layer: it must be one of them.
    with pytest.raises(ValueError, match="mid_layer 'block_9' is not one of its multiscale"):
        BackboneSpec(
            "odd", None, "unit", "last", r"(b\d)_", multiscale_layers=("b1",), mid_layer="block_9"
        )
