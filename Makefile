# Two commands for a newcomer: `make run` (pipeline on the embedded default) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the stages' `python` and `dvc` are the venv's
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install data run test clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade "pip>=24"
	$(BIN)/python -m pip install -q --disable-pip-version-check -c requirements.lock -e ".[test]"
	touch $(STAMP)

# Regenerate the pinned raw inputs (deterministic), hash and cache them, and prove they are the bytes data.dvc pins.
data: install
	$(BIN)/micropatch synth --out data/sources/synthetic
	@cp data.dvc .dvc/tmp-data.dvc.pinned
	@$(BIN)/dvc commit --force --quiet data.dvc
	@if cmp -s data.dvc .dvc/tmp-data.dvc.pinned; then rm .dvc/tmp-data.dvc.pinned; else \
	  mv .dvc/tmp-data.dvc.pinned data.dvc; \
	  echo "data/sources differs from the content hashes pinned in data.dvc (the generator no longer reproduces them)."; \
	  echo "if you changed the generator or its params on purpose, re-pin with: $(BIN)/dvc commit --force data.dvc"; \
	  exit 1; fi

run: data
	$(BIN)/dvc repro
	$(BIN)/micropatch readme
	@cat metrics/cross_domain.md
	$(BIN)/dvc metrics show metrics/domains   # all metrics: dvc metrics show

# The real-data tests read the IDRiD copy named by MICROPATCH_IDRID; CI's sits beside the checkout.
MICROPATCH_IDRID ?= $(wildcard $(abspath ../shared/datasets/IDRiD))
export MICROPATCH_IDRID

# The committed split manifests must be leak-free (reports go to a scratch folder, not over metrics/).
test: install
	$(BIN)/micropatch audit --manifest data/splits/manifest.csv --no-patches --out .pytest_cache/audit
	$(BIN)/micropatch audit --manifest results/idrid-ma/data/splits/manifest.csv --no-patches \
	  --out .pytest_cache/audit-idrid-ma
	$(BIN)/python -m pytest

clean:
	rm -rf data/raw data/preprocessed data/patches data/model data/predictions data/train_state data/downloads \
	  .dvc/cache .dvc/tmp
