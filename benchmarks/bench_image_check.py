"""The strict image check at ingest against the lenient decode it replaced, in the same run.

    .venv/bin/python benchmarks/bench_image_check.py [ZIP_OF_JPEGS]

``melanoma.images.check_image`` decodes a JPEG in full with libjpeg-turbo (simplejpeg),
every decoder warning an error; the check before it was OpenCV's lenient full decode
(``cv2.imdecode``). Uses the JPEGs of the given zip (for example
../shared/data/ham10000/HAM10000_images_part_1.zip, first 2,000), else 500 generated
600x450 images. Prints images/s for each and the ratio; one thread each.
"""

from __future__ import annotations

import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np

from melanoma.images import check_image

# The generated images are the tests' (tests/synthetic.py): the repository root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.synthetic import lesion_image


def images() -> list[bytes]:
    if len(sys.argv) > 1:
        with zipfile.ZipFile(sys.argv[1]) as archive:
            names = sorted(n for n in archive.namelist() if n.lower().endswith(".jpg"))[:2000]
            return [archive.read(n) for n in names]
    rng = np.random.default_rng(0)
    return [
        cv2.imencode(".jpg", lesion_image(rng, (600, 450))[0], [cv2.IMWRITE_JPEG_QUALITY, 90])[
            1
        ].tobytes()
        for _ in range(500)
    ]


def lenient(data: bytes) -> tuple[int, int]:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return image.shape[1], image.shape[0]


def main() -> None:
    cv2.setNumThreads(1)
    data = images()
    rates = {}
    for name, check in (
        ("lenient cv2.imdecode (before)", lenient),
        ("strict check_image", check_image),
    ):
        for item in data[:20]:  # warm-up
            check(item)
        started = time.perf_counter()
        for item in data:
            check(item)
        rates[name] = len(data) / (time.perf_counter() - started)
        print(f"{name}: {len(data)} JPEGs, {rates[name]:.0f} images/s")
    strict, before = rates["strict check_image"], rates["lenient cv2.imdecode (before)"]
    print(f"ratio strict / lenient: {strict / before:.2f}x")


if __name__ == "__main__":
    main()
