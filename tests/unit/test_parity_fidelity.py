"""benchmarks/parity_fidelity.py's pure parts: the JPEG quality read from a file's tables."""

import io

import numpy as np
import PIL.Image
import pytest

from tests.conftest import load_benchmark

parity_fidelity = load_benchmark("parity_fidelity")


@pytest.mark.parametrize("quality", [20, 50, 75, 90, 95])
def test_the_quality_a_jpeg_was_saved_at_is_read_back_from_its_tables(quality):
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    assert parity_fidelity.jpeg_quality(parity_fidelity.as_jpeg(image, quality)) == quality


def test_an_image_that_is_not_a_jpeg_has_no_quality():
    out = io.BytesIO()
    PIL.Image.new("RGB", (8, 8)).save(out, "PNG")
    assert parity_fidelity.jpeg_quality(out.getvalue()) is None
