"""Stage split (``melanoma.pipeline.write_split``): the metadata travel with the split, and a
source can be held out as an unseen clinic."""

import pytest

from melanoma.config import PipelineConfig
from melanoma.ingest import ingest
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
