"""Evaluation figures as PNG bytes.

Built on ``matplotlib.figure.Figure`` directly, not pyplot: no display, no global state.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from melanoma.metrics import rates_from_counts

Array = np.ndarray
Points = Mapping[str, dict]  # operating point name -> threshold_metrics(...)
Interval = Mapping[str, float]  # {value, ci_low, ci_high}

POINT_STYLES = {
    "at_0.5": ("o", "tab:gray"),
    "youden": ("s", "tab:blue"),
    "target_sensitivity": ("^", "tab:red"),
    "max_f1": ("D", "tab:green"),
}


def _png(
    fig: Figure,
    metadata: Mapping[str, str] | None = None,
    tight: bool = True,
    compress_level: int = 6,
) -> bytes:
    """``tight``: cropped to what is drawn (a second rendering pass); ``compress_level``:
    zlib's, 6 as PIL's default."""
    buffer = io.BytesIO()
    fig.savefig(
        buffer,
        format="png",
        dpi=110,
        bbox_inches="tight" if tight else None,
        metadata=metadata,
        pil_kwargs={"compress_level": compress_level},
    )
    return buffer.getvalue()


def _curve_axes(x: Array, y: Array, area_name: str, area: Interval) -> tuple[Figure, Any]:
    """A square figure with one curve, labelled with its area under the curve and interval."""
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    label = f"{area_name} {area['value']:.3f} ({area['ci_low']:.3f}-{area['ci_high']:.3f})"
    ax.plot(x, y, color="black", label=label)
    return fig, ax


def _mark(ax: Any, name: str, x: float, y: float, label: str) -> None:
    marker, colour = POINT_STYLES.get(name, ("x", "black"))
    ax.plot(x, y, marker, color=colour, markersize=8, label=label)


def roc_figure(labels: Array, scores: Array, points: Points, auroc: Interval, data: str) -> bytes:
    """ROC curve with each operating point (``{name: threshold_metrics(...)}``) marked."""
    fpr, tpr, _ = roc_curve(labels, scores)
    fig, ax = _curve_axes(fpr, tpr, "AUROC", auroc)
    ax.plot([0, 1], [0, 1], ":", color="gray", label="chance")
    for name, point in points.items():
        label = f"{name} (t={point['threshold']:.3f})"
        _mark(ax, name, 1 - point["specificity"], point["sensitivity"], label)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC, {data}")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def pr_figure(labels: Array, scores: Array, points: Points, auprc: Interval, data: str) -> bytes:
    """Precision-recall curve, the prevalence baseline, and each defined operating point."""
    precision, recall, _ = precision_recall_curve(labels, scores)
    prevalence = float(np.mean(labels))
    fig, ax = _curve_axes(recall, precision, "AUPRC", auprc)
    ax.axhline(prevalence, linestyle=":", color="gray", label=f"prevalence {prevalence:.3f}")
    for name, point in points.items():
        if not np.isnan(point["ppv"]):
            _mark(ax, name, point["sensitivity"], point["ppv"], name)
    ax.set(
        xlabel="recall (sensitivity)", ylabel="precision (PPV)", title=f"Precision-recall, {data}"
    )
    ax.set_ylim(0, 1.02)
    ax.legend(loc="upper right", fontsize=8)
    return _png(fig)


def confusion_figure(operating_points: Mapping[str, dict]) -> bytes:
    """One 2x2 confusion matrix per operating point (rows: truth, columns: prediction)."""
    fig = Figure(figsize=(3.2 * len(operating_points), 3.2))
    axes = fig.subplots(1, len(operating_points))
    for ax, (name, point) in zip(np.atleast_1d(axes), operating_points.items(), strict=True):
        c = point["confusion"]
        matrix = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]])
        ax.imshow(matrix, cmap="Blues")
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(
                j,
                i,
                str(value),
                ha="center",
                va="center",
                color="white" if value > matrix.max() / 2 else "black",
            )
        ax.set_xticks([0, 1], ["pred. neg.", "pred. pos."])
        ax.set_yticks([0, 1], ["neg.", "pos."])
        ax.set_title(f"{name}\nt={point['threshold']:.3f}", fontsize=9)
    return _png(fig)


def threshold_sweep_figure(
    labels: np.ndarray,
    scores: np.ndarray,
    operating_points: Mapping[str, dict],
    data: str = "test split",
) -> bytes:
    """Sensitivity, specificity, PPV, NPV and F1 against the threshold."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=float)
    grid = np.linspace(0, 1, 201)
    curves: dict[str, list[float]] = {
        k: [] for k in ("sensitivity", "specificity", "ppv", "npv", "f1")
    }
    for t in grid:
        p = s >= t
        rates = rates_from_counts(
            tn=np.sum(~y & ~p), fp=np.sum(~y & p), fn=np.sum(y & ~p), tp=np.sum(y & p)
        )
        for k in curves:
            curves[k].append(rates[k])
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name, values in curves.items():
        ax.plot(grid, values, label=name)
    for name, point in operating_points.items():
        _, colour = POINT_STYLES.get(name, ("x", "black"))
        ax.axvline(point["threshold"], color=colour, linestyle="--", linewidth=0.8)
    ax.set(xlabel="threshold", ylabel="value", title=f"Metrics against threshold, {data}")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="center right")
    return _png(fig)


