# Two commands: `make reproduce` (the whole pipeline) and `make test` (the test suite).
# Both create .venv when it is missing and install the package into it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(abspath $(VENV))/bin
# DVC runs stage commands through the shell: put the venv first so `python` is the venv's.
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export ITERATIVE_DO_NOT_TRACK := 1

.PHONY: reproduce test test-slow install clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

install: $(VENV)/.installed

# data/ (tracked by data.dvc) holds only this README until you add the ILSVRC2012 archives. DVC
# keeps it out of git, so a fresh clone restores it here, byte-identical to what data.dvc pins.
data/README.md:
	mkdir -p data
	cp replication/data/ilsvrc2012_README.md $@

# The settings are checked (every profile) before DVC runs: a bad params.yaml stops here, with
# a message naming the key, before DVC deletes any stage's outputs.
reproduce: install data/README.md
	python -m replication params --check
	dvc repro

test: install
	python -m pytest -m "not slow"

test-slow: install
	python -m pytest -m slow

clean-venv:
	rm -rf $(VENV)
