# `make demo` and `make test` each create .venv and install what they need, so they work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m mumo demo --overwrite  # a second `make demo` replaces the first

test: $(VENV)/.installed-dev
	$(PY) -m ruff check src tests benchmarks experiments
	$(PY) -m pytest -q

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check src tests benchmarks experiments

bench: $(VENV)/.installed-dev
	$(PY) benchmarks/train_step.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
