"""A benchmark given a wrong store, run, folder or setting ends with one line, no traceback.

The benchmarks are commands researchers run on their own stores and mirrors, so a mistake
in what they pass is a user error (``melanoma.cli.run_command``), as in the product's own
commands.
"""

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

BENCHMARKS = REPO_ROOT / "benchmarks"
# What a user names on a benchmark's command line: a store, a run, a folder, settings.
USER_INPUTS = re.compile(r'add_argument\(\s*"--(store|run|source|weights|base)"')


def test_every_benchmark_that_takes_a_store_run_folder_or_setting_reports_user_errors():
    takes_input = [p for p in sorted(BENCHMARKS.glob("*.py")) if USER_INPUTS.search(p.read_text())]
    assert len(takes_input) >= 8
    bare = [p.name for p in takes_input if "run_command(" not in p.read_text()]
    assert not bare, f"{bare} would end a user's mistake with a traceback"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["unseen_clinic.py", "--store", "file:///no/such/store"], "no store there"),
        (["loso_ensemble.py", "--store", "/a/path/not/a/url"], "unsupported object store URL"),
        (["ablation.py", "--base", "{not json"], "--base is not JSON"),
        (["ood_detection.py", "--store", "file:///no/such/store"], "no store there"),
    ],
)
def test_a_wrong_input_is_one_line_with_status_2(arguments, message):
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / arguments[0]), *arguments[1:]],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{arguments[0]}: error: ") and message in last
