"""The compose stack's secrets: write a ``.env`` with fresh ones, refuse placeholders at start.

    python3 include/melanoma/compose_env.py new > .env     # (make env) from .env.example
    python -m melanoma.compose_env init                     # airflow-init, in the stack

``init`` checks every secret the stack runs on (empty, a placeholder from
``.env.example``, too short, or a Fernet key that does not decode: one line each, then
exit 1, so no Airflow component starts), then writes the admin's password file for
Airflow's simple auth manager. Standard library only: ``new`` runs before anything is
installed.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import sys
from pathlib import Path

# .env variable -> (the variable inside the airflow containers, minimum length in bytes).
SECRETS: dict[str, tuple[str, int]] = {
    "AIRFLOW_JWT_SECRET": ("AIRFLOW__API_AUTH__JWT_SECRET", 64),  # HS512 wants 64 bytes
    "AIRFLOW_API_SECRET_KEY": ("AIRFLOW__API__SECRET_KEY", 32),
    "AIRFLOW_FERNET_KEY": ("AIRFLOW__CORE__FERNET_KEY", 44),
    "AIRFLOW_ADMIN_PASSWORD": ("AIRFLOW_ADMIN_PASSWORD", 12),
    "POSTGRES_PASSWORD": ("POSTGRES_PASSWORD", 12),
    "MINIO_ROOT_PASSWORD": ("S3_SECRET_KEY", 12),
}
PLACEHOLDER_MARK = "change-me"
PASSWORDS_FILE = Path(
    os.environ.get(
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", "/opt/airflow/auth/passwords.json"
    )
)


def parse_dotenv(text: str) -> dict[str, str]:
    """``NAME=value`` lines of a .env file (comments and blank lines skipped), as compose reads them."""
    return dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )


def fernet_key() -> str:
    """A Fernet key: 32 random bytes, URL-safe base64 (as ``Fernet.generate_key()``)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def fresh_secret(name: str) -> str:
    if name == "AIRFLOW_FERNET_KEY":
        return fernet_key()
    # token_urlsafe(n) gives ceil(4n/3) characters: 86 for the JWT secret, 32 for passwords
    # (MinIO and Postgres take those without quoting).
    return secrets.token_urlsafe(64 if SECRETS[name][1] >= 64 else 24)


def new_env(example: str) -> str:
    """``example`` (the text of .env.example) with a fresh value for every secret."""
    lines = []
    for line in example.splitlines():
        name = line.split("=", 1)[0]
        if name in SECRETS and not line.startswith("#"):
            line = f"{name}={fresh_secret(name)}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def secret_problems(environ: dict[str, str]) -> list[str]:
    """One line per secret that the stack must not start with."""
    problems = []
    for name, (variable, minimum) in SECRETS.items():
        value = environ.get(variable, "")
        where = f"{name} in .env"
        if not value:
            problems.append(f"{where} is empty: run `make env` to write fresh secrets")
        elif PLACEHOLDER_MARK in value.lower():
            problems.append(f"{where} is the placeholder from .env.example: run `make env`")
        elif len(value.encode()) < minimum:
            problems.append(f"{where} is {len(value.encode())} bytes; it needs at least {minimum}")
        elif name == "AIRFLOW_FERNET_KEY" and not _is_fernet_key(value):
            problems.append(f"{where} is not a Fernet key (32 bytes, URL-safe base64)")
    return problems


def _is_fernet_key(value: str) -> bool:
    try:
        return len(base64.urlsafe_b64decode(value.encode())) == 32
    except (binascii.Error, ValueError):
        return False


def write_passwords_file(user: str, password: str, path: Path) -> None:
    """The simple auth manager's passwords file (JSON user -> password), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({user: password}))
    tmp.chmod(0o660)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "new":
        example = Path(argv[1]) if len(argv) > 1 else Path(__file__).parents[2] / ".env.example"
        sys.stdout.write(new_env(example.read_text()))
        return 0
    if command == "init":
        problems = secret_problems(dict(os.environ))
        for problem in problems:
            print(f"refusing to start: {problem}", file=sys.stderr)
        if problems:
            return 1
        user = os.environ.get("AIRFLOW_ADMIN_USER", "admin")
        write_passwords_file(user, os.environ["AIRFLOW_ADMIN_PASSWORD"], PASSWORDS_FILE)
        print(f"secrets checked; admin password written to {PASSWORDS_FILE}")
        return 0
    print("usage: compose_env.py new [.env.example] | init", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
