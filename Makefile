# resgan: make setup | make run | make test   (see README.md)
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup run test test-fast ablation quality plots compare ui clean

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

# The depth x shortcut study (params.yaml `ablation`), a DVC pipeline of its own: report in
# studies/ablation8/report/.
ablation: setup
	dvc repro studies/ablation8/dvc.yaml

# The champion against the references and the ablation's contenders (runs what it needs
# first: the pipeline and the ablation): report in studies/quality/report/.
quality: setup
	dvc repro studies/quality/dvc.yaml

# DVC's plots page, dvc_plots/index.html (Vega inlined: no network; `dvc plots diff` compares
# experiments).
plots: setup
	dvc plots show

# The experiments side by side, scores and searched params only, one screen wide (the plain
# `dvc exp show` leads with the same scores, then every param, study metric and dep).
compare: setup
	dvc exp show --no-pager --drop '.*' --keep 'Experiment|Created|(outputs/eval/metrics.json:)?(fid|fid_se|fid_over_copier|kid|precision|recall|depth|residual|lr_g|lr_d|images_per_s)$$|train.seed$$|promoted$$'

ui: setup
	mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --port 5000

clean:
	rm -rf outputs dvc_plots .ray_results
