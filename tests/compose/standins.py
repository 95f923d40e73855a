"""Make every third-party image of the compose stack available: pull it, or build a stand-in.

No container registry can be reached on the development and CI machines, so each image
that cannot be pulled is replaced by a local stand-in built under the same tag from a
Debian bookworm root (``debootstrap --variant=minbase``, then ``docker import``) plus
Debian and PyPI packages. The stand-ins live in ``tests/compose/standins/<name>/``; each
Dockerfile says what of the official image's contract it keeps. The compose file and the
project's Dockerfiles are used as they are.

    python -m tests.compose.standins            # pull or build; prints what it did
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
STANDINS = Path(__file__).resolve().parent / "standins"
MINBASE = "melanoma-standin/bookworm-minbase:latest"
BASE = "melanoma-standin/bookworm:latest"
PYTHON = "melanoma-standin/python:latest"
LABEL = "org.melanoma-pipeline.standin"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# Where update-ca-certificates picks up locally added certificates.
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")

# Image repository -> stand-in folder.
STANDIN_FOR = {
    "apache/airflow": "airflow",
    "postgres": "postgres",
    "redis": "redis",
    "minio/minio": "minio",
    "minio/mc": "mc",
    "python": "python",
}


def third_party_images() -> list[str]:
    """The tags the stack pulls: compose services without a build, and the Dockerfiles' FROMs."""
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())
    tags = {s["image"] for s in compose["services"].values() if "build" not in s}
    for dockerfile in (REPO_ROOT / "docker").glob("*/Dockerfile"):
        stages: set[str] = set()
        for base, _, stage in re.findall(
            r"^FROM\s+(\S+)(\s+AS\s+(\S+))?", dockerfile.read_text(), re.MULTILINE
        ):
            if base not in stages:
                tags.add(base)
            stages.add(stage)
    return sorted(tags)


def docker(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], check=check, **kwargs)


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False, capture_output=True).returncode == 0


def is_standin(tag: str) -> bool:
    result = docker(
        "image",
        "inspect",
        "--format",
        f'{{{{ index .Config.Labels "{LABEL}" }}}}',
        tag,
        check=False,
        capture_output=True,
        text=True,
    )
    return result.returncode == 0 and result.stdout.strip() == "true"


def pull(tag: str) -> bool:
    return docker("pull", "--quiet", tag, check=False, capture_output=True).returncode == 0


def build(tag: str, folder: str, args: dict[str, str] | None = None) -> None:
    build_args = [a for k, v in (args or {}).items() for a in ("--build-arg", f"{k}={v}")]
    # The official constraints are on GitHub, out of reach: Airflow gets the project's lock.
    constraints = STANDINS / "airflow" / "constraints.txt"
    if folder == "airflow":
        shutil.copy(REPO_ROOT / "requirements" / "lock-cpu.txt", constraints)
    try:
        docker(
            "build",
            "--quiet",
            "--label",
            f"{LABEL}=true",
            "-t",
            tag,
            *build_args,
            "-f",
            str(STANDINS / folder / "Dockerfile"),
            str(STANDINS),
        )
    finally:
        constraints.unlink(missing_ok=True)


def build_bases() -> None:
    """The bookworm root (debootstrap + docker import), then the CA and Python layers."""
    if not image_exists(MINBASE):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "rootfs"
            subprocess.run(
                ["debootstrap", "--variant=minbase", "bookworm", str(root), DEBIAN_MIRROR],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
            docker("import", "--change", f"LABEL {LABEL}=true", "-", MINBASE, stdin=tar.stdout)
            if tar.wait() != 0:
                raise RuntimeError("tar of the debootstrap root failed")
    # The host's locally added CA certificates, so apt, pip and uv reach the registries.
    ca = STANDINS / "ca"
    shutil.rmtree(ca, ignore_errors=True)
    ca.mkdir()
    for cert in LOCAL_CA_DIR.glob("*.crt"):
        shutil.copy(cert, ca / cert.name)
    try:
        build(BASE, "base")
    finally:
        shutil.rmtree(ca, ignore_errors=True)
    build(PYTHON, "python")


def standin_args(tag: str) -> dict[str, str]:
    repository, _, version = tag.partition(":")
    if repository == "apache/airflow":
        airflow, _, python = version.partition("-python")
        return {"AIRFLOW_VERSION": airflow, "PYTHON_VERSION": python or "3.11"}
    return {}


def main() -> int:
    bases_built = False
    for tag in third_party_images():
        if image_exists(tag) and not is_standin(tag):
            print(f"{tag}: present")
            continue
        if pull(tag):
            print(f"{tag}: pulled")
            continue
        repository = tag.partition(":")[0]
        if repository not in STANDIN_FOR:
            print(f"{tag}: cannot be pulled and has no stand-in", file=sys.stderr)
            return 1
        if not bases_built:
            build_bases()
            bases_built = True
        build(tag, STANDIN_FOR[repository], standin_args(tag))
        print(f"{tag}: stand-in built from tests/compose/standins/{STANDIN_FOR[repository]}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
