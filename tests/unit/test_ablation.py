"""The ablation's table (benchmarks/ablation.py): a failed DAG run is a row of its own, the
other runs still count, and the table is written after every run."""

import re
import subprocess
import sys

import pytest

from tests.conftest import load_benchmark


def measured(val: float, by_source: dict[str, float] | None = None) -> dict:
    auroc = {"value": val, "ci_low": val - 0.02, "ci_high": val + 0.02}
    return {
        "val_auroc": val,
        "val_without_metadata": None,
        "test_auroc": auroc,
        "within_source": None,
        "shift_mean": val - 0.03,
        "shift_clean": val,
        "seconds": 600.0,
        "holdout": None,
        "loso": auroc if by_source else None,
        "by_source": by_source or {},
    }


def test_a_failed_dag_is_a_row_the_others_still_count_and_the_run_exits_1(tmp_path, monkeypatch):
    ablation = load_benchmark("ablation")
    written = []

    def fake_measure_lever(args, conf):
        written.append((tmp_path / "table.md").read_text() if written else "")
        if conf["split_seed"] == 7:
            raise subprocess.CalledProcessError(1, ["melanoma-stack", "run"])
        return measured(0.9, {"rosendahl": 0.7, "vidir_modern": 0.72, "vienna_dias": 0.75})

    monkeypatch.setattr(ablation, "measure_lever", fake_measure_lever)
    out = tmp_path / "table.md"
    argv = ["ablation.py", "--levers", "today", "own_aspect", "--seeds", "42", "7"]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out)])
    with pytest.raises(SystemExit) as exit_code:
        ablation.main()
    assert exit_code.value.code == 1
    table = out.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| own_aspect | ")]
    assert rows[0].startswith("| own_aspect | 42 | 0.900 |")
    assert "rosendahl 0.700 / vidir_modern 0.720 / vienna_dias 0.750" in rows[0]
    assert rows[1] == "| own_aspect | 7 | a DAG run failed (exit 1) |" + " |" * 6
    runs = [line for line in table.splitlines() if re.match(r"\| \w+ \| (42|7) \|", line)]
    assert len(runs) == 4 and all(line.count("|") == 10 for line in runs)
    # The means count the measured seed, against today measured alike.
    assert "| own_aspect | 0.900 (+0.000) |" in table
    # The table was on disk before the last run: an interrupted ablation keeps it.
    assert "| today | 42 | 0.900 |" in written[-1]


def test_a_held_out_only_row_gives_its_loso_figures_and_n_a_for_the_rest():
    ablation = load_benchmark("ablation")
    row = dict.fromkeys(ablation.NOT_RUN) | {"seconds": None}
    row |= measured(0.8, {"rosendahl": 0.7})  # only the held-out figures kept below
    row |= dict.fromkeys(ablation.NOT_RUN) | {"seconds": None}
    line = ablation.table_line("own_aspect", 42, row)
    assert line == (
        "| own_aspect | 42 | n/a | n/a | n/a | rosendahl 0.700 | 0.800 (0.780-0.820) | n/a | n/a |"
    )
    means = "\n".join(ablation.means_table({"own_aspect": [row]}))
    assert "| own_aspect | n/a | n/a | 0.800 | n/a |" in means
