import re

from melanoma.svg_chart import Curve, Frame, TrendPoint, curve_chart, trend_chart


def test_a_frame_maps_data_to_the_plot_area():
    frame = Frame(200, 100, (0.0, 1.0), (0.5, 1.0), margin=(10, 5, 20, 30))
    assert (frame.x(0), frame.x(1)) == (30, 230)
    assert (frame.y(1), frame.y(0.5), frame.y(0.75)) == (10, 110, 60)
    assert frame.size == (235, 130)


def test_trend_points_carry_their_values_higher_is_up_and_promotions_are_ringed():
    points = [
        TrendPoint("test", "r1", "run 1", 0.80, (0.75, 0.85), promoted=True),
        TrendPoint("test", "r2", "run 2", 0.90, (0.86, 0.93)),
        TrendPoint("external a", "r2", "run 2", 0.70),
    ]
    svg = trend_chart(["r1", "r2"], points, "trend")
    circles = re.findall(
        r"<circle class='point' cx='([\d.]+)' cy='([\d.]+)'.*?data-series='([^']+)' "
        r"data-run='([^']+)' data-value='([\d.]+)'",
        svg,
    )
    assert [(s, r, float(v)) for _, _, s, r, v in circles] == [
        ("test", "r1", 0.8),
        ("test", "r2", 0.9),
        ("external a", "r2", 0.7),
    ]
    (x1, y1), (x2, y2), (_, y3) = [(float(x), float(y)) for x, y, *_ in circles]
    assert x1 < x2 and y2 < y1 < y3  # later runs to the right; a higher AUROC is drawn higher
    assert svg.count("class='promotion'") == 1 and svg.count("class='interval'") == 2
    assert "run 1 · test AUROC 0.800 (0.750 to 0.850)" in svg


def test_curves_are_overlaid_one_polyline_each():
    svg = curve_chart(
        [Curve("a", [(0, 0), (1, 1)]), Curve("b", [(0, 0), (0, 1), (1, 1)])], "x", "y", "t"
    )
    assert svg.count("<polyline") == 2 and "data-run='b'" in svg
