import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from melanoma.layout import RUN_KEY, RunLayout, run_key, set_name

PROJECT = Path(__file__).resolve().parents[2]

# Airflow-like run ids: the characters they use, plus anything else a user can type.
run_ids = st.one_of(
    st.text(alphabet="abcz019_-.:+T", min_size=1, max_size=40),
    st.text(min_size=1, max_size=40),
)


@given(st.lists(run_ids, min_size=2, max_size=8, unique=True))
def test_distinct_run_ids_never_share_a_prefix(ids):
    keys = [run_key(i) for i in ids]
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert RUN_KEY.match(key)
        RunLayout(key)  # a valid key segment: no '/', never '..'


def test_the_measured_collision_is_gone():
    colon = run_key("manual__2026-01-01T00:00:00+00:00")
    underscore = run_key("manual__2026-01-01T00_00_00_00_00")
    assert underscore == "manual__2026-01-01T00_00_00_00_00"  # safe ids stay readable
    assert colon.startswith("manual__2026-01-01T00_00_00_00_00~") and colon != underscore


def test_keys_and_names_that_could_escape_are_refused():
    for bad in ("..", "a/b", "https:evil.example", ""):
        with pytest.raises(ValueError):
            RunLayout(bad)
    with pytest.raises(ValueError, match="--name"):
        set_name("../ph2")
    with pytest.raises(ValueError):
        RunLayout("r").artifact("../other/report.html")


def test_every_stage_has_one_commit_record():
    layout = RunLayout("r")
    assert layout.commit("train") == "runs/r/commits/train.json"
    assert layout.commit("external/ph2") == "runs/r/commits/external/ph2.json"
    with pytest.raises(ValueError):
        layout.commit("training")


# A key f-string: one that starts with a top-level namespace, or joins a prefix with '/'.
KEY_FSTRING = re.compile(
    r"""f["'](?:runs|datasets|champions|pretrained)/|f["'][^"']*\{[^}]*(?:prefix|out)[^}]*\}/"""
)


def test_no_file_but_the_layout_builds_keys():
    offenders = []
    for folder in ("include", "training", "dags", "plugins", "spark_jobs"):
        for path in sorted((PROJECT / folder).rglob("*.py")):
            # layout.py owns the keys; store.py maps a key to an S3 object name in its bucket.
            if path.name in ("layout.py", "store.py"):
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if KEY_FSTRING.search(line):
                    offenders.append(f"{path.relative_to(PROJECT)}:{number}: {line.strip()}")
    assert not offenders, "keys built outside melanoma.layout:\n" + "\n".join(offenders)


def test_the_documented_store_layout_lists_every_fixed_run_artifact():
    """docs/architecture.md's layout block is the one description of the store: every key
    RunLayout spells for a run's fixed artifacts is in it."""
    from pathlib import Path

    from melanoma.layout import RunLayout

    page = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    block = page.split("```\npretrained/", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.strip()]
    layout = RunLayout("KEY")
    fixed = {
        getattr(layout, name).replace("runs/KEY/", "runs/<run key>/")
        for name, value in vars(RunLayout).items()
        if isinstance(value, property) and name != "prefix"
    }
    files = {key for key in fixed if "." in key.rsplit("/", 1)[-1]}
    missing = [key for key in files if not any(line.startswith(f"{key} ") for line in lines)]
    assert files and not missing, missing
