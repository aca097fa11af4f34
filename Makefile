# The two entry points a new user needs: `make demo` and `make test`.
# Both create .venv on first use and reinstall only when pyproject.toml changed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	# PyRadiomics 3.0.1 imports numpy in its setup.py, so numpy goes first and the build is not isolated.
	$(PY) -m pip install -q numpy
	$(PY) -m pip install -q --no-build-isolation "pyradiomics==3.0.1"
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cdeg run --config configs/demo.yaml

# Two workers on a 2-core machine (pytest-xdist); tests that share a study or a trained model run on one worker.
test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadgroup --durations=25

test-fast: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadgroup -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(PY) benchmarks/bench_synth.py

clean:
	rm -rf $(VENV) demo_output bench_run_output .pytest_cache .gpu_bundle
