# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv and install first.
# torch is named in the same pip call as everything else so that the build chosen here wins:
#   CPU (default):  make test
#   CUDA workers:   make setup TORCH="torch==2.13.0" PIP_ARGS="--index-url <PyTorch CUDA wheel index> --extra-index-url <PyPI>"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PIP_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: setup demo test lint format golden weights clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install $(PIP_ARGS) -e ".[dev]" "$(TORCH)"
	bash scripts/ensure_tools.sh
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: setup lint
	$(BIN)/python -m pytest

golden: setup
	$(BIN)/python tests/golden_check.py ../shared/reference/golden

demo: setup
	$(BIN)/python -m flows.demo

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
