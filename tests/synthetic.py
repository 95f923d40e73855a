"""Generate a small HAM10000-shaped archive: for tests, benchmarks and smoke runs.

The images are synthetic (a dark blob on skin-coloured noise, its lesion mask
beside it), the layout and metadata schema are the official ones, so every
source type and validation rule can be exercised without the real data.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

# Lesions per diagnosis in the default mini archive (images per lesion vary 1-3).
DEFAULT_LESIONS = {"nv": 24, "mel": 12, "bkl": 8, "bcc": 6, "akiec": 4, "vasc": 3, "df": 3}


@dataclass(frozen=True)
class SyntheticArchive:
    root: Path
    metadata: pd.DataFrame


def lesion_image(
    rng: np.random.Generator, size: tuple[int, int] = (120, 90), dark: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """A BGR skin-like image with an elliptical lesion, and its binary mask (255 inside)."""
    width, height = size
    skin = np.array([150, 170, 215], np.float32) + rng.normal(0, 12, (height, width, 3))
    mask = np.zeros((height, width), np.uint8)
    centre = (int(width * rng.uniform(0.4, 0.6)), int(height * rng.uniform(0.4, 0.6)))
    axes = (int(width * rng.uniform(0.15, 0.3)), int(height * rng.uniform(0.15, 0.3)))
    cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    colour = np.array([40, 50, 80] if dark else [90, 110, 150], np.float32)
    image = np.where(mask[..., None] > 0, colour + rng.normal(0, 10, (height, width, 3)), skin)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def write_archive(
    root: Path,
    lesions: dict[str, int] | None = None,
    seed: int = 0,
    size: tuple[int, int] = (120, 90),
    zipped: bool = True,
    images_without_mask: int = 0,
) -> SyntheticArchive:
    """Write ``HAM10000_metadata.csv``, the two image parts and the masks under ``root``.

    ``zipped`` writes the official zips; otherwise the extracted Kaggle-style folders.
    The last ``images_without_mask`` images get no mask (HAM10000 has one such image).
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    number = 24306  # the first HAM10000 image id
    lesion_dxs = [dx for dx, n in (lesions or DEFAULT_LESIONS).items() for _ in range(n)]
    for lesion_number, dx in enumerate(lesion_dxs):
        for _ in range(int(rng.integers(1, 4))):
            rows.append(
                {
                    "lesion_id": f"HAM_{lesion_number:07d}",
                    "image_id": f"ISIC_{number:07d}",
                    "dx": dx,
                    "dx_type": "histo",
                    "age": str(int(rng.integers(20, 85))),
                    # Two sources, two sexes, three sites, drawn without the rng, so
                    # the images stay what they were before these columns.
                    "sex": ("female", "male")[(lesion_number // 2) % 2],
                    "localization": ("back", "face", "trunk")[lesion_number % 3],
                    "dataset": ("vidir_modern", "rosendahl")[lesion_number % 2],
                }
            )
            number += 1
    metadata = pd.DataFrame(rows)
    metadata.to_csv(root / "HAM10000_metadata.csv", index=False)
    half = len(rows) // 2
    parts = {"HAM10000_images_part_1": rows[:half], "HAM10000_images_part_2": rows[half:]}
    files: dict[str, dict[str, bytes]] = {
        name: {} for name in (*parts, "HAM10000_segmentations_lesion_tschandl")
    }
    unmasked = {row["image_id"] for row in rows[len(rows) - images_without_mask :]}
    for part, part_rows in parts.items():
        for row in part_rows:
            image, mask = lesion_image(rng, size, dark=row["dx"] == "mel")
            files[part][f"{row['image_id']}.jpg"] = cv2.imencode(
                ".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90]
            )[1].tobytes()
            if row["image_id"] in unmasked:
                continue
            files["HAM10000_segmentations_lesion_tschandl"][
                f"{row['image_id']}_segmentation.png"
            ] = cv2.imencode(".png", mask)[1].tobytes()
    for name, members in files.items():
        if zipped:
            with zipfile.ZipFile(root / f"{name}.zip", "w", zipfile.ZIP_STORED) as archive:
                for member, data in sorted(members.items()):
                    archive.writestr(member, data)
        else:
            (root / name).mkdir(exist_ok=True)
            for member, data in members.items():
                (root / name / member).write_bytes(data)
    return SyntheticArchive(root, metadata)
