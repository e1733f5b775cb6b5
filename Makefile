# Two commands for a newcomer: `make run` (pipeline on the embedded default) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the stages' `python` and `dvc` are the venv's
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install data synth run test clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade "pip>=24"
	$(BIN)/python -m pip install -q --disable-pip-version-check -c requirements.lock -e ".[test]"
	touch $(STAMP)

# Restore the pinned raw inputs (data/sources, hashes in data.dvc) from the copy shipped in git (data/store, a DVC
# remote folder): the same bytes on every machine, offline. The generator is not rerun: its JPEG bytes depend on
# OpenCV's CPU dispatch (README, "Same bytes on every machine").
data: install
	$(BIN)/dvc pull --remote embedded data.dvc
	@$(BIN)/dvc status --quiet data.dvc || { echo "data/sources differs from the hashes pinned in data.dvc: move your \
	changes aside, or re-pin them on purpose with: $(BIN)/dvc commit --force data.dvc"; exit 1; }

# Regenerate the default's raw inputs with the generator (params.yaml: synthetic), re-pin and re-ship them.
synth: install
	$(BIN)/micropatch synth --out data/sources
	$(BIN)/dvc commit --force --quiet data.dvc
	$(BIN)/dvc push --quiet --remote embedded data.dvc

run: data
	$(BIN)/dvc repro
	$(BIN)/micropatch readme
	@cat metrics/cross_domain.md
	$(BIN)/dvc metrics show   # the headline figures of the default and of every record

# The real-data tests read the IDRiD copy named by MICROPATCH_IDRID; CI's sits beside the checkout.
MICROPATCH_IDRID ?= $(wildcard $(abspath ../shared/datasets/IDRiD))
export MICROPATCH_IDRID

# The linter first; then every committed split manifest must be leak-free (found by glob, reports to a scratch
# folder, not over metrics/); then the tests, on three pytest-xdist workers over the 2 cores (one process left a core
# idle; two kept them 80 % busy, 42.9 CPU-minutes in 26.8 minutes; three, on a clean clone: 24.9 minutes, each
# worker busy to the end). --dist loadfile keeps each file on one worker, so that a module's fixture (the e2e test's
# built pipeline) is built once; files go out in collection order, the longest first (tests/conftest.py,
# LONGEST_FIRST: the DVC-queue study, handed out 13th, once ran alone for its last minutes). PYTEST_WORKERS=0 runs
# them in this process.
# OMP_WAIT_POLICY=PASSIVE: an OpenMP thread waiting for work sleeps instead of spinning on the core the other worker
# needs (two `benchmarks/train.py --quick` at once: 166.6 s spinning, 94.3 s passive; alone 51.3 s against 53.0 s).
# It changes no result: the number of threads, and so every sum's order, is the same.
PYTEST_WORKERS ?= 3
MANIFESTS := $(wildcard data/splits/manifest.csv results/*/data/splits/manifest.csv)
test: install
	@[[ "$(PYTEST_WORKERS)" =~ ^[0-9]+$$ ]] || { echo "PYTEST_WORKERS=$(PYTEST_WORKERS): give a number of \
	pytest-xdist workers (0: the tests in one process)" >&2; exit 2; }
	$(BIN)/ruff check
	@test -n "$(MANIFESTS)" || { echo "no committed split manifest found" >&2; exit 1; }
	@for manifest in $(MANIFESTS); do \
	  echo "audit $$manifest"; \
	  $(BIN)/micropatch audit --manifest $$manifest --no-patches --out .pytest_cache/audit/$$(dirname $$manifest) \
	    || exit 1; \
	done
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

clean:
	rm -rf data/raw data/preprocessed data/patches data/model data/predictions data/train_state data/downloads \
	  .dvc/cache .dvc/tmp
