"""The second matrix's external-set rows (issue 28): a set is its content, not the path
typed; two validations under one name are a compare-and-swap, and the loser saves
nothing; a re-render that fails keeps the last report. Real files, real processes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from melanoma.evaluation import EvaluationConfig
from melanoma.external import ExternalSet
from melanoma.run import Run
from melanoma.store import FileStore
from training.external import validate_external

CONFIG = EvaluationConfig(bootstrap_replicates=100)


def write_site(root: Path, run: Run, image_ids: list[str], flip: bool = False) -> ExternalSet:
    """A site's folder and labels: the run's stored test images under their own names."""
    store = run.store
    root.mkdir(parents=True)
    predictions = run.predictions("test").set_index("image_id")
    for image_id in image_ids:
        key = next(o.key for o in store.list("datasets/") if f"/images/{image_id}." in o.key)
        (root / f"{image_id}.jpg").write_bytes(store.get_bytes(key))
    labels = predictions.loc[image_ids, ["label"]].rename(columns={"label": "melanoma"})
    if flip:
        labels["melanoma"] = 1 - labels["melanoma"]
    labels.reset_index().to_csv(root / "labels.csv", index=False)
    return ExternalSet("site", root, root / "labels.csv")


@pytest.fixture
def run_copy(evaluated_run, tmp_path) -> Run:
    """The evaluated run in a store of its own: these tests commit sets into it."""
    root = tmp_path / "store"
    shutil.copytree(evaluated_run.store.root, root)
    return Run(FileStore(root), evaluated_run.layout)


def _test_ids(run: Run) -> list[str]:
    test = run.predictions("test")
    positives = list(test[test["label"] == 1]["image_id"][:4])
    return positives + list(test[test["label"] == 0]["image_id"][:8])


def test_two_sites_with_the_same_relative_paths_do_not_replace_each_other(run_copy, tmp_path):
    ids = _test_ids(run_copy)
    first = write_site(tmp_path / "a" / "images", run_copy, ids)
    validate_external(run_copy, first, CONFIG)
    committed = run_copy.commit_record("external/site")

    # Another site, the same file names, other labels: under the same name, refused.
    other = write_site(tmp_path / "b" / "images", run_copy, ids, flip=True)
    with pytest.raises(ValueError, match=r"'site' .* was validated on other files"):
        validate_external(run_copy, other, CONFIG)
    assert run_copy.commit_record("external/site") == committed

    # The first site's files by another path (absolute, through a link): the same set.
    (tmp_path / "link").symlink_to(tmp_path / "a", target_is_directory=True)
    again = ExternalSet("site", (tmp_path / "link" / "images").absolute(), first.labels)
    validate_external(run_copy, again, CONFIG)
    source = run_copy.read_json("external/site", "metrics")["source"]
    assert source["labels_sha256"] and source["image_count"] == len(ids)


VALIDATE = """
import sys
from training.external import main
sys.exit(main(sys.argv[1:]))
"""


def test_two_concurrent_validations_under_one_name_commit_one_set_and_the_loser_says_so(
    run_copy, tmp_path
):
    ids = _test_ids(run_copy)
    sites = {
        "a": write_site(tmp_path / "a", run_copy, ids),
        "b": write_site(tmp_path / "b", run_copy, ids, flip=True),
    }
    processes = {
        site: subprocess.Popen(
            [
                sys.executable,
                "-c",
                VALIDATE,
                "--images",
                str(external.images),
                "--labels",
                str(external.labels),
                "--name",
                "site",
                "--store",
                run_copy.store.url,
                "--run",
                run_copy.layout.prefix,
                "--bootstrap-replicates",
                "100",
                "--cache-dir",
                str(tmp_path / f"cache-{site}"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for site, external in sites.items()
    }
    outcomes = {site: (p.wait(600), p.stderr.read()) for site, p in processes.items()}

    codes = sorted(code for code, _ in outcomes.values())
    assert codes == [0, 2], outcomes
    winner = next(site for site, (code, _) in outcomes.items() if code == 0)
    loser_error = next(err for code, err in outcomes.values() if code == 2)
    assert "was validated on other files" in loser_error and "Traceback" not in loser_error
    # The committed set is the winner's, whole: every artifact reads against its record.
    source = run_copy.read_json("external/site", "metrics")["source"]
    assert source["images"] == str(sites[winner].images)
    for name in run_copy.commit_record("external/site")["artifacts"]:
        run_copy.read_bytes("external/site", name)
