# The two commands of the README: `make run` and `make test`. Both set up .venv on first use.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Keeps pip on the local CPU wheel of torch (an unpinned torch pulls GBs of CUDA packages).
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export CLINASSIST_DATA ?= $(abspath $(CURDIR)/../shared/datasets)

.PHONY: run test install system-packages

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[train,serve,dev]'
	touch $@

run: $(STAMP)
	$(BIN)/clinassist serve

# dciodvfy (Debian's dicom3tools) validates the DICOM objects the service writes.
system-packages:
	@command -v dciodvfy >/dev/null || { apt-get update -qq && apt-get install -y -qq dicom3tools; }

test: $(STAMP) system-packages
	$(BIN)/pytest
