"""The second matrix's metadata rows (issue 28): identifiers pandas would read as missing,
rows that contradict each other, impossible values, and messages that named the wrong cause.

Each row edits a real generated archive's metadata CSV, ingests it into a real file store,
and asserts the reject reason, what is kept, and that the raw file is unchanged.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import pandas as pd
import pytest

from melanoma.config import PipelineConfig
from melanoma.ham10000 import MetadataSchemaError
from melanoma.ingest import ingest
from melanoma.pipeline import write_split
from melanoma.run import Run
from melanoma.sources import find_layout

MISSING_SPELLINGS = ["NaN", "NA", "NULL", "None"]


def edit_metadata(archive, change: Callable[[pd.DataFrame], pd.DataFrame]) -> str:
    """Rewrite the archive's metadata CSV through ``change``; return its new sha256."""
    path = archive.root / "HAM10000_metadata.csv"
    rows = pd.read_csv(path, dtype=str, keep_default_na=False)
    change(rows).to_csv(path, index=False)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_lesion_ids_spelled_like_missing_values_keep_their_images_in_the_splits(
    mini_archive, file_store
):
    # Four lesions renamed NaN, NA, NULL, None: pandas' defaults read each as missing.
    lesions = list(dict.fromkeys(mini_archive.metadata["lesion_id"]))[:4]
    renamed = dict(zip(lesions, MISSING_SPELLINGS, strict=True))
    edit_metadata(mini_archive, lambda d: d.assign(lesion_id=d["lesion_id"].replace(renamed)))
    manifest_key = ingest(find_layout(mini_archive.root), file_store, "test").manifest_key
    run = Run.for_run_id(file_store, "missing-spellings")
    write_split(run, PipelineConfig(seed=0), manifest_key)

    placed = pd.concat([run.splits(), run.promotion_benchmark()])
    assert len(placed) == len(mini_archive.metadata)  # every image in a split or the benchmark
    assert set(MISSING_SPELLINGS) <= set(placed["lesion_id"])
    # Each renamed lesion is still one lesion, in one split.
    assert placed.groupby("lesion_id")["split"].nunique(dropna=False).max() == 1
    assert run.read_json("split", "splits_summary")["excluded_images"] == 0


def _conflict(d: pd.DataFrame) -> pd.DataFrame:
    """The first image again, once as nv and once as a histology-confirmed melanoma."""
    first = d.iloc[0].copy()
    return pd.concat(
        [d.assign(dx=d["dx"].where(d.index != 0, "nv")), first.to_frame().T.assign(dx="mel")],
        ignore_index=True,
    )


def _agreeing_duplicate(d: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([d, d.iloc[[0]]], ignore_index=True)


def _arabic_indic(d: pd.DataFrame) -> pd.DataFrame:
    digits = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
    return d.assign(
        image_id=d["image_id"].where(d.index != 0, d.at[0, "image_id"].translate(digits))
    )


# (case, metadata edit, the first row's reject reason, images kept of the archive's n)
ROW_CASES = [
    (
        "the same image_id as nv and as mel",
        _conflict,
        r"conflicting rows for ISIC_\d+: this row says dx=nv, lesion_id=HAM_\d+; row \d+ says "
        r"dx=mel",
        -1,
    ),
    ("the same row twice", _agreeing_duplicate, r"duplicate image_id \(first at row 2\)", 0),
    (
        "age -5",
        lambda d: d.assign(age=d["age"].where(d.index != 0, "-5")),
        "age outside 0 to 120",
        -1,
    ),
    (
        "age 999",
        lambda d: d.assign(age=d["age"].where(d.index != 0, "999")),
        "age outside 0 to 120",
        -1,
    ),
    ("an image id in Arabic-Indic digits", _arabic_indic, "malformed image_id", -1),
]


@pytest.mark.parametrize(
    ("case", "edit", "reason", "lost"), ROW_CASES, ids=[c[0] for c in ROW_CASES]
)
def test_a_bad_metadata_row_is_rejected_with_its_reason_and_the_rest_kept(
    case, edit, reason, lost, mini_archive, file_store
):
    raw_sha = edit_metadata(mini_archive, edit)
    result = ingest(find_layout(mini_archive.root), file_store, "test", min_image_share=0.5)
    rejected = result.manifest["validation"]["rejected_rows"]
    assert rejected and re.search(reason, rejected[0]["reason"]), rejected
    assert result.manifest["counts"]["images"] == len(mini_archive.metadata) + lost
    # What was rejected is listed in the quarantine; the user's file is as they wrote it.
    assert result.manifest["counts"]["rejected_rows"] == len(rejected)
    path = mini_archive.root / "HAM10000_metadata.csv"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == raw_sha


@pytest.mark.parametrize(
    ("case", "edit", "message"),
    [
        (
            "every dx in upper case",
            lambda d: d.assign(dx=d["dx"].str.upper()),
            r"every one of its \d+ rows was rejected; unknown dx \(.*in lower case\)",
        ),
        (
            "image ids written with .jpg",
            lambda d: d.assign(image_id=d["image_id"] + ".jpg"),
            r"every one of its \d+ rows was rejected; malformed image_id .*no file extension",
        ),
    ],
)
def test_metadata_whose_every_row_is_rejected_says_why_not_that_images_are_missing(
    case, edit, message, mini_archive, file_store
):
    edit_metadata(mini_archive, edit)
    with pytest.raises(MetadataSchemaError, match=message) as error:
        ingest(find_layout(mini_archive.root), file_store, "test")
    assert "HAM10000_metadata.csv" in str(error.value) and "\n" not in str(error.value)
    assert not list(file_store.list("datasets/"))
