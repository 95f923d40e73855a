import pandas as pd
import pytest

from melanoma.ham10000 import MetadataSchemaError, apply_label_task, label_task, validate_metadata


def table(*rows: tuple[str, str, str, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["lesion_id", "image_id", "dx", "age"], dtype=str)


ALL_DX = table(
    *[
        (f"HAM_{i}", f"ISIC_000000{i}", dx, "50")
        for i, dx in enumerate(["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"])
    ]
)


@pytest.mark.parametrize(
    ("task", "kept", "positives"),
    [
        ("mel_vs_rest", 7, {"mel"}),
        ("malignant_vs_benign", 7, {"mel", "bcc", "akiec"}),
        ("mel_vs_nv", 2, {"mel"}),
    ],
)
def test_label_tasks(task, kept, positives):
    rows = apply_label_task(ALL_DX, task)
    assert len(rows) == kept
    assert set(rows.loc[rows["label"] == 1, "dx"]) == positives
    assert rows["label"].isin([0, 1]).all()


def test_unknown_label_task_names_the_choices():
    with pytest.raises(ValueError, match="mel_vs_nv"):
        label_task("melanoma")


def test_valid_metadata_passes_and_age_becomes_numeric():
    valid, problems = validate_metadata(ALL_DX, "meta.csv")
    assert problems == []
    assert len(valid) == 7
    assert valid["age"].dtype.kind in "if"


def test_missing_column_rejects_the_file_naming_the_column():
    with pytest.raises(MetadataSchemaError, match=r"meta\.csv.*'dx'"):
        validate_metadata(ALL_DX.drop(columns="dx"), "meta.csv")


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (("HAM_9", "ISIC_0000009", "melanoma", "40"), "unknown dx"),
        (("HAM_9", "ISIC_9", "mel", "40"), "malformed image_id"),
        (("", "ISIC_0000009", "mel", "40"), "empty lesion_id"),
        (("HAM_9", "ISIC_0000009", "mel", "forty"), "age is not a number"),
        (("HAM_1", "ISIC_0000001", "bcc", "50"), "duplicate image_id (first at row 3)"),
        (("HAM_1", "ISIC_0000001", "bcc", "65"), "duplicate image_id (first at row 3)"),
    ],
)
def test_bad_rows_are_rejected_with_row_number_and_reason(row, reason):
    raw = pd.concat([ALL_DX, table(row)], ignore_index=True)
    valid, problems = validate_metadata(raw, "meta.csv")
    assert len(valid) == 7
    assert len(problems) == 1
    assert problems[0].row == 9  # header is line 1, the 8th data row is line 9
    assert reason in problems[0].reason


def test_rows_that_disagree_on_an_image_are_all_rejected_each_naming_the_other():
    # ISIC_0000001 is bcc in row 3 and mel, of another lesion, in row 9: neither is trusted.
    raw = pd.concat([ALL_DX, table(("HAM_9", "ISIC_0000001", "mel", "50"))], ignore_index=True)
    valid, problems = validate_metadata(raw, "meta.csv")
    assert "ISIC_0000001" not in set(valid["image_id"]) and len(valid) == 6
    assert [p.row for p in problems] == [3, 9]
    assert "this row says dx=bcc, lesion_id=HAM_1; row 9 says dx=mel, lesion_id=HAM_9" in (
        problems[0].reason
    )
    assert "row 3 says dx=bcc" in problems[1].reason


@pytest.mark.parametrize("age", ["-5", "999", "121"])
def test_an_impossible_age_rejects_its_row(age):
    raw = pd.concat([ALL_DX, table(("HAM_9", "ISIC_0000009", "mel", age))], ignore_index=True)
    valid, problems = validate_metadata(raw, "meta.csv")
    assert len(valid) == 7 and problems[0].reason == "age outside 0 to 120"
