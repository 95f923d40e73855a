"""melanoma.loso_runs: which runs are one configuration's full run and hold-outs."""

from melanoma.loso_runs import loso_families
from melanoma.runs_index import RunSummary


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
