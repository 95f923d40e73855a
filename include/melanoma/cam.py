"""Post-processing of class activation maps: upsampling, overlays, and where the attention lies.

The raw maps come from ``training.gradcam`` (Grad-CAM, Selvaraju et al., "Grad-CAM: Visual
Explanations from Deep Networks via Gradient-based Localization", ICCV 2017). Everything
here is numpy/OpenCV on arrays, so it is tested without a model.

Attention in the lesion, for a heat map ``cam`` (non-negative) and a lesion mask:

- ``energy_in_lesion``: the share of the map's total inside the mask, in [0, 1];
- ``background_to_lesion_ratio``: mean activation outside the mask over mean activation
  inside it, the measure Tschandl et al. used on HAM10000 ("Human-computer collaboration
  for skin cancer recognition", Nature Medicine 26, 2020): below 1 the model looks more
  at the lesion than at the background;
- ``lesion_area_fraction``: the mask's share of the image. A map spread evenly over the
  image has ``energy_in_lesion`` equal to it, so read the share against the area.
"""

from __future__ import annotations

import cv2
import numpy as np


def normalize_cam(cam: np.ndarray) -> np.ndarray:
    """Scale a non-negative map to [0, 1] by its maximum (an all-zero map stays zero)."""
    cam = np.maximum(np.asarray(cam, dtype=np.float32), 0)
    peak = float(cam.max())
    return cam / peak if peak > 0 else cam


def upsample_cam(
    cam: np.ndarray,
    image_hw: tuple[int, int],
    box: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """The map at the stored image's size. ``box`` (top, left, height, width) is the region the
    model saw (a lesion crop); outside it the map is zero. Bilinear, since the map is smooth."""
    h, w = image_hw
    top, left, box_h, box_w = box or (0, 0, h, w)
    resized = cv2.resize(
        np.asarray(cam, dtype=np.float32), (box_w, box_h), interpolation=cv2.INTER_LINEAR
    )
    full = np.zeros((h, w), np.float32)
    full[top : top + box_h, left : left + box_w] = np.maximum(resized, 0)
    return full


def overlay_heatmap(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8: the image blended with the [0, 1] map in the JET colour map (red = high)."""
    if cam.shape != image.shape[:2]:
        raise ValueError(f"map {cam.shape} and image {image.shape[:2]} differ in size")
    heat = cv2.applyColorMap((np.clip(cam, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(image, 1 - alpha, heat, alpha, 0)


def draw_mask_outline(image: np.ndarray, mask: np.ndarray, colour=(255, 255, 255)) -> np.ndarray:
    """The image with the lesion mask's outline drawn on it (a copy)."""
    contours, _ = cv2.findContours(
        (np.asarray(mask) > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    out = image.copy()
    cv2.drawContours(out, contours, -1, colour, max(1, image.shape[1] // 300))
    return out


def lesion_attention(cam: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Energy share in the lesion, background-to-lesion mean-activation ratio, lesion area share.

    ``cam`` and ``mask`` have the same size; ``mask`` is non-zero inside the lesion.
    Undefined values (an all-zero map, an empty or full mask) are ``nan``.
    """
    cam = np.maximum(np.asarray(cam, dtype=np.float64), 0)
    inside = np.asarray(mask) > 0
    if cam.shape != inside.shape:
        raise ValueError(f"map {cam.shape} and mask {inside.shape} differ in size")
    total = cam.sum()
    lesion_mean = cam[inside].mean() if inside.any() else np.nan
    background_mean = cam[~inside].mean() if (~inside).any() else np.nan
    return {
        "energy_in_lesion": float(cam[inside].sum() / total) if total > 0 else float("nan"),
        "background_to_lesion_ratio": (
            float(background_mean / lesion_mean)
            if lesion_mean and lesion_mean > 0
            else float("nan")
        ),
        "lesion_area_fraction": float(inside.mean()),
    }
