# resgan: make setup | make run | make test   (see README.md)
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup run test test-fast ablation quality plots ui clean

setup: $(STAMP)

# Re-installs only when the pins or the package metadata change (idempotent).
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

run: setup
	dvc repro

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not ray and not e2e"

# The depth x shortcut ablation (params.yaml `ablation`); report in docs/ablation.md.
ablation: setup
	dvc repro prepare
	$(BIN)/python pipeline/ablation.py

# The champion against the floor and the best plain network (after run and ablation).
quality: setup
	$(BIN)/python pipeline/quality.py

# DVC's plots page, dvc_plots/index.html (Vega inlined: no network; `dvc plots diff` compares
# experiments).
plots: setup
	dvc plots show

ui: setup
	mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --port 5000

clean:
	rm -rf outputs dvc_plots .ray_results
