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

# Regenerate the pinned raw inputs (deterministic) and prove they are the bytes data.dvc pins.
data: install
	$(BIN)/micropatch synth --out data/sources/synthetic
	@$(BIN)/dvc status data.dvc --json | grep -qx '{}' || { \
	  echo "data/sources differs from the content hashes pinned in data.dvc:"; $(BIN)/dvc status data.dvc; \
	  echo "if you changed the generator or its params on purpose, re-pin with: $(BIN)/dvc commit --force data.dvc"; \
	  exit 1; }

run: data
	$(BIN)/dvc repro
	@cat metrics/cross_domain.md
	$(BIN)/dvc metrics show

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf data/raw data/preprocessed data/patches data/model data/predictions data/train_state .dvc/cache .dvc/tmp
