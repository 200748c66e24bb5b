# Two entry points for a fresh clone: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch for this machine: a CPU machine gets the CPU build (the pinned release is the CPU wheel on
# the project's CI machines); a machine with an NVIDIA driver gets pip's default CUDA build.
# Override with e.g. `make TORCH='torch --index-url https://download.pytorch.org/whl/cpu'`.
TORCH ?= $(if $(shell command -v nvidia-smi 2>/dev/null),torch,torch==2.13.0)

.PHONY: venv demo test test-slow test-all bench clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install $(TORCH)
	$(PY) -m pip install -e ".[test]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/talkface demo --out out/demo

test: venv
	$(PY) -m pytest -m "not slow and not cuda" -q

test-slow: venv
	$(PY) -m pytest -m "slow" -q

test-all: venv
	$(PY) -m pytest -q

bench: venv
	$(PY) scripts/bench_raster.py

clean:
	rm -rf out .pytest_cache
