# `make demo` and `make test` each create .venv and install what they need, so they work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1

.PHONY: demo test test-learned-avx2 lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

# The dev extra is every optional extra (serve, shards, onnx, minilm) plus the test tools and setuptools
# (the wheel test builds offline): the suite tests every feature.
$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m mumo demo --overwrite  # a second `make demo` replaces the first

# Every test but the end-to-end recipe runs (2.5 minutes of the demo recipe), which CI runs once, on AVX2
# kernels, with the other tests of learned behaviour (test-learned-avx2): the suite stays under 10 minutes.
# Two pytest workers, a test file each at a time, each with one torch thread: most tests use one core (and
# the rest wait on subprocesses), so one process left the second core idle (10:49 on 2 cores; 7:41 in two).
# Two torch threads per worker would oversubscribe the cores (xdist with the default threads: 9:31).
test: $(VENV)/.installed-dev
	$(PY) -m ruff check src tests benchmarks experiments
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "not recipe" -n 2 --dist loadfile

# The tests of learned behaviour again, on the kernels of a CPU without AVX-512: results must not hang on
# the last bits a machine's kernels round differently. ATen's own kernels, oneDNN's (convolutions) and MKL's
# (matrix products) each pick their code path for the CPU; each is held to AVX2 here.
test-learned-avx2: $(VENV)/.installed-dev
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 $(PY) -m pytest -q -m learned

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check src tests benchmarks experiments

bench: $(VENV)/.installed-dev
	$(PY) benchmarks/train_step.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
