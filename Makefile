# Two commands on a fresh machine with Python 3.11 and Java 17:
#   make run    the pipeline on the embedded stack (HAM10000_SOURCE=... to choose the data)
#   make test   lint and the whole test suite (make test-compose: the compose stack, on Docker)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements/lock-cpu.txt
DEV_LOCK := requirements/lock-dev.txt

.PHONY: install run test test-compose docs env ui stop lock benchmark gpu-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Exactly the locked versions (--no-deps: nothing outside the locks), then a consistency check.
$(VENV)/.installed: $(LOCK) $(DEV_LOCK) pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet uv==0.13.8
	$(BIN)/uv pip install --python $(BIN)/python --quiet --no-deps -r $(LOCK) -r $(DEV_LOCK)
	$(BIN)/uv pip install --python $(BIN)/python --quiet --no-deps -e .
	$(BIN)/uv pip check --python $(BIN)/python
	touch $@

install: $(VENV)/.installed

# DAG params as JSON, e.g. make run CONF='{"phase2_epochs": 3}'
CONF ?= {}
run: install
	$(BIN)/melanoma-stack run --conf '$(CONF)'

# The suite on TEST_WORKERS processes (pytest-xdist; 0 runs it in one): its integration
# tests spend much of their time waiting on the services they start, so two processes
# keep a 2-core machine busier (times in docs/compose.md).
TEST_WORKERS ?= 2
test: install docs
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

# The documentation site (docs/, MkDocs with the Material theme) into .site/; --strict: a
# broken link or anchor fails it.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The compose stack for real, on a running Docker engine with docker-compose (see README).
test-compose: install
	$(BIN)/python -m pytest -m compose tests/compose -v -s

# .env for docker compose, from .env.example with fresh random secrets (never overwrites).
env:
	@test ! -e .env || { echo ".env exists; remove it first to write fresh secrets" >&2; exit 1; }
	python3 include/melanoma/compose_env.py new > .env
	@echo "wrote .env with fresh secrets; edit the other settings there"

# The Airflow UI on http://127.0.0.1:8080 (user admin; password in .airflow/simple_auth_manager_passwords.json.generated).
ui: install
	$(BIN)/melanoma-stack start
	bash -c 'stack_env="$$($(BIN)/melanoma-stack env)" && eval "$$stack_env" && airflow standalone'

stop:
	-$(BIN)/melanoma-stack stop

benchmark: install
	@for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

# Re-resolve the locks after editing requirements/base.in, dev.in or gpu.in. The GPU lock
# (the trainer image's CUDA build of TensorFlow) follows the CPU lock's versions.
LOCK_FLAGS := --python-version 3.11 --python-platform x86_64-manylinux_2_28 --quiet
lock:
	$(BIN)/uv pip compile requirements/base.in $(LOCK_FLAGS) -o $(LOCK)
	cd requirements && ../$(BIN)/uv pip compile dev.in $(LOCK_FLAGS) -o lock-dev.txt
	cd requirements && ../$(BIN)/uv pip compile gpu.in $(LOCK_FLAGS) -o lock-gpu.txt

# On a machine with an NVIDIA GPU, in minutes: whether the GPU path works. Replaces the CPU
# build of TensorFlow in .venv with the CUDA build from the GPU lock, then runs the
# reduced-precision and model tests on the GPU and two epochs of ResNet50 training on
# generated images at mixed precision with XLA (images/s against NVIDIA's published figure:
# see benchmarks/bench_training.py).
gpu-check: install
	-$(BIN)/uv pip uninstall --python $(BIN)/python --quiet tensorflow-cpu
	$(BIN)/uv pip install --python $(BIN)/python --quiet --no-deps -r requirements/lock-gpu.txt
	$(BIN)/uv pip check --python $(BIN)/python
	$(BIN)/python -c "import sys, tensorflow as tf; gpus = tf.config.list_physical_devices('GPU'); print('GPUs:', gpus); sys.exit(0 if gpus else 'make gpu-check: TensorFlow sees no GPU')"
	$(BIN)/python -m pytest -q tests/training/test_precision.py tests/training/test_model.py
	$(BIN)/python benchmarks/bench_training.py --backbone resnet50 --precision mixed_float16 --xla --images 256 --epochs 2

clean: stop
	rm -rf .airflow .stack .store .cache
