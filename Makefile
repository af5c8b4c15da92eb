# The two commands of the README: `make run` and `make test`. Both set up .venv on first use.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Keeps pip on the local CPU wheel of torch (an unpinned torch pulls GBs of CUDA packages).
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export CLINASSIST_DATA ?= $(abspath $(CURDIR)/../shared/datasets)

.PHONY: run test install system-packages bento

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[train,serve,dev]'
	touch $@

# The HTTP services, and the DICOM gateway when CLINASSIST_HOME/gateway.json configures one.
# `exec` makes `clinassist serve` make's own child: make passes SIGTERM to it and waits while it
# stops every process below it; a terminal's Ctrl+C reaches it with make's process group.
HOST ?= 127.0.0.1
PORT ?= 3000
run: $(STAMP)
	@exec $(BIN)/clinassist serve --host $(HOST) --port $(PORT) --gateway

# The Bento of the services (bentofile.yaml) into $BENTOML_HOME (default ~/bentoml), offline;
# `bentoml containerize clinassist:latest` then builds the image deploy/ runs (README, "Scaling out").
bento: $(STAMP)
	$(BIN)/python deploy/build_bento.py

# Debian packages the tests start or call: dciodvfy (dicom3tools) validates the DICOM objects
# the service writes; Orthanc is the PACS of the integration tests; dcmtk's storescu feeds it;
# headless Chromium opens Orthanc's Web Viewer in the viewer test; PostgreSQL is the shared
# database the store tests and the replica test start (tests/postgres_server.py).
SYSTEM_PACKAGES := dicom3tools orthanc orthanc-dicomweb orthanc-webviewer dcmtk chromium \
	chromium-driver postgresql
system-packages:
	@if ! dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES); fi

# mypy first (pyproject.toml, tool.mypy: serving/ and clinassist/), then the tests.
test: $(STAMP) system-packages
	$(BIN)/mypy
	$(BIN)/pytest
