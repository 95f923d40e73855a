import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from melanoma.layout import run_key
from melanoma.run import Run
from melanoma.runs_compare import (
    CURVE_POINTS,
    check_compared,
    config_rows,
    curves_on_test,
    flatten,
    paired_differences,
)
from melanoma.runs_index import index_runs
from melanoma.store import FileStore
from tests.scored_run import write_external_set, write_reported_run

STRONG = "manual__2026-11-20T09:00:00+00:00"
WEAK = "manual__2026-11-21T09:00:00+00:00"
OTHER_SPLIT = "manual__2026-11-22T09:00:00+00:00"


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    file_store = FileStore(tmp_path_factory.mktemp("compared") / "store")
    write_reported_run(file_store, STRONG, strength=3.0, phase2_epochs=0)
    write_reported_run(file_store, WEAK, strength=1.0)
    write_reported_run(file_store, OTHER_SPLIT, strength=3.0, seed=1)
    for run_id in (STRONG, WEAK):
        write_external_set(Run.for_run_id(file_store, run_id), "site_a")
    index = index_runs(file_store, cache=None)
    return file_store, [index.find(run_key(r)) for r in (WEAK, STRONG, OTHER_SPLIT)]


def test_two_to_four_distinct_runs_are_compared():
    assert check_compared(["a", "b", "a"]) == ["a", "b"]
    for keys in (["a"], ["a", "a"], ["a", "b", "c", "d", "e"]):
        with pytest.raises(ValueError, match="tick 2 to 4 runs"):
            check_compared(keys)


def test_config_rows_mark_what_differs_first_and_ignore_what_a_run_did_not_record(compared):
    _, runs = compared
    rows = config_rows(runs)
    differing = {row.name: row.values for row in rows if row.differs}
    assert differing["train.phase2_epochs"] == (1, 0, 1)
    assert differing["pipeline.seed"] == (0, 0, 1)
    assert "train.batch_size" not in differing
    assert [row.differs for row in rows] == sorted((row.differs for row in rows), reverse=True)
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": 1, "a.c": [1, 2], "d": None}
    older = type(rows[0])("train.phase2_schedule", ("constant", None, "constant"))
    assert not older.differs


def test_paired_differences_are_made_only_on_the_images_two_runs_share(compared):
    store, runs = compared
    weak, strong, other = runs
    differences = paired_differences(store, runs)
    made = {(d.image_set, d.run) for d in differences}
    # The other split's test images are not the weak run's: no test comparison with it.
    assert made == {
        ("test", strong.key),
        ("promotion benchmark", strong.key),
        ("promotion benchmark", other.key),
        ("external site_a", strong.key),
    }
    test = next(d for d in differences if d.image_set == "test")
    scores = {
        r.key: Run(store, Run.find(store, r.key).layout).predictions("test") for r in (weak, strong)
    }
    expected = roc_auc_score(
        scores[strong.key]["label"], scores[strong.key]["probability"]
    ) - roc_auc_score(scores[weak.key]["label"], scores[weak.key]["probability"])
    assert test.difference["value"] == pytest.approx(expected)
    assert test.reference == weak.key and test.difference["ci_low"] > 0
    assert test.images == len(scores[weak.key])


def test_curves_come_from_the_stored_test_predictions(compared):
    store, runs = compared
    curves = curves_on_test(store, runs)
    assert [c.run for c in curves] == [r.key for r in runs]
    for curve, run in zip(curves, runs, strict=True):
        roc = np.array(curve.roc)
        assert len(roc) <= CURVE_POINTS and tuple(roc[0]) == (0, 0) and tuple(roc[-1]) == (1, 1)
        assert np.all(np.diff(roc[:, 0]) >= 0) and np.all(np.diff(roc[:, 1]) >= 0)
        area = float(np.sum(np.diff(roc[:, 0]) * (roc[1:, 1] + roc[:-1, 1]) / 2))
        assert area == pytest.approx(run.auroc["value"], abs=0.01)
        recall = np.array(curve.pr)[:, 0]
        assert recall[0] == 0 and recall[-1] == 1
