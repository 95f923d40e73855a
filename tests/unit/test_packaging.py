"""pyproject.toml declares what each part imports: `pip install .` gives a library that
imports, and each extra (train, spark, airflow) the part it is named for."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
OURS = {"melanoma", "training", "tests", "dags", "plugins", "spark_jobs", "__future__"}

# Each part, the extras it may rely on besides the library's own dependencies.
PARTS = {
    "include/melanoma": (),
    "training": ("train",),
    "spark_jobs": ("spark",),
    "dags": ("airflow",),
    "plugins": ("airflow",),
}


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imports(folder: Path) -> set[str]:
    """Top-level modules outside the standard library and this repository."""
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found |= {n.split(".")[0] for n in names}
    return {m for m in found if m not in sys.stdlib_module_names and m not in OURS}


def _provided(declared: set[str]) -> set[str]:
    """The declared distributions and those they require (one level: `apache-airflow`
    brings `apache-airflow-core`, which brings FastAPI)."""
    provided = set(declared)
    for name in declared:
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        provided |= {_name(r) for r in requires if "extra ==" not in r}
    for name in set(provided):
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        provided |= {_name(r) for r in requires if "extra ==" not in r}
    return provided


@pytest.mark.parametrize("part", PARTS)
def test_every_import_of_a_part_is_a_declared_distribution(part):
    declared = {_name(r) for r in PROJECT["dependencies"]}
    for extra in PARTS[part]:
        declared |= {_name(r) for r in PROJECT["optional-dependencies"][extra]}
    provided = _provided(declared)
    distributions = metadata.packages_distributions()
    missing = {
        module: distributions.get(module, ["(not installed)"])
        for module in _imports(ROOT / part)
        if not {_name(d) for d in distributions.get(module, [])} & provided
    }
    assert not missing, f"{part} imports what pyproject.toml does not declare: {missing}"


def test_the_dev_extra_is_the_dev_lock_s_list():
    pinned = {
        _name(line)
        for line in (ROOT / "requirements" / "dev.in").read_text().splitlines()
        if line and not line.startswith(("#", "-"))
    }
    assert {_name(r) for r in PROJECT["optional-dependencies"]["dev"]} == pinned


def _pins(lock: str) -> dict[str, str]:
    text = (ROOT / "requirements" / lock).read_text()
    return dict(re.findall(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+)", text, re.M))


def test_the_gpu_lock_differs_from_the_cpu_lock_only_in_tensorflow_s_build():
    cpu, gpu = _pins("lock-cpu.txt"), _pins("lock-gpu.txt")
    assert gpu["tensorflow"] == cpu["tensorflow-cpu"], "the same TensorFlow version"
    assert {name: gpu[name] for name in gpu if name in cpu} == {
        name: cpu[name] for name in gpu if name in cpu
    }
    extra = set(gpu) - set(cpu)
    assert extra - {"tensorflow"} and all(n.startswith("nvidia-") for n in extra - {"tensorflow"})
    assert not {"pytest", "ruff", "mypy"} & set(gpu), "no test tooling in the image"
