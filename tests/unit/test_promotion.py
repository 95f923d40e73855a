import pytest

from melanoma.evaluation import (
    EvaluationConfig,
    calibrate_run,
    decide_run_promotion,
    evaluate_run,
    promote_run,
)
from melanoma.layout import champion_key, previous_champion_key
from melanoma.promotion import (
    ChampionCorruptError,
    PromotionPolicy,
    decide_promotion,
    read_champion,
)
from tests.scored_run import scored_split, write_scored_run

POLICY = PromotionPolicy(auroc_margin=0.02, sensitivity_floor=0.8)


def candidate(run_id="new", auroc=0.85, sensitivity=0.9):
    return {
        "run_id": run_id,
        "label_task": "mel_vs_rest",
        "auroc": auroc,
        "sensitivity": sensitivity,
    }


CHAMPION = {"run_id": "old", "label_task": "mel_vs_rest", "auroc": 0.86}


@pytest.mark.parametrize(
    ("run", "champion", "champion_auroc", "promote", "reason"),
    [
        (candidate(sensitivity=0.7), None, None, False, "below the floor"),
        (candidate(sensitivity=0.7, auroc=0.99), CHAMPION, 0.86, False, "below the floor"),
        (candidate(), None, None, True, "no champion yet"),
        (candidate(run_id="old"), CHAMPION, None, False, "already is the champion"),
        (candidate(auroc=0.90), CHAMPION, 0.86, True, "not worse"),
        (candidate(auroc=0.845), CHAMPION, 0.86, True, "not worse"),  # within the margin
        (candidate(auroc=0.83), CHAMPION, 0.86, False, "worse by more than the margin"),
        (
            {**candidate(auroc=0.99), "holdout_source": "rosendahl"},
            None,
            None,
            False,
            "unseen-clinic estimate, never a champion",
        ),
    ],
)
def test_every_branch_of_the_promotion_rule(run, champion, champion_auroc, promote, reason):
    decision = decide_promotion(run, champion, champion_auroc, POLICY)
    assert decision["promote"] is promote
    assert any(reason in r for r in decision["reasons"]), decision["reasons"]


def test_comparing_needs_the_champions_auroc_on_this_split():
    with pytest.raises(ValueError, match="this test split"):
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


def test_first_run_is_promoted_then_a_worse_run_keeps_the_champion(file_store):
    policy = PromotionPolicy(sensitivity_floor=0.5)
    test = scored_split(300, 5, 3.0, "t")  # both runs on one test split
    good = evaluated_run(file_store, "good", strength=3.0, test=test)
    assert decide_run_promotion(good, policy)["promote"]
    promote_run(good)
    champion = read_champion(file_store, "mel_vs_rest")
    assert champion["run_id"] == "good"

    worse_test = test.assign(probability=0.5 + (test["probability"] - 0.5) * 0.1)
    worse_test.loc[::3, "probability"] = 1 - worse_test.loc[::3, "probability"]
    worse = evaluated_run(file_store, "worse", test=worse_test)
    decision = decide_run_promotion(worse, policy)
    assert not decision["promote"] and not decision["champion_rescored"]
    assert worse.read_json("promote", "promotion")["promote"] is False
    with pytest.raises(ValueError, match="says not to promote"):
        promote_run(worse)
    assert read_champion(file_store, "mel_vs_rest")["run_id"] == "good"

    # Rerunning the decision for the champion itself changes nothing.
    assert not decide_run_promotion(good, policy)["promote"]


def test_a_champion_tested_on_another_split_is_rescored_on_this_one(file_store):
    policy = PromotionPolicy(sensitivity_floor=0.5)
    old = evaluated_run(file_store, "old", test=scored_split(300, 5, 3.0, "t"))
    decide_run_promotion(old, policy)
    promote_run(old)
    new = evaluated_run(file_store, "new", test=scored_split(300, 6, 3.0, "t"))
    with pytest.raises(ValueError, match="re-scored"):
        decide_run_promotion(new, policy)

    calls = []
    new_test = scored_split(300, 6, 3.0, "t")

    def rescore(champion_run, run):
        calls.append((champion_run.layout.key, run.layout.key))
        return new_test.assign(probability=new_test["label"] * 0.9 + 0.05)  # a perfect champion

    decision = decide_run_promotion(new, policy, rescore)
    assert calls == [("old", "new")]
    assert decision["champion_rescored"] and decision["champion_auroc_on_this_test_split"] == 1.0
    assert not decision["promote"]
    promoted_again = decide_run_promotion(
        new, policy, lambda champion_run, run: new_test.assign(probability=0.5)
    )
    assert promoted_again["promote"]
    promote_run(new)
    assert file_store.exists(previous_champion_key("mel_vs_rest", "old"))
    assert read_champion(file_store, "mel_vs_rest")["run_id"] == "new"
