# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Table 1 and Figure 4 from a sweep
#
# Reads the `metrics.json` of every run under `RUNS` (default: the folder that
# `make reproduce-table1` fills) and draws what `python -m cce_dlrm.results.table1` writes:
# the compression table, Figure 4 (test BCE at the best validation against parameters in the
# largest table, seeds' min–max as a band, the full-table baseline, the paper's read-off
# values where the setting is the paper's) and the validation curves with CCE's clustering
# rounds. Same functions, same files. Run from this folder with the project's kernel
# (`.venv`). This file is paired with `figures.ipynb` through jupytext
# (`jupytext --sync notebooks/figures.py`).

# %%
import os
from pathlib import Path

from cce_dlrm.results import figures
from cce_dlrm.results.runs import load_runs
from cce_dlrm.results.table1 import figure_stem, group_runs
from cce_dlrm.results.table1_data import build
from cce_dlrm.results.table1_markdown import markdown

RUNS = Path(os.environ.get("CCE_RUNS", "../runs/table1_synthetic"))
OUT = Path(os.environ.get("CCE_FIGURES", f"../results/{RUNS.name}/figures"))
OUT.mkdir(parents=True, exist_ok=True)

runs = load_runs(RUNS)
table = build(runs)
several = len(table["groups"]) > 1
print(markdown(table))

# %% [markdown]
# ## Figure 4: BCE against parameters in the largest table

# %%
bce_figures = [figures.bce_vs_params(g, OUT / f"bce_vs_params{figure_stem(g, several)}.png")
               for g in table["groups"]]
bce_figures[0] if bce_figures else None

# %% [markdown]
# ## Validation BCE during training (dotted lines: CCE's clustering rounds)

# %%
curve_figures = [figures.val_curves(group_runs(runs, g), OUT / f"val_curves{figure_stem(g, several)}.png")
                 for g in table["groups"]]
curve_figures[0] if curve_figures else None
