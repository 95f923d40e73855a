"""The compose stack's secrets: fresh ones for .env, placeholders refused."""

import base64
import json

import pytest

from melanoma import compose_env
from melanoma.compose_env import SECRETS, new_env, parse_dotenv, secret_problems
from tests.conftest import REPO_ROOT

EXAMPLE = (REPO_ROOT / ".env.example").read_text()


def container_env(dotenv: str) -> dict[str, str]:
    """What airflow-init sees: each .env secret under its variable in the container."""
    values = parse_dotenv(dotenv)
    return {variable: values[name] for name, (variable, _) in SECRETS.items()}


def test_new_env_fills_every_secret_with_a_fresh_accepted_value():
    first, second = new_env(EXAMPLE), new_env(EXAMPLE)
    assert secret_problems(container_env(first)) == []
    assert container_env(first) != container_env(second)
    key = container_env(first)["AIRFLOW__CORE__FERNET_KEY"]
    assert len(base64.urlsafe_b64decode(key)) == 32
    assert len(container_env(first)["AIRFLOW__API_AUTH__JWT_SECRET"]) >= 64
    # Everything that is not a secret is copied as it is.
    kept = [line for line in EXAMPLE.splitlines() if line.split("=")[0] not in SECRETS]
    assert kept == [line for line in first.splitlines() if line.split("=")[0] not in SECRETS]


def test_the_example_placeholders_are_refused_one_line_each():
    problems = secret_problems(container_env(EXAMPLE))
    assert len(problems) == len(SECRETS)
    assert all("placeholder" in p and "make env" in p for p in problems)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("AIRFLOW_FERNET_KEY", "", "is empty"),
        ("AIRFLOW_JWT_SECRET", "x" * 40, "needs at least 64"),
        ("AIRFLOW_FERNET_KEY", "A" * 44 + "!", "not a Fernet key"),
        ("POSTGRES_PASSWORD", "my-change-me-password", "placeholder"),
    ],
)
def test_each_bad_secret_is_named(name, value, expected):
    environ = container_env(new_env(EXAMPLE))
    environ[SECRETS[name][0]] = value
    [problem] = secret_problems(environ)
    assert problem.startswith(f"{name} in .env") and expected in problem


def test_init_refuses_placeholders_and_writes_the_password_file(tmp_path, monkeypatch, capsys):
    passwords = tmp_path / "auth" / "passwords.json"
    monkeypatch.setattr(compose_env, "PASSWORDS_FILE", passwords)
    for variable, value in container_env(EXAMPLE).items():
        monkeypatch.setenv(variable, value)
    assert compose_env.main(["init"]) == 1
    assert (
        "refusing to start: AIRFLOW_JWT_SECRET in .env is the placeholder"
        in capsys.readouterr().err
    )
    assert not passwords.exists()

    for variable, value in container_env(new_env(EXAMPLE)).items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("AIRFLOW_ADMIN_USER", "admin")
    assert compose_env.main(["init"]) == 0
    assert json.loads(passwords.read_text()) == {
        "admin": compose_env.os.environ["AIRFLOW_ADMIN_PASSWORD"]
    }