def reliability_figure(curves: Mapping[str, list[dict]], data: str = "test split") -> bytes:
    """Observed frequency against mean predicted probability, one line per ``{label: bins}``."""
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ":", color="gray", label="perfect calibration")
    for label, bins in curves.items():
        ax.plot(
            [b["mean_probability"] for b in bins],
            [b["observed_frequency"] for b in bins],
            "o-",
            label=label,
        )
    ax.set(
        xlabel="mean predicted probability",
        ylabel="observed frequency",
        title=f"Reliability, {data}",
    )
    ax.legend(fontsize=8, loc="upper left")
    return _png(fig)


def training_curves_figure(history: Mapping[str, Mapping]) -> bytes:
    """Loss and validation AUROC per epoch, phase 2 continuing phase 1's epoch axis."""
    fig = Figure(figsize=(10, 3.8))
    (loss_ax, auroc_ax) = fig.subplots(1, 2)
    offset = 0
    for phase, colour in (("phase1", "tab:blue"), ("phase2", "tab:orange")):
        entries = history.get(phase) or {}
        loss = entries.get("loss") or []
        auroc = entries.get("val_auroc") or []
        epochs = np.arange(offset + 1, offset + len(loss) + 1)
        if len(loss):
            loss_ax.plot(epochs, loss, color=colour, label=f"{phase} training loss")
        if len(auroc):
            auroc_ax.plot(epochs[: len(auroc)], auroc, color=colour, label=f"{phase} val AUROC")
        offset += len(loss)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="Training loss")
    auroc_ax.set(xlabel="epoch", ylabel="AUROC", title="Validation AUROC")
    for ax in (loss_ax, auroc_ax):
        ax.legend(fontsize=8)
    return _png(fig)


# The colour map melanoma.cam.overlay_heatmap blends with (OpenCV's JET, matplotlib's "jet").
CAM_COLOUR_MAP = "jet"


def gradcam_overlay_figure(image: Array, overlay: Array, title: str, note: str = "") -> Figure:
    """An image beside its Grad-CAM overlay (both RGB uint8, as ``melanoma.cam`` makes them),
    under ``title`` (which image, its probability and decision), with the colour bar of the
    map, which is scaled to the image's own peak, and ``note`` in small print below.

    Laid out by hand, in inches: a layout engine would draw each figure twice, and
    melanoma-predict draws one per image.
    """
    h, w = image.shape[:2]
    # About the image's own pixels at 110 dpi, but a thumbnail enlarged enough for the
    # caption to fit above it, and a narrow image given room for it.
    panel_h = min(4.0, max(2.5, h / 110))
    panel_w = max(3.0, panel_h * w / h)
    margin, gap, bar, bar_label = 0.1, 0.1, 0.15, 0.6
    top = 0.15 + 0.16 * (title.count("\n") + 1) + 0.3  # the caption, then the panel titles
    bottom = 0.3 if note else margin
    width = margin + 2 * panel_w + gap + 2 * gap + bar + bar_label
    height = bottom + panel_h + top
    fig = Figure(figsize=(width, height))

    def rect(
        left: float, w_in: float, bottom_in: float, h_in: float
    ) -> tuple[float, float, float, float]:
        return (left / width, bottom_in / height, w_in / width, h_in / height)

    for i, (pixels, name) in enumerate(((image, "image"), (overlay, "Grad-CAM overlay"))):
        ax = fig.add_axes(rect(margin + i * (panel_w + gap), panel_w, bottom, panel_h))
        ax.imshow(pixels)
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    colour_bar = fig.add_axes(
        rect(margin + 2 * panel_w + 3 * gap, bar, bottom + 0.05 * panel_h, 0.9 * panel_h),
        label="<colorbar>",
    )
    fig.colorbar(
        ScalarMappable(Normalize(0, 1), CAM_COLOUR_MAP),
        cax=colour_bar,
        label="Grad-CAM (1 = this image's peak)",
    )
    fig.suptitle(title, y=1 - 0.1 / height, va="top", fontsize=9)
    if note:
        fig.supxlabel(note, y=0.08 / height, va="bottom", fontsize=7, color="dimgray")
    return fig


def gradcam_overlay_png(image: Array, overlay: Array, title: str, note: str = "") -> bytes:
    """``gradcam_overlay_figure`` as PNG; ``title`` and ``note`` also in its text chunks.

    Compressed as OpenCV writes PNGs (zlib level 1): several times faster than the
    default, for files about a third larger.
    """
    metadata = {"Title": title, "Description": note} if note else {"Title": title}
    figure = gradcam_overlay_figure(image, overlay, title, note)
    return _png(figure, metadata, tight=False, compress_level=1)
