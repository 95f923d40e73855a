"""melanoma.report_html: how figures print."""

from melanoma.report_html import interval, number


def test_a_figure_without_a_positive_negative_pair_prints_n_a_not_nan():
    assert number(float("nan")) == "n/a"
    assert interval({"value": float("nan"), "ci_low": None, "ci_high": None}) == (
        "n/a (n/a to n/a)"
    )
    assert interval({"value": -0.05, "ci_low": -0.1, "ci_high": 0.0}, sign="+") == (
        "-0.050 (-0.100 to +0.000)"
    )
