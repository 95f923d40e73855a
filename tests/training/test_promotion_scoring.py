"""The promotion stage with real models: champion and challenger scored on the promotion
benchmark's stored images, each through its own preprocessing (training.scoring)."""

import numpy as np

from melanoma.config import TrainConfig
from melanoma.evaluation import EvaluationConfig, calibrate_run, decide_run_promotion, evaluate_run
from melanoma.layout import champion_key, previous_champion_key
from melanoma.promotion import PromotionPolicy
from tests.trained_runs import FAST, copy_run
from training.scoring import score_stored_images
from training.train import train_run


def test_a_challenger_is_compared_with_the_champion_on_the_benchmark(
    evaluated_run, preprocessed_run
):
    store = evaluated_run.store
    policy = PromotionPolicy(sensitivity_floor=0.0)
    challenger = copy_run(preprocessed_run, "t-challenger")
    train_run(challenger, TrainConfig(**{**FAST, "phase1_epochs": 3, "seed": 1}))
    config = EvaluationConfig(bootstrap_replicates=100)
    calibrate_run(challenger, config)
    evaluate_run(challenger, config)
    try:
        first = decide_run_promotion(evaluated_run, policy, score_stored_images)
        assert first["promote"], first["reasons"]
        store.put_json(champion_key("mel_vs_rest"), first["candidate"])

        decision = decide_run_promotion(challenger, policy, score_stored_images)
        comparison = decision["comparison"]
        benchmark = challenger.promotion_benchmark()
        assert comparison["images"] == len(benchmark) > 0
        scores = challenger.read_csv("promote", "promotion_scores")
        # The champion's column is its model on the challenger's benchmark images.
        np.testing.assert_allclose(
            scores["champion"],
            score_stored_images(evaluated_run, challenger, benchmark),
            atol=1e-5,
        )
        assert comparison["champion_auroc"] > 0.8 and comparison["candidate_auroc"] > 0.8
        difference = comparison["difference"]
        assert difference["ci_low"] <= difference["value"] <= difference["ci_high"]
        assert "promotion benchmark" in decision["reasons"][-1]
    finally:
        store.delete(champion_key("mel_vs_rest"))
        store.delete(previous_champion_key("mel_vs_rest", "t-evaluated"))
