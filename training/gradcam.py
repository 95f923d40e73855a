"""Grad-CAM for the melanoma score: the raw maps, and where the model's view sat in the image.

Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV 2017): the feature maps A^k of the last convolutional
layer, weighted by the spatial mean of d(score)/dA^k, summed over k, ReLU. The score is
the melanoma logit (the output layer before its sigmoid; for the multiclass head, the
log-odds of the task's classes), as the paper uses the pre-softmax score: a confident
prediction's sigmoid is flat and its gradient vanishes.

Post-processing (normalising, upsampling, overlays, lesion attention) is in
``melanoma.cam``; the ``explain`` stage that uses both is ``training.explain``.
"""

from __future__ import annotations

import logging

import cv2
import keras
import numpy as np
import tensorflow as tf

from melanoma import clinical
from melanoma.config import CAM_METHODS
from melanoma.images import PreprocessConfig, lesion_crop_box, remove_hair, segment_lesion
from training.model import apply_head, earlier_pooled, image_input, pool_features, takes_metadata

log = logging.getLogger(__name__)


def channel_weights(maps: tf.Tensor, grads: tf.Tensor, method: str) -> tf.Tensor:
    """(batch, channels) weights of the feature maps.

    ``gradcam``: the spatial mean of the gradient. ``gradcam++`` (Chattopadhay et al.,
    "Grad-CAM++", WACV 2018, eq. 19 with the exponential trick): pixel-wise weights
    alpha = g^2 / (2 g^2 + sum(A) g^3) on the positive gradients, which keeps several
    instances of the pattern from being averaged away.
    """
    if method == "gradcam":
        return tf.reduce_mean(grads, axis=(1, 2))
    if method == "gradcam++":
        g2, g3 = grads**2, grads**3
        sum_maps = tf.reduce_sum(maps, axis=(1, 2), keepdims=True)
        denominator = 2 * g2 + sum_maps * g3
        alpha = tf.math.divide_no_nan(g2, denominator)
        return tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2))
    raise ValueError(f"CAM method {method!r} not in {CAM_METHODS}")


def task_logit(logits: tf.Tensor, positive: list[int] | None) -> tf.Tensor:
    """The task's pre-activation score: the sigmoid's logit, or for a softmax over classes
    the log-odds of the positive classes, log sum exp(z_pos) - log sum exp(z_neg)."""
    if positive is None:
        return logits[:, 0]
    is_positive = np.isin(np.arange(logits.shape[-1]), positive)
    pos = tf.gather(logits, np.flatnonzero(is_positive), axis=-1)
    neg = tf.gather(logits, np.flatnonzero(~is_positive), axis=-1)
    return tf.reduce_logsumexp(pos, axis=-1) - tf.reduce_logsumexp(neg, axis=-1)


def grad_cam(
    model: keras.Model,
    images: np.ndarray,
    layer_name: str,
    batch_size: int = 16,
    method: str = "gradcam",
    metadata: np.ndarray | None = None,
) -> np.ndarray:
    """Raw Grad-CAM (or Grad-CAM++) maps (n, h, w) at ``layer_name``'s resolution,
    non-negative, not normalised. ``metadata``: the images' vectors for a model that
    fuses it (None: explained as scored without metadata).

    ``layer_name`` must be the layer feeding the head's pooling
    (``training.model.pooled_layer``: the backbone's last convolutional layer, or its
    mid-level layer for a model built with ``feature_depth`` mid). The model is split
    there, so the gradient is taken with respect to the feature maps themselves whatever
    is trainable.
    """
    # Multiscale features: the earlier layers' pooled maps come along, as constants (they
    # lie before layer_name, so they do not depend on its maps).
    to_maps = keras.Model(
        image_input(model), [model.get_layer(layer_name).output, *earlier_pooled(model)]
    )
    names = {layer.name for layer in model.layers}
    if takes_metadata(model) and metadata is None:
        metadata = clinical.absent(len(images))
    output = model.get_layer("head_dx" if "head_dx" in names else "head_output")
    positive = model.get_layer("head_output").positive if "head_dx" in names else None

    out = []
    for start in range(0, len(images), batch_size):
        outputs = to_maps(images[start : start + batch_size], training=False)
        # Keras returns a one-output model's output bare, not in a list.
        maps, *earlier = outputs if isinstance(outputs, list | tuple) else [outputs]
        maps = tf.cast(maps, tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(maps)
            # The head's layers up to its last dropout (inference mode: they pass through).
            x = pool_features(model, maps, earlier)
            batch = None if metadata is None else metadata[start : start + batch_size]
            x = apply_head(model, x, batch, through="head_dropout_2")
            # The logit, not the probability: a saturated sigmoid has zero gradient.
            logits = tf.matmul(tf.cast(x, tf.float32), tf.cast(output.kernel, tf.float32))
            score = task_logit(logits + tf.cast(output.bias, tf.float32), positive)
        grads = tape.gradient(score, maps)
        weights = channel_weights(maps, grads, method)
        out.append(tf.nn.relu(tf.einsum("bhwc,bc->bhw", maps, weights)).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0, 0), np.float32)


def model_view_box(
    image: np.ndarray, config: PreprocessConfig, mask: np.ndarray | None
) -> tuple[int, int, int, int]:
    """The region of the stored image the model saw: preprocessing's lesion crop, or all of it."""
    if not config.lesion_crop:
        return 0, 0, image.shape[0], image.shape[1]
    if mask is None:
        mask = segment_lesion(remove_hair(image) if config.hair_removal else image)
    return lesion_crop_box(image.shape, mask, config.crop_margin)


def png_bytes(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return data.tobytes()
