# Two set-up entry points: `make run` (the main job on the embedded default) and `make test`; besides them
# `make study` (the resumable study), `make lint` and `make clean`.
# Each bootstraps a local venv on first use: torch==2.13.0 first (the build pip's configured index serves:
# a CPU wheel on a machine whose pip points at one, else PyPI's CUDA build),
# then the package (`make test` adds its dev and flower extras). pip byte-compiles on install: where
# PYTHONDONTWRITEBYTECODE is set (as on the development machine) nothing is cached later, and every engine worker would
# compile torch again (measured: +17 s on the smoke run with pip's --no-compile).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.drake-installed
DEV_STAMP := $(VENV)/.drake-dev-installed

export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export FLWR_TELEMETRY_ENABLED ?= 0
export TOKENIZERS_PARALLELISM ?= false

.PHONY: run test study lint clean

# `make run` installs what a run needs; `make test` adds the test tools and Flower on top (once).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,flower]'
	touch $(DEV_STAMP)

run: $(STAMP)
	$(BIN)/python eval.py --method fedmosaic $(ARGS)

# The whole DRAKE-synth study (many hours on 2 cores; resumable: run it again to continue).
study: $(STAMP)
	$(BIN)/python -m drake study $(ARGS)

test: $(DEV_STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest -q $(ARGS)

lint: $(DEV_STAMP)
	$(BIN)/python -m ruff check . && $(BIN)/python -m ruff format --check .

clean:
	rm -rf $(VENV) .drake build *.egg-info
