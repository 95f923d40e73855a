"""benchmarks/unseen_clinic.py: which runs are one configuration's full run and hold-outs."""

from melanoma.runs_index import RunSummary
from tests.conftest import load_benchmark


def summary(key: str, holdout: str = "", complete: bool = True, **changed) -> RunSummary:
    return RunSummary(
        key=key,
        run_id=key,
        started=None,
        stage="reported" if complete else "trained",
        committed=("split", "train", "report") if complete else ("split", "train"),
        dataset_version="v1",
        label_task="mel_vs_rest",
        profile="cpu",
        changed=tuple(sorted(changed.items())),
        holdout_source=holdout or None,
    )


def test_a_full_run_and_its_hold_outs_are_one_configuration_whatever_their_robustness():
    bench = load_benchmark("unseen_clinic")
    runs = [  # newest first, as index_runs lists them
        summary("newer_rosendahl", "rosendahl", robustness_images=0),
        summary("full", phase2_epochs=0),
        summary("rosendahl", "rosendahl", phase2_epochs=0, robustness_images=0),
        summary("vienna", "vienna_dias", phase2_epochs=0, robustness_images=0),
        summary("unfinished_vidir", "vidir_modern", complete=False, phase2_epochs=0),
        summary("molemax", "vidir_molemax", phase2_epochs=0),
        summary("other_seed", "vidir_modern", phase2_epochs=0, split_seed=7),
        summary("no_full_run", "rosendahl", split_seed=7),
    ]
    ((full, held_out),) = bench.loso_families(runs)
    assert full.key == "full"
    # Another configuration (phase 2, or another split seed), a run not finished and a
    # source too small for LOSO do not join it; robustness_images is not a model setting.
    assert {s: r.key for s, r in held_out.items()} == {
        "rosendahl": "rosendahl",
        "vienna_dias": "vienna",
    }


def test_of_two_hold_outs_of_one_source_the_newest_counts():
    bench = load_benchmark("unseen_clinic")
    runs = [summary("b", "rosendahl"), summary("a", "rosendahl"), summary("full")]
    ((_, held_out),) = bench.loso_families(runs)
    assert held_out["rosendahl"].key == "b"
