# pylibnn: everything a newcomer runs goes through here, each target doing its own set-up
# (virtual environment in .venv, torch==2.14.1, compilation of the extension).
#   make demo    train the tutorial network on pylibnn's kernels beside the pure-torch reference
#   make test    run the test suite
#   make bench   run the CPU benchmark suite (results under benchmarks/results/)
#   make sanitize  the kernel tests under ASan + UBSan, in a scratch copy (about 1.5 minutes)

PYTHON ?= python3
VENV   ?= .venv
VPY    := $(VENV)/bin/python
# One home for the torch version: pyproject.toml's build requirement (torch==X.Y.Z).
TORCH_VERSION ?= $(shell sed -n 's/^requires = .*"torch==\([^"]*\)".*/\1/p' pyproject.toml)

.PHONY: demo test bench build clean sanitize

# The environment: made once, remade when this Makefile changes.
$(VENV)/.deps-installed: Makefile
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet "torch==$(TORCH_VERSION)" ninja "setuptools>=64" wheel numpy pytest pytest-xdist \
		hypothesis "transformers==5.24.0" onnx onnxscript onnxruntime
	touch $@

# Compiles pylibnn._C in place. Objects and ninja's state persist in build/ (setup.py), so
# with nothing changed this compiles nothing; `make clean` removes them.
build: $(VENV)/.deps-installed
	$(VPY) -m pip install --quiet --no-build-isolation -e .

demo: build
	$(VPY) -m pylibnn

# One worker per core (at most 4), tests handed out one by one: the op database's thousands
# of cases (tests/test_opdb.py) spread over every worker, the CPU tests and the emulated
# CUDA tests (tests/cuda_emulation.py) side by side.
test: build
	$(VPY) -m pytest -n auto --maxprocesses 4 --dist load

bench: build
	$(VPY) -m pip install --quiet matplotlib
	$(VPY) -m benchmarks.bench_linear
	$(VPY) -m benchmarks.bench_mlp

sanitize: $(VENV)/.deps-installed
	PYTHON=$(VPY) bash scripts/sanitize.sh

clean:
	rm -rf build pylibnn/_C*.so pylibnn/_build_config.py *.egg-info
