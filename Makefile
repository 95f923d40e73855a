# Two commands on a fresh machine with Python 3.11 and Java 17:
#   make run    the pipeline on the embedded stack (HAM10000_SOURCE=... to choose the data)
#   make test   lint and the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements/lock-cpu.txt

.PHONY: install run test ui stop lock benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Exact versions from the lock; uv resolves and installs them in about a minute.
$(VENV)/.installed: $(LOCK) pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet uv==0.13.8
	$(BIN)/uv pip install --python $(BIN)/python --quiet -r $(LOCK)
	$(BIN)/uv pip install --python $(BIN)/python --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed

# DAG params as JSON, e.g. make run CONF='{"phase2_epochs": 3}'
CONF ?= {}
run: install
	$(BIN)/melanoma-stack run --conf '$(CONF)'

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The Airflow UI on http://127.0.0.1:8080 (user admin; password in .airflow/simple_auth_manager_passwords.json.generated).
ui: install
	$(BIN)/melanoma-stack start
	bash -c 'eval "$$($(BIN)/melanoma-stack env)" && airflow standalone'

stop:
	-$(BIN)/melanoma-stack stop

benchmark: install
	@for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

# Re-resolve the lock after editing requirements/base.in.
lock:
	$(BIN)/uv pip compile requirements/base.in --excludes requirements/excludes.txt \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 -o $(LOCK)

clean: stop
	rm -rf .airflow .stack .store .cache
