"""The classifier: one flat functional graph, backbone + GAP + Dropout/Dense head, task score out.

uint8 image → the backbone's own preprocessing → backbone without top →
GlobalAveragePooling → [multiscale features] → [metadata fusion] → Dropout 0.5 → Dense 256
ReLU → Dropout 0.5 → then either

- ``binary``: Dense 1 sigmoid, the label task's probability; or
- ``multiclass``: Dense 7 softmax over HAM10000's diagnoses (``head_dx``), then
  ``TaskScore``: the sum of the task's positive classes' probabilities (P(mel) for
  ``mel_vs_rest``; P(mel) + P(bcc) + P(akiec) for ``malignant_vs_benign``).

With ``multiscale_features`` the pooled maps of earlier backbone layers (the backbone's
``multiscale_layers``: finer, more textural than the last layer's) are concatenated
with the pooled layer's (``head_multiscale``) and batch-normalised (``head_feature_norm``):
their scales differ by orders of magnitude, and unnormalised the wide early layers
swamp the rest. The head's input is then that concatenation, whose width is the sum of
the layers' channels (MobileNetV2: 192 + 576 + 320 + 1280).

With ``feature_depth`` mid the backbone is cut at its ``mid_layer`` (MobileNetV2: the
expansion of block 13): that layer's maps take the last layer's place, and with
multiscale features only the multiscale layers before it join them. Mid-level ImageNet
features describe texture and colour more than ImageNet's objects: for a linear head
they held up better at clinics a model never saw, for this head about as well as the
last layer's (docs/results.md).

With ``metadata_fusion`` the model takes a second input, ``metadata`` (age, sex and body
site as ``melanoma.clinical`` encodes them): ``MetadataDropout`` → Dense 32 ReLU, joined
to the pooled image features, layer-normalised first so that neither side drowns the
other by scale (``head_image_norm``, ``head_fusion``). All zeros means "scored without
metadata", which training shows the model by dropping whole vectors at random.

Either way the model's one output, ``head_output``, is the task score (float32 even under
mixed precision), so calibration, evaluation, Grad-CAM and predict take it unchanged. The
backbone's layers are built on our input tensor (``input_tensor=``), never wrapped as a
nested Model, so Grad-CAM can reach the layer the head pools by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import layers, ops
from keras.src.ops.operation_utils import get_source_inputs

from melanoma import clinical
from melanoma.backbones import BackboneSpec, backbone_spec
from melanoma.config import TrainConfig
from melanoma.ham10000 import DX_INDEX, label_task
from melanoma.images import dihedral_views

# The multiclass head's class order.
DX_ORDER: tuple[str, ...] = tuple(DX_INDEX)


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


# The head's layers on the pooled features, in order. Multiscale features add
# head_feature_norm; the multiclass head adds head_dx (the binary one has no such layer);
# metadata fusion adds head_image_norm and head_fusion, which joins the output of the two
# metadata layers (metadata_dropout, metadata_dense).
HEAD_LAYERS = (
    "head_feature_norm",
    "head_image_norm",
    "head_fusion",
    "head_dropout_1",
    "head_dense",
    "head_dropout_2",
    "head_dx",
    "head_output",
)
IMAGE_INPUT, METADATA_INPUT = "image", "metadata"


@keras.saving.register_keras_serializable(package="melanoma")
class MetadataDropout(layers.Layer):
    """In training, each sample's whole metadata vector is zeroed with probability ``rate``.

    All zeros is how an image without metadata is encoded, so the model learns to score
    both ways (as ModDrop does for missing modalities: Neverova et al., "ModDrop: adaptive
    multi-modal gesture recognition", IEEE TPAMI 2016). At inference it passes through.
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.seed = float(rate), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or self.rate == 0:
            return inputs
        draw = keras.random.uniform((ops.shape(inputs)[0], 1), seed=self.seed_generator)
        return inputs * ops.cast(draw >= self.rate, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="melanoma")
class TaskScore(layers.Layer):
    """Class probabilities → the label task's score: the sum of its positive classes'."""

    def __init__(self, positive: list[int], **kwargs):
        super().__init__(**kwargs)
        self.positive = [int(i) for i in positive]

    def call(self, probabilities):
        chosen = ops.take(probabilities, ops.convert_to_tensor(self.positive), axis=-1)
        return ops.sum(chosen, axis=-1, keepdims=True)

    def get_config(self):
        return {**super().get_config(), "positive": self.positive}


def positive_classes(task: str) -> list[int]:
    """Indices in ``DX_ORDER`` of the label task's positive diagnoses."""
    positive = label_task(task).positive
    return [i for i, dx in enumerate(DX_ORDER) if dx in positive]


def build_model(
    config: TrainConfig,
    image_size: int | tuple[int, int] = 224,
    weights_path: str | None = None,
    task: str = "mel_vs_rest",
) -> keras.Model:
    """The full model with the backbone frozen (phase 1), as ``config`` describes it: its
    backbone, head (``binary``, or ``multiclass`` scored for label task ``task``), seed,
    metadata fusion (dropped with ``metadata_dropout``), feature depth (where the head
    reads the backbone) and multiscale features (earlier layers pooled too).
    ``image_size``: the input's side, or its (height, width). ``weights_path``: a no-top
    ImageNet weights file."""
    backbone_name, seed, head = config.backbone, config.seed, config.head
    metadata_dropout = config.metadata_dropout if config.metadata_fusion else None
    multiscale = config.multiscale_features
    spec = backbone_spec(backbone_name)
    height, width = image_size if isinstance(image_size, tuple) else (image_size, image_size)
    image = keras.Input((height, width, 3), dtype="uint8", name=IMAGE_INPUT)
    x = BackbonePreprocess(spec.preprocessing, name="backbone_preprocess")(image)
    base = build_backbone(spec, x)
    if weights_path:
        base.load_weights(weights_path)
    for layer in base.layers:
        layer.trainable = False
    # With feature_depth "mid" the layers after the pooled one are in no path to the
    # output, so the model (and its saved file) holds the backbone only up to there.
    maps = base.get_layer(spec.layer_at_depth(config.feature_depth)).output
    features = layers.GlobalAveragePooling2D(name="head_gap")(maps)
    earlier = spec.earlier_layers(config.feature_depth)
    if multiscale and earlier:
        pooled = [
            layers.GlobalAveragePooling2D(name=f"head_gap_{name}")(base.get_layer(name).output)
            for name in earlier
        ]
        features = layers.Concatenate(name="head_multiscale")([*pooled, features])
        features = layers.BatchNormalization(name="head_feature_norm")(features)
    inputs: Any = image
    if metadata_dropout is not None:
        metadata = keras.Input((clinical.WIDTH,), dtype="float32", name=METADATA_INPUT)
        m = MetadataDropout(metadata_dropout, seed=seed + 2, name="metadata_dropout")(metadata)
        m = layers.Dense(32, activation="relu", name="metadata_dense")(m)
        features = layers.LayerNormalization(name="head_image_norm")(features)
        features = layers.Concatenate(name="head_fusion")([features, m])
        inputs = {IMAGE_INPUT: image, METADATA_INPUT: metadata}
    x = layers.Dropout(0.5, seed=seed, name="head_dropout_1")(features)
    x = layers.Dense(256, activation="relu", name="head_dense")(x)
    x = layers.Dropout(0.5, seed=seed + 1, name="head_dropout_2")(x)
    if head == "binary":
        outputs = layers.Dense(1, activation="sigmoid", dtype="float32", name="head_output")(x)
    elif head == "multiclass":
        dx = layers.Dense(len(DX_ORDER), activation="softmax", dtype="float32", name="head_dx")(x)
        outputs = TaskScore(positive_classes(task), dtype="float32", name="head_output")(dx)
    else:
        raise ValueError(f"head {head!r} is not binary or multiclass")
    return keras.Model(inputs, outputs, name=f"melanoma_{backbone_name}")


def is_multiclass(model: keras.Model) -> bool:
    return any(layer.name == "head_dx" for layer in model.layers)


def takes_metadata(model: keras.Model) -> bool:
    """Whether the model fuses metadata (a second input, ``metadata``)."""
    return any(layer.name == "head_fusion" for layer in model.layers)


def image_input(model: keras.Model):
    return model.input[IMAGE_INPUT] if isinstance(model.input, dict) else model.input


def model_inputs(model: keras.Model, images: np.ndarray, metadata: np.ndarray | None = None):
    """What ``model`` takes for ``images``: the images, or with metadata fusion the images
    and their metadata vectors (absent, all zeros, where ``metadata`` is None)."""
    if not takes_metadata(model):
        return images
    if metadata is None:
        metadata = clinical.absent(len(images))
    return {IMAGE_INPUT: images, METADATA_INPUT: metadata}


def training_view(model: keras.Model) -> keras.Model:
    """What the loss is computed on, sharing every weight with ``model``: the model itself
    (binary head), or the model up to its seven-class softmax (multiclass head)."""
    if not is_multiclass(model):
        return model
    return keras.Model(model.input, model.get_layer("head_dx").output, name=f"{model.name}_dx")


def features_layer(model: keras.Model) -> str:
    """The layer whose output is the head's input, the pooled features: ``head_gap``, or
    ``head_multiscale`` when the model pools several layers."""
    names = {layer.name for layer in model.layers}
    return "head_multiscale" if "head_multiscale" in names else "head_gap"


def pooled_layer(model: keras.Model) -> str:
    """The backbone layer whose maps ``head_gap`` pools (the backbone's last convolutional
    layer, or its mid-level layer with ``feature_depth`` mid): Grad-CAM's target."""
    pooled = model.get_layer("head_gap").input
    return next(layer.name for layer in model.layers if layer.output is pooled)


def pool_features(model: keras.Model, maps, earlier=()):
    """The head's input from the pooled layer's ``maps`` (and, for multiscale features,
    the earlier layers' pooled maps, in the model's order): Grad-CAM's path to the head."""
    x = model.get_layer("head_gap")(maps)
    if features_layer(model) == "head_multiscale":
        x = model.get_layer("head_multiscale")([*earlier, x])
    return x


def earlier_pooled(model: keras.Model) -> list:
    """The symbolic pooled maps of the earlier layers that ``head_multiscale`` joins (none
    for a single-scale model)."""
    if features_layer(model) != "head_multiscale":
        return []
    return list(model.get_layer("head_multiscale").input[:-1])


def apply_head(model: keras.Model, features, metadata=None, through: str = "head_output"):
    """``model``'s head layers on pooled ``features`` (and ``metadata`` when it fuses them),
    up to layer ``through``: on symbolic tensors (``head_model``) or eager ones (Grad-CAM)."""
    names = {layer.name for layer in model.layers}
    x = features
    for name in HEAD_LAYERS:
        if name == "head_fusion" and name in names:
            m = model.get_layer("metadata_dense")(model.get_layer("metadata_dropout")(metadata))
            x = model.get_layer(name)([x, m])
        elif name in names:
            x = model.get_layer(name)(x)
        if name == through:
            break
    return x


def head_model(model: keras.Model, through: str | None = None) -> keras.Model:
    """The head alone, on pooled features (and metadata when the model fuses it), sharing
    its layers (and weights) with ``model``; up to layer ``through`` (default: the
    training view's output)."""
    through = through or ("head_dx" if is_multiclass(model) else "head_output")
    features = keras.Input(model.get_layer(features_layer(model)).output.shape[1:], name="features")
    if not takes_metadata(model):
        return keras.Model(features, apply_head(model, features, through=through), name="head")
    metadata = keras.Input((clinical.WIDTH,), name=METADATA_INPUT)
    outputs = apply_head(model, features, metadata, through)
    return keras.Model({"features": features, METADATA_INPUT: metadata}, outputs, name="head")


def feature_extractor(model: keras.Model) -> keras.Model:
    """Image → the head's input, the pooled backbone features (what the frozen phase 1
    would recompute every epoch)."""
    features = model.get_layer(features_layer(model)).output
    return keras.Model(image_input(model), features, name="features")


@dataclass(frozen=True)
class TrunkSplit:
    """A model cut at its first trainable backbone layer, every part sharing its weights."""

    trunk: keras.Model  # image -> the top's inputs (frozen: run once per image and view)
    top: keras.Model  # the top's inputs -> the training view's output (what the loss sees)
    scorer: keras.Model  # the top's inputs -> the model's score


def split_at_trainable(model: keras.Model) -> TrunkSplit | None:
    """Cut a model whose last blocks were unfrozen where its trainable part begins: the
    top takes the input of the first trainable backbone layer and, for multiscale
    features, the pooled maps of earlier layers. Training the top on the trunk's outputs
    gives the same gradients as training the whole model on the images.

    None when the model cannot be cut there: metadata fusion (a second input), no
    trainable backbone layer, or a top that reads another tensor of the trunk.
    """
    if takes_metadata(model):
        return None
    position = {layer.name: i for i, layer in enumerate(model.layers)}
    trainable = [
        layer
        for layer in model.layers
        if layer.trainable and layer.weights and not layer.name.startswith(("head_", "metadata"))
    ]
    if not trainable:
        return None
    first = trainable[0]
    # Pooled maps of layers before the cut are the top's inputs; a pooled map of an
    # unfrozen layer is computed inside the top.
    pooled_by = {id(layer.output): layer.name for layer in model.layers}
    earlier = [
        tensor
        for tensor in earlier_pooled(model)
        if position[pooled_by[id(tensor)].removeprefix("head_gap_")] < position[first.name]
    ]
    tensors = [first.input, *earlier]
    inputs = tensors if len(tensors) > 1 else tensors[0]
    try:
        top = keras.Model(inputs, training_view(model).output, name="phase2_top")
        scorer = keras.Model(inputs, model.output, name="phase2_scorer")
    except ValueError:  # the top reads a tensor of the trunk it was not given
        return None
    return TrunkSplit(keras.Model(image_input(model), inputs, name="phase2_trunk"), top, scorer)


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


def with_features(model: keras.Model) -> keras.Model:
    """``model`` with a second output, its pooled backbone features (the head's input),
    sharing every weight: one pass gives the score and what the out-of-distribution
    detector measures."""
    features = model.get_layer(features_layer(model)).output
    return keras.Model(model.input, [model.output, features], name=f"{model.name}_with_features")


def predict_scores(
    model: keras.Model,
    images: np.ndarray,
    batch_size: int = 64,
    tta_views: int = 1,
    metadata: np.ndarray | None = None,
) -> np.ndarray:
    """The model's task score per image, averaged over ``tta_views`` flips/rotations.

    Every split (validation, test, external) and every new image is scored this one way,
    so thresholds chosen on validation apply unchanged. ``metadata``: the images' vectors
    for a model that fuses it (None: scored without metadata).
    """
    return _score_views(model, images, batch_size, tta_views, metadata)[0]


def predict_scores_and_features(
    scoring: keras.Model,
    images: np.ndarray,
    batch_size: int = 64,
    tta_views: int = 1,
    metadata: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """For a :func:`with_features` model: :func:`predict_scores`, and the pooled features
    of the images as given (the first view), from the same forward pass."""
    return _score_views(scoring, images, batch_size, tta_views, metadata)


def _score_views(
    model: keras.Model,
    images: np.ndarray,
    batch_size: int,
    tta_views: int,
    metadata: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores averaged over the views, and the first view's features when ``model`` has
    them as a second output (else an empty array)."""
    if len(images) == 0:
        return np.zeros(0), np.zeros((0, 0), np.float32)
    scores, features = [], np.zeros((len(images), 0), np.float32)
    for index, view in enumerate(dihedral_views(images, tta_views)):
        outputs = model.predict(
            model_inputs(model, view, metadata), batch_size=batch_size, verbose=0
        )
        if isinstance(outputs, list | tuple):
            outputs, pooled = outputs
            if index == 0:  # float32 whatever the policy: the detector's statistics need it
                features = np.asarray(pooled, dtype=np.float32)
        scores.append(np.asarray(outputs).reshape(-1).astype(float))
    return np.mean(scores, axis=0), features
