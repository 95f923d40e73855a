"""The project's CSV tables, read one way: identifiers as the text written.

pandas reads ``NA``, ``NaN``, ``NULL``, ``None`` (and a dozen more spellings) as missing
by default, even in a ``dtype=str`` column. A lesion whose id is written ``NA`` would
then vanish from every group-by, and its images from every split. Here the identifier
columns are never parsed for missing values; every other column is, as pandas does
(an empty ``age`` is missing).
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

# Columns that name things: kept as written, never coerced or read as missing.
ID_COLUMNS = ("image_id", "lesion_id", "dx", "image", "split", "dataset", "source")

# pandas' default missing-value spellings (pandas.io.parsers' STR_NA_VALUES), for the others.
MISSING_SPELLINGS = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
    "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
)  # fmt: skip


def read_table(data: bytes | Path, skiprows: int = 0) -> pd.DataFrame:
    """A CSV (its bytes, or a file) with its identifier columns as strings, exactly as written."""

    def source() -> io.BytesIO | Path:
        return io.BytesIO(data) if isinstance(data, bytes) else data

    header = pd.read_csv(source(), nrows=0, skiprows=skiprows).columns
    ids = [c for c in header if c in ID_COLUMNS]
    return pd.read_csv(
        source(),
        skiprows=skiprows,
        dtype=dict.fromkeys(ids, str),
        keep_default_na=False,
        na_values={c: list(MISSING_SPELLINGS) for c in header if c not in ids},
    )
