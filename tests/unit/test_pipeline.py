"""Stage split (``melanoma.pipeline.write_split``): the metadata travel with the split, a
source can be held out as an unseen clinic, and the promotion benchmark is in no split."""

import io

import pandas as pd
import pytest

from melanoma.config import PipelineConfig
from melanoma.ingest import ingest
from melanoma.layout import DatasetLayout
from melanoma.pipeline import write_split
from melanoma.run import Run
from melanoma.sources import find_layout


@pytest.fixture
def manifest_key(mini_archive, file_store) -> str:
    return ingest(find_layout(mini_archive.root), file_store, "test").manifest_key


def test_the_split_carries_source_sex_age_and_site(file_store, manifest_key):
    run = Run.for_run_id(file_store, "all")
    write_split(run, PipelineConfig(seed=0), manifest_key)
    splits = run.splits()
    assert {"dataset", "sex", "age", "localization"} <= set(splits.columns)
    assert set(splits["split"]) == {"train", "val", "test"}
    assert set(splits["dataset"]) == {"vidir_modern", "rosendahl"}
    assert run.read_json("split", "splits_summary")["holdout_source"] is None


def test_holding_out_a_source_tests_on_it_alone(file_store, manifest_key):
    run = Run.for_run_id(file_store, "unseen")
    write_split(run, PipelineConfig(seed=0, holdout_source="rosendahl"), manifest_key)
    splits = run.splits()
    assert set(splits.loc[splits["split"] == "test", "dataset"]) == {"rosendahl"}
    assert set(splits.loc[splits["split"] != "test", "dataset"]) == {"vidir_modern"}
    summary = run.read_json("split", "splits_summary")
    assert summary["holdout_source"] == "rosendahl"
    assert run.config().config["holdout_source"] == "rosendahl"

    with pytest.raises(ValueError, match="'vienna' is not a source"):
        write_split(
            Run.for_run_id(file_store, "typo"),
            PipelineConfig(holdout_source="vienna"),
            manifest_key,
        )


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize(
    "options", [{}, {"holdout_source": "rosendahl"}, {"label_task": "mel_vs_nv"}]
)
def test_no_run_splits_a_lesion_of_the_promotion_benchmark(file_store, manifest_key, seed, options):
    run = Run.for_run_id(file_store, f"r{seed}-{len(options)}")
    write_split(run, PipelineConfig(seed=seed, **options), manifest_key)
    benchmark, splits = run.promotion_benchmark(), run.splits()
    assert len(benchmark) > 0
    assert not set(benchmark["lesion_id"]) & set(splits["lesion_id"])
    # Every image of the label task is in a split or in the benchmark (or, with a held-out
    # source, counted as excluded): nothing is lost silently.
    summary = run.read_json("split", "splits_summary")
    assert summary["promotion_benchmark"]["images"] == len(benchmark)
    version = DatasetLayout(run.config().dataset_version)
    metadata = pd.read_csv(io.BytesIO(file_store.get_bytes(version.metadata)))
    in_task = metadata[metadata["dx"].isin({"mel", "nv"})] if "label_task" in options else metadata
    assert len(splits) + len(benchmark) + summary["excluded_images"] == len(in_task)


def test_the_promotion_benchmark_is_one_per_dataset_version(file_store, manifest_key):
    benchmarks = []
    for seed in (0, 1):
        run = Run.for_run_id(file_store, f"seed{seed}")
        write_split(run, PipelineConfig(seed=seed), manifest_key)
        benchmarks.append(run.promotion_benchmark())
    pd.testing.assert_frame_equal(*benchmarks)


def test_config_json_records_every_stage_as_the_params_resolved_it(file_store, manifest_key):
    from melanoma.params import from_params

    stages = from_params(
        {"split_seed": 0, "phase1_epochs": 40, "image_size": 96}, detected_profile="cpu"
    )
    run = Run.for_run_id(file_store, "resolved")
    profile = {"name": "cpu", "why": "TensorFlow on the training worker sees no GPU"}
    write_split(run, stages.pipeline, manifest_key, stages.resolved(), profile)
    recorded = run.config()
    assert recorded.profile == profile and recorded.config["profile"] == "cpu"
    assert recorded.stages == stages.resolved()
    assert recorded.stages["train"]["phase1_epochs"] == 40
    assert recorded.stages["preprocess"]["config"]["size"] == 96
    assert recorded.config["seed"] == 0 == recorded.stages["evaluation"]["seed"]
