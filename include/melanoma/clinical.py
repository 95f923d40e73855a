"""Age, sex and body site as the fixed-width vector the metadata-fusion head reads (pure logic).

HAM10000's metadata gives each image the patient's age, sex and the lesion's body site
(``localization``). With ``metadata_fusion`` on, the model joins this vector to the image
features. An image that comes without metadata (a new image scored by predict, an
external set with only a binary label) gets the all-zero vector: the ``present`` slot is
0, and training drops whole vectors at random so the model has learned to score that way
too. Within a present vector an unknown field is zeros in its own slots.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

SEXES: tuple[str, ...] = ("male", "female")
# HAM10000's body sites; "unknown" (or anything else) sets none of them.
SITES: tuple[str, ...] = (
    "abdomen",
    "acral",
    "back",
    "chest",
    "ear",
    "face",
    "foot",
    "genital",
    "hand",
    "lower extremity",
    "neck",
    "scalp",
    "trunk",
    "upper extremity",
)
FIELDS: tuple[str, ...] = (
    "present",
    "age",  # years / 100
    "age_known",
    *(f"sex={s}" for s in SEXES),
    *(f"site={s}" for s in SITES),
)
WIDTH = len(FIELDS)
# The splits.csv columns the vector is read from.
COLUMNS: tuple[str, ...] = ("age", "sex", "localization")


def encode(age: Any, sex: Any, localization: Any) -> np.ndarray:
    """One image's vector (float32, ``WIDTH``); a missing or unknown field is zeros."""
    vector = np.zeros(WIDTH, np.float32)
    vector[0] = 1.0
    years = pd.to_numeric(age, errors="coerce")
    if not pd.isna(years) and 0 <= years <= 120:
        vector[1], vector[2] = years / 100.0, 1.0
    for values, value, offset in ((SEXES, sex, 3), (SITES, localization, 3 + len(SEXES))):
        text = str(value).strip().lower() if not pd.isna(value) else ""
        if text in values:
            vector[offset + values.index(text)] = 1.0
    return vector


def absent(count: int) -> np.ndarray:
    """The vectors of ``count`` images scored without metadata: all zeros."""
    return np.zeros((count, WIDTH), np.float32)


def has_columns(frame: pd.DataFrame) -> bool:
    return all(column in frame.columns for column in COLUMNS)


def vectors_by_image(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """``image_id`` → vector, for a frame with ``COLUMNS`` (splits.csv from this version on)."""
    missing = [column for column in COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"metadata fusion needs the columns {list(COLUMNS)}; missing {missing}")
    return {
        str(row.image_id): encode(row.age, row.sex, row.localization)
        for row in frame.itertuples(index=False)
    }


def matrix(image_ids: Any, vectors: dict[str, np.ndarray]) -> np.ndarray:
    """The vectors of ``image_ids`` in order, (n, ``WIDTH``); an id without one is absent."""
    ids = [str(i) for i in image_ids]
    if not ids:
        return absent(0)
    return np.stack([vectors.get(i, absent(1)[0]) for i in ids])
