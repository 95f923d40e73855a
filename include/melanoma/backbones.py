"""The backbones the classifier can use: the one registry, free of TensorFlow.

The DAG's trigger form, the pretrained-weights step and the model builder
(``training.model``) all read it, so a backbone is added here once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    # keras.applications class built without its top; None: training.model's own (tiny_cnn)
    application: str | None
    preprocessing: str  # BackbonePreprocess mode: caffe (ResNet50), tf (MobileNetV2), unit
    # The backbone's last layer: the one the head pools with feature_depth "last" (the
    # default) and Grad-CAM's target then; layer_at_depth gives the pooled layer for a depth.
    last_conv_layer: str
    block_pattern: str  # regex; group 1 of a layer name is its block (for unfreezing the last N)
    final_block_layers: tuple[str, ...] = ()  # layers after the last numbered block, one block
    # Earlier layers whose pooled maps join the last one's with multiscale_features (finer,
    # more textural features: e.g. the last activation at each coarser resolution), in order.
    multiscale_layers: tuple[str, ...] = ()
    # One of multiscale_layers: where feature_depth "mid" cuts the backbone. Its maps take
    # the last layer's place, and only the multiscale layers before it join them.
    mid_layer: str = ""
    # ImageNet no-top weights: Keras's published file (relative to its weights URL) and the
    # MD5 Keras checks; other verified files (Keras 3 .weights.h5 exports) by sha256.
    keras_weights_file: str | None = None
    keras_md5: str | None = None
    known_sha256: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        # earlier_layers slices multiscale_layers at mid_layer, so it must be one of them.
        if self.mid_layer and self.mid_layer not in self.multiscale_layers:
            raise ValueError(
                f"backbone {self.name!r}: mid_layer {self.mid_layer!r} is not one of its "
                f"multiscale_layers {self.multiscale_layers}"
            )

    def layer_at_depth(self, depth: str) -> str:
        """The layer whose maps the head pools at feature depth ``depth`` (``last`` or
        ``mid``). A built model answers for itself: ``training.model.pooled_layer``."""
        if depth == "last":
            return self.last_conv_layer
        if depth == "mid" and self.mid_layer:
            return self.mid_layer
        raise ValueError(f"feature_depth {depth!r} is not last or mid for backbone {self.name!r}")

    def earlier_layers(self, depth: str) -> tuple[str, ...]:
        """The multiscale layers whose pooled maps join ``layer_at_depth(depth)``'s."""
        if depth == "last":
            return self.multiscale_layers
        return self.multiscale_layers[: self.multiscale_layers.index(self.layer_at_depth(depth))]

    def all_pooled_layers(self) -> tuple[str, ...]:
        """Every layer a head can pool, in the backbone's order: the multiscale layers, then
        the last one."""
        return (*self.multiscale_layers, self.last_conv_layer)

    def block_of(self, layer_name: str) -> str | None:
        """The block ``layer_name`` belongs to, or None (stem, head)."""
        if layer_name in self.final_block_layers:
            return self.final_block_layers[0]
        match = re.match(self.block_pattern, layer_name)
        return match.group(1) if match else None


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            "resnet50",
            "ResNet50",
            "caffe",
            "conv5_block3_out",
            r"(conv\d_block\d+)_",
            multiscale_layers=("conv3_block4_out", "conv4_block6_out"),
            mid_layer="conv4_block6_out",
            keras_weights_file="resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            keras_md5="4d473c1dd8becc155b73f8504c6f6626",
        ),
        BackboneSpec(
            "mobilenet_v2",
            "MobileNetV2",
            "tf",
            "out_relu",
            r"(block_\d+)_",
            final_block_layers=("Conv_1", "Conv_1_bn", "out_relu"),
            multiscale_layers=(
                "block_6_expand_relu",
                "block_13_expand_relu",
                "block_16_project_BN",
            ),
            mid_layer="block_13_expand_relu",
            keras_weights_file="mobilenet_v2/"
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
            # ImageNet MobileNetV2 1.0/224 without top, Keras 3 weights format (shared/data/weights).
            known_sha256=frozenset(
                {"6714965a05ee6d8568343664bb9cda7456c6eb1fa190a6f5eb39bf087068b100"}
            ),
        ),
        # Three conv blocks: small enough for learning tests; no pretrained weights.
        BackboneSpec(
            "tiny_cnn",
            None,
            "unit",
            "tiny_block3_relu",
            r"(tiny_block\d)_",
            multiscale_layers=("tiny_block1_relu", "tiny_block2_relu"),
            mid_layer="tiny_block2_relu",
        ),
    )
}
BACKBONE_NAMES: tuple[str, ...] = tuple(BACKBONES)


def backbone_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None
