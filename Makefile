# The two entry points a new user needs: `make demo` and `make test`.
# Both create .venv on first use and reinstall only when pyproject.toml changed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install constraints demo test test-fast lint bench clean

# torch: without an NVIDIA GPU (no nvidia-smi) a CPU build from PyTorch's CPU index, which leaves out the
# ~5.5 GB of CUDA libraries of PyPI's default build; GPU=1 installs the default build. Where no CPU build can
# be had (the index unreachable), the default build is installed, with a message. TORCH_CPU_ARGS and
# TORCH_CPU_PACKAGES point it elsewhere (a wheel folder: TORCH_CPU_ARGS="--find-links DIR" with
# TORCH_CPU_PACKAGES="torch==<the wheel's version>"; torch's own dependencies still come from the index).
GPU ?= $(if $(shell command -v nvidia-smi 2>/dev/null),1,0)
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_CPU_ARGS ?= --index-url $(TORCH_CPU_INDEX)
TORCH_CPU_PACKAGES ?= torch torchvision
# What the installed torch is pinned to for the rest of the install (empty when none was installed first).
TORCH_PIN := $(VENV)/torch-pin.txt

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	@: > $(TORCH_PIN)
ifeq ($(GPU),0)
	@# --isolated: only the CPU index (or the given folder), so a mirror's CUDA build is not taken instead
	@if $(PY) -m pip --isolated install -q $(TORCH_CPU_PACKAGES) $(TORCH_CPU_ARGS) >/dev/null 2>&1 \
	    && $(PY) -c "import sys, torch; sys.exit(torch.version.cuda is not None)"; then \
	    $(PY) -c "import torch; print('torch==' + torch.__version__)" > $(TORCH_PIN); \
	    echo "cdeg: $$(cat $(TORCH_PIN)), without CUDA libraries (no GPU here; GPU=1 for the CUDA build)"; \
	else echo "cdeg: no CPU build of torch from $(TORCH_CPU_INDEX); installing the default build"; fi
endif
	# PyRadiomics 3.0.1 imports numpy in its setup.py, so numpy goes first and the build is not isolated.
	$(PY) -m pip install -q -c constraints.txt -c $(TORCH_PIN) numpy
	$(PY) -m pip install -q -c constraints.txt -c $(TORCH_PIN) --no-build-isolation "pyradiomics==3.0.1"
	$(PY) -m pip install -q -c constraints.txt -c $(TORCH_PIN) -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

# Rewrite constraints.txt from the installed environment (run after `make test` passed on new versions).
constraints: $(STAMP)
	@head -4 constraints.txt > constraints.new
	$(PY) -m pip freeze --exclude-editable | grep -v -i -E '^(torch|torchvision|triton|nvidia-|cuda-)' >> constraints.new
	@mv constraints.new constraints.txt

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
