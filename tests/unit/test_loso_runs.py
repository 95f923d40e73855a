"""melanoma.loso_runs: which runs are one configuration's full run and hold-outs, and the
sources of what they scored."""

import re

import pytest

from melanoma.layout import RunLayout, run_key
from melanoma.loso_runs import loso_families, sourced_test_predictions
from melanoma.run import Run
from melanoma.runs_index import RunSummary, index_runs
from melanoma.store import FileStore
from tests.scored_run import write_scored_run


def summary(
    key: str, holdout: str = "", complete: bool = True, store: str = "file:///a", **train
) -> RunSummary:
    """A run as the runs page lists it: its resolved stages as config.json records them."""
    resolved = {
        "pipeline": {
            "seed": train.pop("seed", 42),
            "label_task": "mel_vs_rest",
            "holdout_source": holdout,
            "store_url": store,
            "pretrained_weights": train.pop("weights", "imagenet.h5"),
        },
        "preprocess": {"config": {"size": 150, "width": 200}},
        "train": {"phase2_epochs": 6, **train},
        "robustness": {"images": 0 if holdout else 1500},
    }
    return RunSummary(
        key=key,
        run_id=key,
        started=None,
        stage="reported" if complete else "trained",
        committed=("split", "train", "report") if complete else ("split", "train"),
        dataset_version="v1",
        label_task="mel_vs_rest",
        backbone="mobilenet_v2",
        profile="cpu",
        resolved=resolved,
        holdout_source=holdout or None,
    )


def test_a_full_run_and_its_hold_outs_are_one_configuration_wherever_they_were_stored():
    runs = [  # newest first, as index_runs lists them
        summary("phase2_off", "rosendahl", phase2_epochs=0),
        summary("full"),
        summary("rosendahl", "rosendahl", store="file:///b"),
        summary("vienna", "vienna_dias"),
        summary("unfinished_vidir", "vidir_modern", complete=False),
        summary("molemax", "vidir_molemax"),
        summary("other_seed", "vidir_modern", seed=7),
        summary("other_weights", "vidir_modern", weights="none"),
    ]
    ((full, held_out),) = loso_families(runs)
    assert full.key == "full"
    # Another configuration (no phase 2, another split seed, other starting weights), a
    # run not finished and a source too small for LOSO do not join it; where a run was
    # stored and how many images its robustness stage rendered do not set it apart.
    assert {s: r.key for s, r in held_out.items()} == {
        "rosendahl": "rosendahl",
        "vienna_dias": "vienna",
    }


def test_of_two_hold_outs_of_one_source_the_newest_counts():
    runs = [summary("b", "rosendahl"), summary("a", "rosendahl"), summary("full")]
    ((_, held_out),) = loso_families(runs)
    assert held_out["rosendahl"].key == "b"


def stored(tmp_path, metadata: bool):
    """A run with fabricated test predictions in a file store, and its summary."""
    store = FileStore(tmp_path / "store")
    run_id = "manual__2026-12-06T09:00:00+00:00"
    write_scored_run(store, run_id, metadata=metadata, sources=["rosendahl", "vienna_dias"])
    return store, index_runs(store, cache=None).find(run_key(run_id))


def test_each_scored_test_image_takes_its_source_from_the_split(tmp_path):
    store, run = stored(tmp_path, metadata=True)
    predictions = sourced_test_predictions(store, run)
    splits = Run(store, RunLayout(run.key)).splits().set_index("image_id")
    assert len(predictions) == len(Run(store, RunLayout(run.key)).predictions("test"))
    assert (predictions["source"] == splits.loc[predictions["image_id"], "dataset"].values).all()
    assert set(predictions["source"]) == {"rosendahl", "vienna_dias"}


def test_a_split_that_records_no_sources_is_refused_naming_the_run(tmp_path):
    store, run = stored(tmp_path, metadata=False)  # splits.csv from before sources: a header
    with pytest.raises(
        ValueError, match=rf"run {re.escape(run.key)}: its split records no sources"
    ):
        sourced_test_predictions(store, run)
