import numpy as np
import pandas as pd
import pytest

from melanoma import clinical


def test_a_vector_holds_age_sex_and_site_in_their_slots():
    vector = clinical.encode(45, "Female", "upper extremity")
    named = dict(zip(clinical.FIELDS, vector, strict=True))
    assert named["present"] == 1 and named["age"] == pytest.approx(0.45) and named["age_known"] == 1
    assert named["sex=female"] == 1 and named["sex=male"] == 0
    assert named["site=upper extremity"] == 1
    assert vector.sum() == pytest.approx(1 + 0.45 + 1 + 1 + 1)


@pytest.mark.parametrize(
    "age, sex, site", [(None, "unknown", "unknown"), ("", np.nan, None), (-3, "x", "elbow")]
)
def test_unknown_fields_are_zeros_but_the_vector_is_present(age, sex, site):
    vector = clinical.encode(age, sex, site)
    assert vector[0] == 1 and vector[1:].sum() == 0


def test_absent_metadata_is_all_zeros_and_unknown_ids_are_absent():
    assert clinical.absent(3).shape == (3, clinical.WIDTH) and not clinical.absent(3).any()
    frame = pd.DataFrame(
        {
            "image_id": ["a", "b"],
            "age": [30, 70],
            "sex": ["male", "female"],
            "localization": ["back", "face"],
        }
    )
    vectors = clinical.vectors_by_image(frame)
    rows = clinical.matrix(["b", "zzz", "a"], vectors)
    np.testing.assert_array_equal(rows[0], vectors["b"])
    assert not rows[1].any()
    np.testing.assert_array_equal(rows[2], vectors["a"])
    assert clinical.matrix([], vectors).shape == (0, clinical.WIDTH)


def test_splits_without_the_columns_are_refused_by_name():
    with pytest.raises(ValueError, match=r"missing \['age', 'localization'\]"):
        clinical.vectors_by_image(pd.DataFrame({"image_id": ["a"], "sex": ["male"]}))
