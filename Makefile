# Everything runs inside .venv, which the targets below create or refresh themselves.
# DEVICE=cpu (default when no NVIDIA GPU is visible) or DEVICE=cuda picks the torch /
# fbgemm / faiss builds; that is the only difference between the two installs.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
DEVICE ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)
STAMP := $(VENV)/.installed-$(DEVICE)
REQS := requirements/common.txt requirements/$(DEVICE).txt requirements/dev.txt pyproject.toml
DATASET ?= criteo_kaggle
DAYS ?= 0-23
EXPERIMENT ?= table1_synthetic
RUNS_DIR ?= $(or $(CCE_RUNS_DIR),runs)
RESULTS_DIR ?= results
# parallel sweep jobs: 2 on a CPU (one thread each), 1 on a GPU (jobs would share it)
JOBS ?= $(if $(filter cpu,$(DEVICE)),2,1)
LAUNCH = $(if $(filter-out 1,$(JOBS)),hydra/launcher=joblib hydra.launcher.n_jobs=$(JOBS))
BENCH_SCALE ?= small
EXTRA_METHODS ?=

.DEFAULT_GOAL := help
.PHONY: help venv test test-fast smoke download-criteo preprocess reproduce-table1 fairness overfitting bench clean-runs

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-20s %s\n", $$1, $$2}'

$(STAMP): $(REQS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	# torch/fbgemm/faiss first: torchrec declares the CUDA fbgemm-gpu, so it comes without deps
	$(PY) -m pip install --quiet -r requirements/$(DEVICE).txt
	$(PY) -m pip install --quiet -r requirements/common.txt -r requirements/dev.txt
	$(PY) -m pip install --quiet --no-deps torchrec==1.8.0
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -c "import torch, fbgemm_gpu, torchrec, faiss; print('installed: torch', torch.__version__, '| torchrec', torchrec.__version__, '| faiss', faiss.__version__)"
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP) ## create or refresh .venv (DEVICE=cpu|cuda)

test: $(STAMP) ## run the whole test suite (about 12 minutes on 2 CPU cores, plus 1 to install)
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: $(STAMP) ## the tests that take seconds (no end-to-end training)
	$(PY) -m pytest -q -m "not slow"

smoke: $(STAMP) ## one tiny training run (under a minute on CPU)
	$(PY) -m cce_dlrm.train experiment=smoke

download-criteo: ## fetch a Criteo dataset into data/raw/$(DATASET)/ (DATASET=criteo_terabyte DAYS=0-23)
	scripts/download_criteo.sh $(DATASET) $(DAYS)

preprocess: $(STAMP) ## raw Criteo files -> data/processed/$(DATASET)/ (Hydra overrides in ARGS="...")
	$(PY) -m cce_dlrm.preprocess dataset=$(DATASET) $(if $(filter command environment,$(origin DAYS)),"++dataset.preprocess.days='$(DAYS)'") $(ARGS)

# Table 1: the full-table baselines (one per dataset and seed, also the runs pq quantizes),
# then the experiment's grid, then the table and figures. Finished runs are skipped, so a
# rerun redoes only what is missing. JOBS > 1 runs the grid through Hydra's joblib launcher
# (one thread per job; parallel jobs that need the same synthetic dataset take turns building it).
# EXTRA_METHODS=mch,cafe,mde,dpq adds optional columns: the same grid (caps, seeds, datasets)
# for those methods, swept after the experiment's own columns and in the same table.
reproduce-table1: $(STAMP) ## Table 1 by the paper's protocol (EXPERIMENT=table1|table1_1epoch|table1_terabyte for Criteo; EXTRA_METHODS, JOBS, ARGS) -> results/$(EXPERIMENT)/
	$(PY) -m cce_dlrm.train -m experiment=$(EXPERIMENT) hydra.sweep.dir=$(RUNS_DIR)/$(EXPERIMENT) $(LAUNCH) $(ARGS) method=full max_table_params=null
	$(PY) -m cce_dlrm.train -m experiment=$(EXPERIMENT) hydra.sweep.dir=$(RUNS_DIR)/$(EXPERIMENT) $(LAUNCH) $(ARGS)
	$(if $(EXTRA_METHODS),$(PY) -m cce_dlrm.train -m experiment=$(EXPERIMENT) hydra.sweep.dir=$(RUNS_DIR)/$(EXPERIMENT) $(LAUNCH) $(ARGS) method=$(EXTRA_METHODS))
	$(PY) -m cce_dlrm.results.table1 $(RUNS_DIR)/$(EXPERIMENT) --out $(RESULTS_DIR)/$(EXPERIMENT)

# The fair-comparison evidence: the ablation baselines first (what the pq variants quantize),
# then the lr sweep and each ablation variant, then the report.
FAIRNESS = $(PY) -m cce_dlrm.train -m experiment=fairness_ablations hydra.sweep.dir=$(RUNS_DIR)/fairness_ablations
fairness: $(STAMP) ## lr sensitivity (5 lrs) and ablations of every method at one cap, 3 seeds -> results/fairness/ (JOBS, ARGS)
	$(FAIRNESS) $(LAUNCH) $(ARGS) method=full max_table_params=null variant=baseline
	$(PY) -m cce_dlrm.train -m experiment=fairness_lr hydra.sweep.dir=$(RUNS_DIR)/fairness_lr $(LAUNCH) $(ARGS)
	$(FAIRNESS) $(LAUNCH) $(ARGS) method=cce variant=cce
	$(FAIRNESS) $(LAUNCH) $(ARGS) method=cce variant=cce_no_clustering method.cluster_every=0
	$(FAIRNESS) $(LAUNCH) $(ARGS) method=cce variant=cce_residual method.residual=true
	$(FAIRNESS) $(LAUNCH) $(ARGS) method=cce variant=cce_two_level method.two_level_above_cap=0
	$(FAIRNESS) $(LAUNCH) $(ARGS) method=pq variant=pq
	$(FAIRNESS) $(LAUNCH) $(ARGS) method=pq variant=pq_two_level method.two_level_above_cap=0
	$(PY) -m cce_dlrm.results.fairness $(RUNS_DIR)/fairness_lr $(RUNS_DIR)/fairness_ablations --out $(RESULTS_DIR)/fairness

# Does a full table overfit after one epoch (as on Criteo Kaggle)? On the default synthetic data
# and on a small instance of it, each under SGD and under row-wise Adagrad.
overfitting: $(STAMP) ## full vs hashing for 3 epochs, 3 seeds, SGD and row-wise Adagrad, default data and a small instance (about 35 min) -> results/overfitting/ (JOBS, ARGS)
	$(PY) -m cce_dlrm.train -m experiment=overfitting hydra.sweep.dir=$(RUNS_DIR)/overfitting $(LAUNCH) $(ARGS)
	$(PY) -m cce_dlrm.train -m experiment=overfitting_small hydra.sweep.dir=$(RUNS_DIR)/overfitting $(LAUNCH) $(ARGS)
	$(PY) -m cce_dlrm.results.overfitting $(RUNS_DIR)/overfitting --out $(RESULTS_DIR)/overfitting

bench: $(STAMP) ## speed, memory, scaling, clustering, preprocessing report -> results/bench/ (BENCH_SCALE=small|full)
	$(PY) -m cce_dlrm.bench --scale $(BENCH_SCALE)

clean-runs: ## delete runs/ (training outputs)
	rm -rf runs
