"""The classifier: one flat functional graph, backbone + GAP + Dropout/Dense head, sigmoid output.

uint8 image → the backbone's own preprocessing → backbone without top →
GlobalAveragePooling → Dropout 0.5 → Dense 256 ReLU → Dropout 0.5 → Dense 1 sigmoid
(float32 even under mixed precision). The backbone's layers are built on our input
tensor (``input_tensor=``), never wrapped as a nested Model, so Grad-CAM can reach its
last convolutional layer by name.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers, ops
from keras.src.ops.operation_utils import get_source_inputs

from melanoma.backbones import BackboneSpec, backbone_spec


@keras.saving.register_keras_serializable(package="melanoma")
class BackbonePreprocess(layers.Layer):
    """uint8 RGB → the input scaling a Keras backbone was trained with.

    ``caffe``: RGB→BGR and ImageNet mean subtraction (ResNet50); ``tf``: scale to [-1, 1]
    (MobileNetV2); ``unit``: scale to [0, 1] (the small test network).
    """

    MODES = ("caffe", "tf", "unit")

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"preprocessing mode {mode!r} not in {self.MODES}")
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "unit":
            return x / 255.0
        bgr = ops.flip(x, axis=-1)
        return bgr - ops.convert_to_tensor([103.939, 116.779, 123.68], dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def _tiny_cnn(input_tensor):
    """Three conv blocks: a backbone small enough for learning tests (no pretrained weights)."""
    x = input_tensor
    for i, filters in enumerate((16, 32, 64), start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"tiny_block{i}_conv")(x)
        x = layers.BatchNormalization(name=f"tiny_block{i}_bn")(x)
        x = layers.Activation("relu", name=f"tiny_block{i}_relu")(x)
        if i < 3:
            x = layers.MaxPooling2D(name=f"tiny_block{i}_pool")(x)
    # Rooted at the graph's real Input, as keras.applications does with input_tensor.
    return keras.Model(get_source_inputs(input_tensor), x, name="tiny_cnn")


def build_backbone(spec: BackboneSpec, input_tensor) -> keras.Model:
    """The backbone without its top, built on ``input_tensor``, random weights."""
    if spec.application is None:
        return _tiny_cnn(input_tensor)
    application = getattr(keras.applications, spec.application)
    return application(include_top=False, weights=None, input_tensor=input_tensor)


HEAD_LAYERS = ("head_gap", "head_dropout_1", "head_dense", "head_dropout_2", "head_output")


def build_model(
    backbone_name: str, image_size: int = 224, weights_path: str | None = None, seed: int = 42
) -> keras.Model:
    """The full model with the backbone frozen (phase 1). ``weights_path``: no-top ImageNet weights file."""
    spec = backbone_spec(backbone_name)
    inputs = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    x = BackbonePreprocess(spec.preprocessing, name="backbone_preprocess")(inputs)
    base = build_backbone(spec, x)
    if weights_path:
        base.load_weights(weights_path)
    for layer in base.layers:
        layer.trainable = False
    features = layers.GlobalAveragePooling2D(name="head_gap")(base.output)
    outputs = build_head(seed)(features)
    return keras.Model(inputs, outputs, name=f"melanoma_{backbone_name}")


def build_head(seed: int) -> Callable:
    dropout_1 = layers.Dropout(0.5, seed=seed, name="head_dropout_1")
    dense = layers.Dense(256, activation="relu", name="head_dense")
    dropout_2 = layers.Dropout(0.5, seed=seed + 1, name="head_dropout_2")
    output = layers.Dense(1, activation="sigmoid", dtype="float32", name="head_output")
    return lambda features: output(dropout_2(dense(dropout_1(features))))


def head_model(model: keras.Model) -> keras.Model:
    """The head alone, on pooled features, sharing its layers (and weights) with ``model``."""
    features = keras.Input(model.get_layer("head_gap").output.shape[1:], name="features")
    x = features
    for name in HEAD_LAYERS[1:]:
        x = model.get_layer(name)(x)
    return keras.Model(features, x, name="head")


def feature_extractor(model: keras.Model) -> keras.Model:
    """Image → pooled backbone features (what the frozen phase 1 would recompute every epoch)."""
    return keras.Model(model.input, model.get_layer("head_gap").output, name="features")


def unfreeze_last_blocks(model: keras.Model, backbone_name: str, blocks: int) -> list[str]:
    """Make the last ``blocks`` backbone blocks trainable; batch-norm layers stay frozen.

    Frozen batch norm runs in inference mode in Keras 3, so fine-tuning on small
    batches does not disturb the ImageNet statistics. Returns the unfrozen block ids.
    """
    spec = backbone_spec(backbone_name)
    order: list[str] = []
    for layer in model.layers:
        block = spec.block_of(layer.name)
        if block and block not in order:
            order.append(block)
    chosen = set(order[-blocks:]) if blocks > 0 else set()
    for layer in model.layers:
        block = spec.block_of(layer.name)
        if block in chosen:
            layer.trainable = not isinstance(layer, layers.BatchNormalization)
    return [b for b in order if b in chosen]
