# Quick start:  make demo   (set up, then run the miniature study into results/demo/)
#               make test   (set up, build the docs strictly, then run the tests)
# Environments: make setup installs the core environment from envs/vlm4vla-lock.txt; make lock
# rewrites that lock (UPGRADE=1: the newest versions pyproject.toml's ranges allow); make test-latest
# runs the suite and the drift reports in .venv-latest, with the newest versions (docs/environments.md).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# the rules' commands (python, torchrun) come from the project's environment
export PATH := $(abspath $(BIN)):$(PATH)
CORES ?= 2
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl
export TOKENIZERS_PARALLELISM ?= false

LOCK := envs/vlm4vla-lock.txt
TORCH := $(shell sed -n 's/^ *"torch==\([^"]*\)".*/\1/p' pyproject.toml)
# make lock: uv (a pinned release, in its own environment) and where it finds torch's CPU build
UV_VERSION := 0.13.9
TOOLS ?= .venv-tools
TORCH_WHEELS ?= https://download.pytorch.org/whl/cpu/torch/
LATEST ?= .venv-latest

.PHONY: setup system-deps demo test docs lock test-latest dry-run-paper clean-demo libero-env libero-check calvin-env calvin-check lmms-env slurm-profile reliability test-long test-e2e mutants

# MuJoCo renders off-screen through EGL (Mesa); a fresh Debian machine lacks the libraries.
system-deps:
	@if ldconfig -p | grep -q libEGL_mesa && ldconfig -p | grep -q libOpenGL.so.0; then :; else \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq \
	    libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 libgl1 >/dev/null; fi

$(BIN)/.installed: $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	envs/install-locked.sh $(BIN)/python
	touch $@

setup: system-deps $(BIN)/.installed

demo: setup
	$(BIN)/snakemake --configfile config/demo.yaml --cores $(CORES)

test: setup docs
	$(BIN)/python -m vlm4vla_core lock-check
	$(BIN)/pytest -q

# the documentation site (mkdocs.yml, docs/) into site/; any warning fails, a broken internal link or anchor too
docs: setup
	$(BIN)/mkdocs build --strict --quiet

$(TOOLS)/bin/uv:
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q uv==$(UV_VERSION)

# the core lock from pyproject.toml's ranges, keeping the locked versions that still fit (UPGRADE=1: newest);
# torch is resolved as its CPU build (for its dependencies) and left out of the file (envs/install-locked.sh);
# envs/vlm4vla.yaml records the lock's sha256, so that a changed lock rebuilds Snakemake's conda environment
lock: $(TOOLS)/bin/uv
	printf 'torch==%s+cpu\n' $(TORCH) > $(TOOLS)/torch-cpu.txt
	$(TOOLS)/bin/uv pip compile pyproject.toml --extra metaworld --extra workflow --extra test --extra docs \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes \
	  --find-links $(TORCH_WHEELS) --override $(TOOLS)/torch-cpu.txt --no-emit-package torch \
	  --custom-compile-command 'make lock' $(if $(UPGRADE),--upgrade) --quiet -o $(LOCK)
	sed -i "s/^# lock sha256: .*/# lock sha256: $$(sha256sum $(LOCK) | cut -d' ' -f1)/" envs/vlm4vla.yaml

# the canary for upstream drift, in its own environment (the core one is not touched): the newest versions
# the ranges allow, what differs from the lock, the architecture sweep against its table, then the suite
test-latest: system-deps
	test -x $(LATEST)/bin/python || $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install -q --upgrade --upgrade-strategy eager torch==$(TORCH) -e '.[metaworld,workflow,test,docs]'
	$(LATEST)/bin/python -m vlm4vla_core lock-check --drift
	$(LATEST)/bin/python -m vlm4vla_core architectures --out $(LATEST)/architectures.json \
	  --compare docs/architectures.json
	PATH=$(abspath $(LATEST)/bin):$$PATH $(LATEST)/bin/pytest -q

# LIBERO-10's simulator in its own environment (the policy reaches it over a websocket)
libero-env: system-deps
	envs/setup-libero-venv.sh .venv-libero

# the simulator checks: a real evaluation through the policy server of a tiny policy trained on a synthetic
# dataset, as a study of its own (config/checks/; results into results/libero_check/ and results/calvin_check/)
libero-check: setup libero-env
	$(BIN)/snakemake --configfile config/checks/libero10.yaml --cores $(CORES)

# CALVIN's simulator in its own environment, from a local git clone of mees/calvin_env (not on PyPI)
CALVIN_ENV ?= ../calvin_env
calvin-env: system-deps
	envs/setup-calvin-venv.sh .venv-calvin $(CALVIN_ENV)

calvin-check: setup calvin-env
	$(BIN)/snakemake --configfile config/checks/calvin.yaml --cores $(CORES)

# lmms-eval in its own environment (it needs torchvision, which the core environment never gets):
# the vqa-lmms stage, a vqa_sets entry with framework: lmms-eval and python: .venv-lmms/bin/python
lmms-env:
	envs/setup-lmms-venv.sh .venv-lmms

# the example global profile, so that `snakemake --profile slurm` finds it (edit account/partition there)
slurm-profile:
	mkdir -p ~/.config/snakemake && cp -rn profiles/slurm ~/.config/snakemake/

# the long reliability tests (20 random kills of a training run, and the like)
reliability: setup
	$(BIN)/pytest -q -m reliability

# what training learns, at the demo's settings (minutes): general pretraining to the top level reads
# colour on held-out shapes above chance
test-long: setup
	$(BIN)/pytest -q -m long

# the demo study's own DAG end to end through the slurm executor on a fake Slurm (about 9 minutes); the
# default run sends config/test.yaml, every kind of rule, the same way
test-e2e: setup
	$(BIN)/pytest -q -m e2e

# mutation testing (docs/mutation.md): mutmut 3 over the benchmark protocols, the statistics and then the
# policy's action maths, each mutant against a fast test selection (setup.cfg); the score per group and
# the surviving mutants go to mutants/report.md
mutants: setup
	$(BIN)/pip install -q -r envs/mutants.txt
	env -u PYTHONPATH $(BIN)/python tests/helpers/mutants.py run
	$(BIN)/python tests/helpers/mutants.py report --out mutants/report.md

dry-run-paper: setup
	$(BIN)/snakemake -n --quiet rules

clean-demo:
	rm -rf results/demo
