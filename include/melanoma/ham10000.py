"""HAM10000 schema, diagnosis codes, label tasks and metadata validation (pure logic).

Tschandl, Rosendahl & Kittler, "The HAM10000 dataset, a large collection of
multi-source dermatoscopic images of common pigmented skin lesions",
Sci. Data 5, 180161 (2018).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

# The seven diagnostic categories of HAM10000.
DX_CODES: dict[str, str] = {
    "akiec": "actinic keratosis / intraepithelial carcinoma",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic nevus",
    "vasc": "vascular lesion",
}
# Each diagnosis's index in DX_CODES: the multiclass head's class order.
DX_INDEX: dict[str, int] = {dx: i for i, dx in enumerate(DX_CODES)}
REQUIRED_COLUMNS: tuple[str, ...] = ("lesion_id", "image_id", "dx")
# Present in the official file; checked for type when present, not required.
OPTIONAL_COLUMNS: tuple[str, ...] = ("dx_type", "age", "sex", "localization")
# The values of Dataverse's ``dataset`` column: the clinic and device an image came from.
SOURCES: tuple[str, ...] = ("rosendahl", "vidir_modern", "vidir_molemax", "vienna_dias")
# ASCII digits only: ``\d`` would also take Arabic-Indic and other Unicode digits.
IMAGE_ID_PATTERN = re.compile(r"^ISIC_[0-9]{7}$")
# The ages a patient can have; anything else is a typo or a placeholder (-1, 999).
AGE_RANGE: tuple[int, int] = (0, 120)


class MetadataSchemaError(ValueError):
    """The metadata file as a whole is unusable (a missing column, say)."""


@dataclass(frozen=True)
class LabelTask:
    """A binary task over HAM10000 diagnoses."""

    name: str
    positive: frozenset[str]
    # Diagnoses kept for this task; None keeps all seven.
    keep: frozenset[str] | None
    description: str


LABEL_TASKS: dict[str, LabelTask] = {
    t.name: t
    for t in (
        LabelTask("mel_vs_rest", frozenset({"mel"}), None, "melanoma vs all other diagnoses"),
        LabelTask(
            "malignant_vs_benign",
            frozenset({"mel", "bcc", "akiec"}),
            None,
            "mel, bcc and akiec vs the benign rest",
        ),
        LabelTask(
            "mel_vs_nv", frozenset({"mel"}), frozenset({"mel", "nv"}), "melanoma vs nevus only"
        ),
    )
}


def label_task(name: str) -> LabelTask:
    try:
        return LABEL_TASKS[name]
    except KeyError:
        raise ValueError(
            f"unknown label task {name!r}; choose one of {sorted(LABEL_TASKS)}"
        ) from None


def apply_label_task(metadata: pd.DataFrame, task: str | LabelTask) -> pd.DataFrame:
    """Rows the task keeps, with an integer ``label`` column (1 = positive class)."""
    t = task if isinstance(task, LabelTask) else label_task(task)
    rows = metadata if t.keep is None else metadata[metadata["dx"].isin(t.keep)]
    return rows.assign(label=rows["dx"].isin(t.positive).astype(int))


@dataclass(frozen=True)
class RowProblem:
    row: int  # 1-based line number in the CSV, header being line 1
    image_id: str
    reason: str


RowCheck = tuple[str, Callable[[pd.DataFrame], pd.Series]]


def row_checks(columns: pd.Index) -> list[RowCheck]:
    """(reason, the rows it rejects) for each per-row rule, in the order they are reported."""
    checks: list[RowCheck] = [
        ("empty lesion_id", lambda d: d["lesion_id"].fillna("") == ""),
        (
            "malformed image_id (expected ISIC_ and 7 digits, no file extension)",
            lambda d: ~d["image_id"].fillna("").str.fullmatch(IMAGE_ID_PATTERN.pattern),
        ),
        (
            "unknown dx (not one of " + ",".join(DX_CODES) + ", in lower case)",
            lambda d: ~d["dx"].isin(list(DX_CODES)),
        ),
    ]
    if "age" in columns:
        low, high = AGE_RANGE

        def age(d: pd.DataFrame) -> pd.Series:
            return pd.to_numeric(d["age"], errors="coerce")

        checks += [
            ("age is not a number", lambda d: d["age"].notna() & (d["age"] != "") & age(d).isna()),
            (f"age outside {low} to {high}", lambda d: ~age(d).between(low, high) & age(d).notna()),
        ]
    return checks


def _conflicts(df: pd.DataFrame, bad: pd.Series) -> tuple[list[RowProblem], pd.Series]:
    """Rows of one image_id that disagree on what it is (another dx or lesion_id): every
    one of them, each naming the others; and the mask of those rows."""
    problems: list[RowProblem] = []
    hit = pd.Series(False, index=df.index)
    candidates = df[~bad]
    repeated = candidates[candidates["image_id"].duplicated(keep=False)]
    for image_id, group in repeated.groupby("image_id", sort=False):
        if len(group[["dx", "lesion_id"]].drop_duplicates()) == 1:
            continue
        said = {int(i) + 2: f"dx={r.dx}, lesion_id={r.lesion_id}" for i, r in group.iterrows()}
        for row in said:
            others = "; ".join(f"row {r} says {v}" for r, v in said.items() if r != row)
            reason = f"conflicting rows for {image_id}: this row says {said[row]}; {others}"
            problems.append(RowProblem(row, str(image_id), reason))
        hit |= df.index.isin(group.index)
    return problems, hit


def validate_metadata(raw: pd.DataFrame, source: str) -> tuple[pd.DataFrame, list[RowProblem]]:
    """Check the metadata table; return the valid rows and one problem per rejected row.

    A missing required column rejects the whole file (:class:`MetadataSchemaError`).
    Row-level problems (unknown ``dx``, malformed ``image_id``, empty ``lesion_id``, an
    ``age`` that is not a number in ``AGE_RANGE``) reject that row only. A repeated
    ``image_id`` whose rows agree keeps the first; rows that disagree (another ``dx`` or
    ``lesion_id``) are all rejected, each naming the others: no row is trusted over
    another. ``raw`` must be read with every column as string (``dtype=str``) so that
    nothing is coerced silently.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise MetadataSchemaError(
            f"{source}: missing required column(s) {missing}; found columns {list(raw.columns)}"
        )
    df = raw.copy()
    for col in df.columns:
        df[col] = df[col].astype("string").str.strip()
    problems: list[RowProblem] = []
    bad = pd.Series(False, index=df.index)
    for reason, check in row_checks(df.columns):
        hit = check(df).fillna(True).astype(bool) & ~bad
        for idx in df.index[hit]:
            value = df.at[idx, "dx"] if reason.startswith("unknown dx") else None
            detail = reason + (f": {value!r}" if value else "")
            problems.append(RowProblem(int(idx) + 2, str(df.at[idx, "image_id"]), detail))
        bad |= hit
    conflicts, conflicting = _conflicts(df, bad)
    problems += conflicts
    bad |= conflicting
    dup = df["image_id"].duplicated(keep="first") & ~bad
    for idx in df.index[dup]:
        first = int(df.index[(df["image_id"] == df.at[idx, "image_id"])][0]) + 2
        detail = f"duplicate image_id (first at row {first})"
        problems.append(RowProblem(int(idx) + 2, str(df.at[idx, "image_id"]), detail))
    bad |= dup
    valid = df[~bad].copy()
    if "age" in valid.columns:
        valid["age"] = pd.to_numeric(valid["age"], errors="coerce")
    problems.sort(key=lambda p: p.row)
    return valid.reset_index(drop=True), problems
