"""The LOSO layer screen (benchmarks/loso_features.py) on a generated mirror: every layer
set is screened on every held-out source, and a linear head finds the generated signal."""

import subprocess
import sys

import pandas as pd

from melanoma.loso import LOSO_SOURCES
from tests.conftest import REPO_ROOT
from tests.synthetic import write_archive


def test_the_screen_pools_every_held_out_source_for_each_layer_set(tmp_path):
    archive = write_archive(tmp_path / "mirror", {"nv": 30, "mel": 24, "bkl": 12}, size=(64, 48))
    metadata_csv = archive.root / "HAM10000_metadata.csv"
    metadata = pd.read_csv(metadata_csv)
    # Three sources, as LOSO holds out; each holds every diagnosis.
    lesion = metadata["lesion_id"].str[4:].astype(int)
    metadata["dataset"] = [LOSO_SOURCES[n % 3] for n in lesion]
    metadata.to_csv(metadata_csv, index=False)
    done = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "loso_features.py"),
            "--source",
            str(archive.root),
            "--backbone",
            "tiny_cnn",
            "--shape",
            "48",
            "64",
            "--seeds",
            "1",
            "--c",
            "1.0",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {
        line.split(" | ")[0].removeprefix("| ").split(":")[0]: line.split(" | ")
        for line in done.stdout.splitlines()
        if line.startswith("| ") and not line.startswith(("| layers", "| ---"))
    }
    # Both feature depths, then each pooled layer alone.
    assert set(rows) == {"last", "mid", "tiny_block1_relu", "tiny_block2_relu", "tiny_block3_relu"}
    assert rows["mid"][1] == str(16 + 32) and rows["last"][1] == str(16 + 32 + 64)
    for cells in rows.values():
        per_source = [float(a) for a in cells[4].removesuffix(" |").split(" / ")]
        assert len(per_source) == len(LOSO_SOURCES)
    # Generated melanomas are darker: even a random network's pooled maps separate them.
    assert float(rows["tiny_block1_relu"][3].split()[0]) > 0.9
