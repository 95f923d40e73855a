"""Inline SVG charts for the runs page: drawn on the server, no JavaScript, no library.

A ``Frame`` maps data to pixels and draws the axes; ``curve_chart`` overlays curves
(ROC, precision-recall), ``trend_chart`` puts one point per run in time order, with
interval bars and marked promotions. Every point carries its value in ``data-*``
attributes and a ``<title>`` tooltip, so what is drawn can be checked against the store.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

# Colour-blind-safe (Okabe-Ito), in the order series take them.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")


def _attr(value: object) -> str:
    return html.escape(str(value), quote=True)


@dataclass(frozen=True)
class Frame:
    """A plot area of ``width`` x ``height`` pixels inside margins, for data in
    ``x_range`` x ``y_range``."""

    width: int
    height: int
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    margin: tuple[int, int, int, int] = (12, 16, 40, 52)  # top, right, bottom, left

    def x(self, value: float) -> float:
        low, high = self.x_range
        span = (high - low) or 1.0
        return round(self.margin[3] + (value - low) / span * self.width, 2)

    def y(self, value: float) -> float:
        low, high = self.y_range
        span = (high - low) or 1.0
        return round(self.margin[0] + (1 - (value - low) / span) * self.height, 2)

    @property
    def size(self) -> tuple[int, int]:
        top, right, bottom, left = self.margin
        return self.width + left + right, self.height + top + bottom

    def axes(self, x_label: str, y_label: str, y_ticks: Sequence[float]) -> str:
        top, _, _, left = self.margin
        bottom = top + self.height
        parts = [
            f"<line x1='{left}' y1='{bottom}' x2='{left + self.width}' y2='{bottom}' stroke='#444'/>",
            f"<line x1='{left}' y1='{top}' x2='{left}' y2='{bottom}' stroke='#444'/>",
        ]
        for tick in y_ticks:
            y = self.y(tick)
            parts.append(
                f"<line x1='{left}' y1='{y}' x2='{left + self.width}' y2='{y}' stroke='#eee'/>"
                f"<text x='{left - 6}' y='{y + 4}' text-anchor='end' font-size='11'>{tick:g}</text>"
            )
        parts.append(
            f"<text x='{left + self.width / 2}' y='{bottom + 32}' text-anchor='middle' "
            f"font-size='12'>{_attr(x_label)}</text>"
            f"<text transform='translate(14 {top + self.height / 2}) rotate(-90)' "
            f"text-anchor='middle' font-size='12'>{_attr(y_label)}</text>"
        )
        return "".join(parts)

    def svg(self, body: str, label: str) -> str:
        width, height = self.size
        return (
            f"<svg width='{width}' height='{height}' "
            f"viewBox='0 0 {width} {height}' role='img' aria-label='{_attr(label)}'>"
            f"{body}</svg>"
        )


@dataclass(frozen=True)
class Curve:
    name: str
    points: Sequence[tuple[float, float]]


def curve_chart(curves: Sequence[Curve], x_label: str, y_label: str, title: str) -> str:
    """Curves overlaid on [0, 1] x [0, 1], each in its palette colour, with a legend."""
    frame = Frame(320, 260, (0.0, 1.0), (0.0, 1.0))
    body = [frame.axes(x_label, y_label, (0, 0.25, 0.5, 0.75, 1))]
    for i, curve in enumerate(curves):
        colour = PALETTE[i % len(PALETTE)]
        points = " ".join(f"{frame.x(x)},{frame.y(y)}" for x, y in curve.points)
        body.append(
            f"<polyline class='curve' data-run='{_attr(curve.name)}' points='{points}' "
            f"fill='none' stroke='{colour}' stroke-width='2'><title>{_attr(curve.name)}</title>"
            "</polyline>"
        )
    return frame.svg("".join(body), title)


@dataclass(frozen=True)
class TrendPoint:
    """One run's value in one series (test, or an external set)."""

    series: str
    run: str  # run key
    label: str  # what the tooltip says of the run
    value: float
    ci: tuple[float, float] | None = None
    promoted: bool = False


def trend_chart(runs: Sequence[str], points: Sequence[TrendPoint], title: str) -> str:
    """Runs in time order along x (``runs``: oldest first), AUROC up; one colour per
    series, interval bars where given, and a ring round each promoted run's point."""
    series = list(dict.fromkeys(p.series for p in points))
    values = [v for p in points for v in (p.value, *(p.ci or ()))]
    low = min([0.5, *values])
    high = max([1.0, *values])
    frame = Frame(max(360, min(18 * len(runs), 1200)), 240, (-0.5, len(runs) - 0.5), (low, high))
    ticks = [t / 10 for t in range(int(low * 10), int(high * 10) + 1)]
    body = [frame.axes("runs, oldest first", "AUROC", ticks)]
    position = {run: i for i, run in enumerate(runs)}
    # Series side by side within a run's slot, so their bars never hide each other.
    step = 0.6 / max(len(series), 1)
    for p in points:
        index = series.index(p.series)
        colour = PALETTE[index % len(PALETTE)]
        x = frame.x(position[p.run] - 0.3 + step * (index + 0.5))
        y = frame.y(p.value)
        if p.ci:
            body.append(
                f"<line class='interval' x1='{x}' x2='{x}' y1='{frame.y(p.ci[0])}' "
                f"y2='{frame.y(p.ci[1])}' stroke='{colour}' stroke-width='1.5'/>"
            )
        if p.promoted:
            body.append(
                f"<circle class='promotion' cx='{x}' cy='{y}' r='7.5' fill='none' "
                f"stroke='#2e7d32' stroke-width='2'/>"
            )
        tooltip = f"{p.label} · {p.series} AUROC {p.value:.3f}" + (
            f" ({p.ci[0]:.3f} to {p.ci[1]:.3f})" if p.ci else ""
        )
        body.append(
            f"<circle class='point' cx='{x}' cy='{y}' r='4' fill='{colour}' "
            f"data-series='{_attr(p.series)}' data-run='{_attr(p.run)}' "
            f"data-value='{p.value:.6f}'><title>{_attr(tooltip)}</title></circle>"
        )
    return frame.svg("".join(body), title) + legend(series, promoted=True)


def legend(names: Sequence[str], promoted: bool = False) -> str:
    """Each name with its palette colour, in order (and the promotion ring)."""
    items = "".join(
        f"<span class='legend'><span class='swatch' style='background:{PALETTE[i % len(PALETTE)]}'>"
        f"</span>{html.escape(name)}</span>"
        for i, name in enumerate(names)
    )
    ring = "<span class='legend'><span class='ring'></span>promoted</span>" if promoted else ""
    return f"<div class='legends'>{items}{ring}</div>"
