# Every target creates .venv on first use with the measured recipe (see README) and reuses it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

DATA ?= synthetic
DATA_ROOT ?=

.PHONY: install test test-full train bench smoke reproduce-table3 reproduce-moxi reproduce-superpixel reproduce-smdl reproduce-sanity reproduce-interventions reproduce-comet-two-part reproduce-all report clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install torch==2.14.1 torchvision==0.29.1
	$(VENV)/bin/pip install -e '.[dev]'
	$(VENV)/bin/pip install --no-deps imgaug==0.4.0 quantus==0.6.0  # quokka photo; metric cross-checks
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-full: $(STAMP)
	$(PY) -m pytest -q

train: $(STAMP)
	$(PY) -m reproduce.train experiment=quickstart_cnn
	$(PY) -m reproduce.train experiment=quickstart_vit

bench: $(STAMP)
	$(PY) -m reproduce.bench attributors
	$(PY) -m reproduce.bench games
	$(PY) -m reproduce.bench metrics

# Any table end to end with tiny settings, in minutes: `make smoke TABLE=moxi` (results/smoke/, not a result).
TABLE ?= table3
smoke: $(STAMP)
	$(PY) -m reproduce.table table=$(TABLE) smoke=true

# Paper results. DATA picks the paper's setting (a spec conf/table/<table>_<DATA>.yaml), DATA_ROOT
# its dataset folder; the default is the embedded benchmark, offline, on a CPU. QUICK=1: a preview
# with about a quarter of the images (results/<table>_quick.*, never mixed with the full results).
TABLE_ARGS = $(if $(DATA_ROOT),paths.dataset_root=$(abspath $(DATA_ROOT))) $(QUICK_ARGS)
QUICK_ARGS = $(if $(filter 1 true,$(QUICK)),quick=true)
table_name = $(1)$(if $(filter-out synthetic,$(DATA)),_$(DATA))
embedded = $(filter synthetic,$(DATA))

reproduce-table3: $(STAMP)
	$(PY) -m reproduce.table table=$(call table_name,table3) $(TABLE_ARGS)

# On the embedded default it also runs MoXI on the real photos and pretrained CNN (moxi_photos, offline).
reproduce-moxi: $(STAMP)
	$(PY) -m reproduce.table table=$(call table_name,moxi) $(TABLE_ARGS)
	$(if $(embedded),$(PY) -m reproduce.table table=moxi_photos $(QUICK_ARGS))

reproduce-superpixel: $(STAMP)
	$(PY) -m reproduce.table table=$(call table_name,superpixel) $(TABLE_ARGS)

reproduce-smdl: $(STAMP)
	$(PY) -m reproduce.table table=$(call table_name,smdl) $(TABLE_ARGS)
	$(if $(embedded),$(PY) -m reproduce.table table=smdl_misclassified $(QUICK_ARGS))

# Sanity checks (Adebayo et al.): MPRT cascading/independent and random logit for every cheap attributor.
reproduce-sanity: $(STAMP)
	$(PY) -m reproduce.table table=sanity $(TABLE_ARGS)

# FunnyBirds' interventional protocol on the embedded benchmark (exact counterfactual re-renders).
reproduce-interventions: $(STAMP)
	$(PY) -m reproduce.table table=interventions $(TABLE_ARGS)

# COMET's feature coverage: does the mask cover BOTH parts of the two-part benchmark (vs the two-player ablation)?
reproduce-comet-two-part: $(STAMP)
	$(PY) -m reproduce.table table=comet_two_part $(TABLE_ARGS)

# Every embedded table, then results/REPORT.md (REPORT_quick.md with QUICK=1): the claims scoreboard and
# every table. comet_two_part is COMET's two-part feature-coverage table (claim comet-feature-coverage).
# Every embedded table (conf/all.yaml), JOBS at a time with cores / JOBS threads each, then the report.
JOBS ?= 2
reproduce-all: $(STAMP)
	$(PY) -m reproduce.all jobs=$(JOBS) $(QUICK_ARGS)

# The report alone, from whatever cells are on disk (claims of tables not run say "not run").
report: $(STAMP)
	$(PY) -m reproduce.report $(QUICK_ARGS)

clean-venv:
	rm -rf $(VENV)
