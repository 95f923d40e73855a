"""HTML building blocks of the run report: style, numbers with intervals, tables, images;
and the same numbers as plain text for the benchmarks' Markdown tables."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

RATE_NAMES = {
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "ppv": "PPV",
    "npv": "NPV",
    "accuracy": "Accuracy",
    "f1": "F1",
}
POINT_NAMES = {
    "at_0.5": "Fixed 0.5",
    "youden": "Youden's J",
    "target_sensitivity": "Target sensitivity",
    "max_f1": "Max F1",
}

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.8em; }
.notice { background: #fdecea; border: 2px solid #c62828; padding: 0.8em 1em; font-weight: 600; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
td.text { text-align: left; }
.ci { color: #666; font-size: 0.85em; }
.figures img { max-width: 48%; margin: 0.5%; border: 1px solid #eee; }
.wide img { max-width: 98%; }
.decision { font-size: 1.1em; padding: 0.6em 1em; border-left: 6px solid; }
.promoted { border-color: #2e7d32; background: #edf7ed; }
.kept { border-color: #ef6c00; background: #fff4e5; }
.gallery figure { display: inline-block; width: 31.5%; margin: 0.5%; vertical-align: top; font-size: 0.8em; }
.gallery img { width: 100%; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
"""


def escape(value: Any) -> str:
    return html.escape(str(value))


def number(value: float | None, digits: int = 3, sign: str = "") -> str:
    """``digits`` decimals (``sign`` "+": signed); n/a where there is no figure (None, or
    nan: an AUROC over data without a positive-negative pair)."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:{sign}.{digits}f}"


def with_ci(entry: dict[str, float | None], digits: int = 3) -> str:
    return (
        f"{number(entry['value'], digits)} "
        f"<span class='ci'>({number(entry['ci_low'], digits)}&ndash;{number(entry['ci_high'], digits)})</span>"
    )


def interval(entry: Mapping[str, float | None], digits: int = 3, sign: str = "") -> str:
    """A figure and its interval as plain text, "value (low to high)", for the benchmarks'
    Markdown tables; n/a where there is no figure."""
    low, high, value = (number(entry[k], digits, sign) for k in ("ci_low", "ci_high", "value"))
    return f"{value} ({low} to {high})"


def confidence(metrics: dict) -> str:
    """``95%``, or whichever confidence the metrics' bootstrap used (never a fixed 95%)."""
    return f"{round(metrics['bootstrap']['confidence'] * 100, 6):g}%"


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def png_image(png: bytes, alt: str) -> str:
    """A PNG inlined as a data URI, so the page stands alone."""
    return f"<img src='data:image/png;base64,{base64.b64encode(png).decode()}' alt='{escape(alt)}'>"


def jpeg_thumbnail(png: bytes, alt: str, width: int = 480) -> str:
    """A PNG as an inlined JPEG at most ``width`` wide (the full-size PNG stays in the store)."""
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    if image is None:  # a committed figure this module drew: only a damaged store gets here
        raise ValueError(f"{alt}: the stored PNG does not decode")
    if image.shape[1] > width:
        height = round(image.shape[0] * width / image.shape[1])
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1]
    data = base64.b64encode(jpeg.tobytes()).decode()
    return f"<img src='data:image/jpeg;base64,{data}' alt='{escape(alt)}'>"


def operating_points_table(metrics: dict) -> str:
    header = ["operating point", "threshold", *list(RATE_NAMES.values()), "TN", "FP", "FN", "TP"]
    rows = []
    for name, point in metrics["operating_points"].items():
        c = point["confusion"]
        rows.append(
            [POINT_NAMES.get(name, name), f"{point['threshold']:.4f}"]
            + [with_ci(point[rate]) for rate in RATE_NAMES]
            + [str(c[k]) for k in ("tn", "fp", "fn", "tp")]
        )
    return html_table(header, rows)
