from dataclasses import asdict

import numpy as np
import pytest

from melanoma.config import PipelineConfig
from melanoma.dataset_version import DatasetVersion
from melanoma.evaluation import (
    EvaluationConfig,
    calibrate_run,
    decide_run_promotion,
    evaluate_run,
    promote_run,
)
from melanoma.images import PreprocessConfig, ResolutionParity, check_image, preprocess_image
from melanoma.ingest import ingest
from melanoma.layout import DatasetLayout, champion_key, previous_champion_key
from melanoma.pipeline import write_split
from melanoma.promotion import (
    ChampionCorruptError,
    PromotionPolicy,
    benchmark_inputs,
    benchmark_refusal,
    decide_promotion,
    read_champion,
)
from melanoma.run import Run
from melanoma.sources import find_layout
from tests.scored_run import write_scored_run

POLICY = PromotionPolicy(auroc_margin=0.02, sensitivity_floor=0.8)


def candidate(run_id="new", auroc=0.85, sensitivity=0.9):
    return {
        "run_id": run_id,
        "label_task": "mel_vs_rest",
        "auroc": auroc,
        "sensitivity": sensitivity,
    }


CHAMPION = {"run_id": "old", "label_task": "mel_vs_rest", "auroc": 0.86}


def compared(difference, low=-0.05, high=0.05):
    """Both models on the benchmark, the candidate ``difference`` above the champion."""
    return {
        "images": 400,
        "positives": 40,
        "candidate_auroc": 0.86 + difference,
        "champion_auroc": 0.86,
        "difference": {"value": difference, "ci_low": low, "ci_high": high},
    }


@pytest.mark.parametrize(
    ("run", "champion", "comparison", "promote", "reason"),
    [
        (candidate(sensitivity=0.7), None, None, False, "below the floor"),
        (candidate(sensitivity=0.7), CHAMPION, compared(0.1), False, "below the floor"),
        (candidate(), None, None, True, "no champion yet"),
        (candidate(run_id="old"), CHAMPION, None, False, "already is the champion"),
        (candidate(), CHAMPION, compared(0.04), True, "not worse"),
        (candidate(), CHAMPION, compared(-0.015), True, "not worse"),  # within the margin
        (candidate(), CHAMPION, compared(-0.03), False, "worse by more than the margin"),
        (
            candidate(),
            CHAMPION,
            {"refused": "the benchmark holds no positive images"},
            False,
            "no fair comparison with champion old: the benchmark holds no positive",
        ),
        (
            {**candidate(auroc=0.99), "holdout_source": "rosendahl"},
            None,
            None,
            False,
            "unseen-clinic estimate, never a champion",
        ),
    ],
)
def test_every_branch_of_the_promotion_rule(run, champion, comparison, promote, reason):
    decision = decide_promotion(run, champion, comparison, POLICY)
    assert decision["promote"] is promote
    assert any(reason in r for r in decision["reasons"]), decision["reasons"]


def test_the_reason_gives_the_paired_difference_and_its_interval():
    decision = decide_promotion(candidate(), CHAMPION, compared(-0.012, -0.03, 0.006), POLICY)
    assert "paired difference -0.0120 (-0.0300 to +0.0060)" in decision["reasons"][-1]
    assert "promotion benchmark (400 images, 40 positive" in decision["reasons"][-1]


def test_comparing_needs_both_models_on_the_benchmark():
    with pytest.raises(ValueError, match="promotion benchmark"):
        decide_promotion(candidate(), CHAMPION, None, POLICY)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"run_id": "x"}', "missing field"),
        (
            b'{"run_id": "x", "label_task": "mel_vs_nv", "dataset_version": "v", '
            b'"test_fingerprint": "f", "auroc": 0.9, "operating_point": "youden", '
            b'"threshold": 0.5, "sensitivity": 0.9, "model_key": "m"}',
            "label_task is 'mel_vs_nv'",
        ),
        (
            b'{"run_id": "x", "label_task": "mel_vs_rest", "dataset_version": "v", '
            b'"test_fingerprint": "f", "auroc": "high", "operating_point": "youden", '
            b'"threshold": 0.5, "sensitivity": 0.9, "model_key": "m"}',
            "auroc 'high'",
        ),
    ],
)
def test_a_corrupt_champion_is_an_error_not_a_promotion(file_store, content, problem):
    file_store.put_bytes(champion_key("mel_vs_rest"), content)
    with pytest.raises(ChampionCorruptError, match=problem) as error:
        read_champion(file_store, "mel_vs_rest")
    assert "champions/mel_vs_rest/champion.json" in str(error.value)
    run = evaluated_run(file_store, "new")
    with pytest.raises(ChampionCorruptError):
        decide_run_promotion(run, POLICY)
    assert not run.committed("promote")


def evaluated_run(store, run_id, **kwargs):
    run = write_scored_run(store, run_id, **kwargs)
    config = EvaluationConfig(bootstrap_replicates=100)
    calibrate_run(run, config)
    evaluate_run(run, config)
    return run


def scorer(quality, calls=None):
    """A stand-in for ``training.scoring.score_stored_images``: run key -> how well that
    run's model separates the benchmark's classes (1 perfect, 0 chance)."""

    def score(model_run, data_run, rows):
        if calls is not None:
            calls.append((model_run.layout.key, data_run.layout.key))
        noise = np.random.default_rng(len(rows)).random(len(rows))
        q = quality[model_run.layout.key]
        return q * rows["label"].to_numpy() + (1 - q) * noise

    return score


