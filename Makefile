# The set-up and test commands the README names. Works on a fresh Debian machine as root
# (CI) or as a user with sudo.
PYTHON ?= python3
VENV ?= .venv
PIP := $(VENV)/bin/pip
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install install-system test lint bench evaluate

# Everything: packaged brain MRI for the data generator (Debian), then the package with the
# synth, train (Ultralytics, torch: only for training, evaluation baselines and .pt files) and
# dev extras. torch is pinned to the release this machine image carries on disk.
install: install-system
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet 'torch==2.14.1' 'torchvision==0.29.1'
	$(PIP) install --quiet -e '.[dev,dicom,synth,train]'

install-system:
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv mricron-data insighttoolkit5-examples chromium chromium-driver poppler-utils

test: lint
	$(VENV)/bin/python -m pytest

lint:
	$(VENV)/bin/ruff check src tests bench

bench:
	$(VENV)/bin/python bench/detector_latency.py
	$(VENV)/bin/python bench/service_latency.py

evaluate:
	$(VENV)/bin/python -m mriscribe.training.evaluate --n 800
