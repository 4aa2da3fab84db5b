# Quick start:  make demo   (set up, then run the miniature study into results/demo/)
#               make test   (set up, then run the tests)
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

.PHONY: setup system-deps demo test dry-run-paper clean-demo libero-env libero-check lmms-env slurm-profile reliability mutants

# MuJoCo renders off-screen through EGL (Mesa); a fresh Debian machine lacks the libraries.
system-deps:
	@if ldconfig -p | grep -q libEGL_mesa && ldconfig -p | grep -q libOpenGL.so.0; then :; else \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq \
	    libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 libgl1 >/dev/null; fi

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[metaworld,workflow,test]'
	touch $@

setup: system-deps $(BIN)/.installed

demo: setup
	$(BIN)/snakemake --configfile config/demo.yaml --cores $(CORES)

test: setup
	$(BIN)/pytest -q

# LIBERO-10's simulator in its own environment (the policy reaches it over a websocket)
libero-env: system-deps
	envs/setup-libero-venv.sh .venv-libero

# a real LIBERO-10 evaluation through the policy server, with a tiny policy (benchmarks/libero_check.py)
libero-check: setup libero-env
	$(BIN)/python benchmarks/libero_check.py

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