def test_first_run_is_promoted_then_a_worse_run_keeps_the_champion(file_store):
    policy = PromotionPolicy(sensitivity_floor=0.5)
    good = evaluated_run(file_store, "good")
    score = scorer({"good": 0.6, "worse": 0.1})
    first = decide_run_promotion(good, policy, score)
    assert first["promote"] and first["comparison"] is None
    assert first["candidate"]["benchmark_auroc"]["value"] > 0.95
    promote_run(good)
    champion = read_champion(file_store, "mel_vs_rest")
    assert champion["run_id"] == "good" and champion["benchmark_auroc"]["value"] > 0.95

    worse = evaluated_run(file_store, "worse")
    decision = decide_run_promotion(worse, policy, score)
    assert not decision["promote"]
    comparison = decision["comparison"]
    assert comparison["difference"]["value"] < -0.1
    assert comparison["difference"]["ci_high"] < 0
    assert worse.read_json("promote", "promotion")["promote"] is False
    with pytest.raises(ValueError, match="says not to promote"):
        promote_run(worse)
    assert read_champion(file_store, "mel_vs_rest")["run_id"] == "good"

    # Rerunning the decision for the champion itself changes nothing.
    assert not decide_run_promotion(good, policy, score)["promote"]


def test_champion_and_candidate_are_each_scored_on_the_candidates_benchmark(file_store):
    policy = PromotionPolicy(sensitivity_floor=0.5)
    old = evaluated_run(file_store, "old", seed=3)
    decide_run_promotion(old, policy, scorer({"old": 0.5}))
    promote_run(old)
    new = evaluated_run(file_store, "new", seed=6)
    with pytest.raises(ValueError, match="promotion benchmark"):
        decide_run_promotion(new, policy)  # without a way to score, no comparison

    calls = []
    decision = decide_run_promotion(new, policy, scorer({"old": 0.5, "new": 0.5}, calls))
    # Each model scores the new run's benchmark: the images, never its test split.
    assert calls == [("new", "new"), ("old", "new")]
    assert decision["promote"]
    scores = new.read_csv("promote", "promotion_scores")
    benchmark = new.promotion_benchmark()
    assert list(scores["image_id"]) == list(benchmark["image_id"])
    assert {"candidate", "champion"} <= set(scores.columns)
    assert abs(decision["comparison"]["difference"]["value"]) < 1e-9
    promote_run(new)
    assert file_store.exists(previous_champion_key("mel_vs_rest", "old"))
    assert read_champion(file_store, "mel_vs_rest")["run_id"] == "new"


def test_a_champion_that_learnt_on_the_benchmark_is_not_compared_there(file_store):
    policy = PromotionPolicy(sensitivity_floor=0.5)
    old = evaluated_run(file_store, "old", metadata=True)
    decide_run_promotion(old, policy, scorer({"old": 0.5}))
    promote_run(old)
    # A new run whose benchmark holds lesions the champion trained on, as when the
    # champion came from a dataset whose lesion ids differ.
    learnt = old.splits()
    assert benchmark_refusal(old, learnt[learnt["split"] == "test"]) is None
    overlapping = learnt[learnt["split"] == "train"].drop(columns="split")
    new = evaluated_run(file_store, "new", seed=4, benchmark=overlapping)
    calls = []
    decision = decide_run_promotion(new, policy, scorer({"old": 0.1, "new": 0.9}, calls))
    assert not decision["promote"]
    assert "trained or calibrated on" in decision["comparison"]["refused"]
    assert "no fair comparison with champion old" in decision["reasons"][-1]
    assert calls == [("new", "new")]  # the champion is not scored where it would be unfair
    assert "no positive images" in benchmark_refusal(old, learnt[learnt["label"] == 0])


def test_each_model_scores_the_benchmark_through_its_own_preprocessing(mini_archive, file_store):
    # A champion trained with colour constancy is scored with colour constancy, at its own
    # size and training resolution, whatever the candidate's preprocessing was.
    parity = ResolutionParity(60, 75)  # the stored images are 120x90 JPEGs at quality 90
    manifest_key = ingest(find_layout(mini_archive.root), file_store, "test").manifest_key
    manifest = file_store.get_json(manifest_key)
    configs = {
        "champion": PreprocessConfig(size=48, color_constancy=True),
        "candidate": PreprocessConfig(size=32),
    }
    runs = {}
    for run_id, config in configs.items():
        run = Run.for_run_id(file_store, run_id)
        write_split(run, PipelineConfig(seed=0), manifest_key)
        with run.stage("preprocess") as stage:
            stage.data = {"preprocess_config": asdict(config), **parity.record()}
        runs[run_id] = run
    rows = runs["candidate"].promotion_benchmark()
    stored = [
        file_store.get_bytes(
            DatasetLayout(manifest["dataset_version"]).file(
                DatasetVersion(manifest).image_relative(i)
            )
        )
        for i in rows["image_id"]
    ]
    for run_id, config in configs.items():
        inputs = benchmark_inputs(runs[run_id], runs["candidate"], rows)
        # As melanoma-predict treats a file (training.scoring.model_input).
        expected = [
            preprocess_image(data, config, check_image(data), parity=parity) for data in stored
        ]
        np.testing.assert_array_equal(inputs, np.stack(expected))
    without_constancy = PreprocessConfig(size=48)
    plain = np.stack(
        [preprocess_image(d, without_constancy, check_image(d), parity=parity) for d in stored]
    )
    assert not np.array_equal(benchmark_inputs(runs["champion"], runs["candidate"], rows), plain)
