# The set-up and test commands the README names. Works on a fresh Debian machine as root
# (CI) or as a user with sudo.
PYTHON ?= python3
VENV ?= .venv
PIP := $(VENV)/bin/pip
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install install-system test lint bench evaluate real-scans image test-image

# Real tumour MRI for measuring the detector (never for training): the brain test cases inside
# the pyradiomics 3.0.1 source archive, checked by sha256; only the four brain files kept.
REAL_SCANS := .cache/real-scans
PYRADIOMICS_SHA256 := 47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5

# llama-cpp-python compiles llama.cpp (about 5-10 minutes on 2 cores): a portable x86-64 build,
# since a native build can crash at its first decode on CPUs other than the one it was built on.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

# Everything: packaged brain MRI for the data generator (Debian), then the package with the
# synth, train (Ultralytics, torch: only for training, evaluation baselines and .pt files),
# the three report engines and dev extras. torch is pinned to a tested release.
install: install-system
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet 'torch==2.14.1' 'torchvision==0.29.1'
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PIP) install --quiet -e '.[dev,dicom,synth,train,llama-cpp,transformers,openai]'
	$(MAKE) real-scans

real-scans: $(REAL_SCANS)/.complete

# Fetched through the package index pip is configured with (no host name here). pip checks the
# pinned sha256 (hash-checking mode) before it unpacks anything; only then does it run the
# archive's setup.py to read its metadata, which needs numpy and setuptools from the venv
# (without build isolation). The stamp is written only once all four files are in.
$(REAL_SCANS)/.complete:
	rm -rf $(REAL_SCANS).part && mkdir -p $(REAL_SCANS).part
	$(VENV)/bin/python -c 'import numpy, setuptools' 2>/dev/null || $(PIP) install --quiet numpy setuptools
	echo "pyradiomics==3.0.1 --hash=sha256:$(PYRADIOMICS_SHA256)" > $(REAL_SCANS).part/requirement.txt
	$(PIP) download --quiet --no-deps --no-binary :all: --no-build-isolation --require-hashes \
		-r $(REAL_SCANS).part/requirement.txt -d $(REAL_SCANS).part
	echo "$(PYRADIOMICS_SHA256)  $(REAL_SCANS).part/pyradiomics-3.0.1.tar.gz" | sha256sum -c --quiet
	tar xzf $(REAL_SCANS).part/pyradiomics-3.0.1.tar.gz -C $(REAL_SCANS).part \
		--strip-components=2 --wildcards 'pyradiomics-3.0.1/data/brain*'
	mkdir -p $(REAL_SCANS) && mv $(REAL_SCANS).part/brain* $(REAL_SCANS)/
	rm -rf $(REAL_SCANS).part
	touch $@

# dicom3tools (dciodvfy), dcmtk (dsrdump, dcmpschk) and PixelMed (DicomSRValidator, on a Java
# runtime) validate the DICOM results in the tests; Orthanc with its DICOMweb plugin is the
# PACS the DICOM node's tests and bench start on loopback ports (never as a system service).
install-system:
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl python3-venv mricron-data insighttoolkit5-examples chromium chromium-driver poppler-utils redis-server \
		dicom3tools dcmtk libpixelmed-java default-jre-headless orthanc orthanc-dicomweb

test: lint
	$(VENV)/bin/python -m pytest

lint:
	$(VENV)/bin/ruff check src tests bench

bench:
	$(VENV)/bin/python bench/detector_latency.py
	$(VENV)/bin/python bench/service_latency.py
	$(VENV)/bin/python bench/report_latency.py
	$(VENV)/bin/python bench/hostile_uploads.py
	$(VENV)/bin/python bench/study_latency.py
	$(VENV)/bin/python bench/real_lesions.py
	$(VENV)/bin/python bench/results_latency.py
	$(VENV)/bin/python bench/dicom_node.py

evaluate: real-scans
	$(VENV)/bin/python -m mriscribe.training.evaluate --n 800
	$(VENV)/bin/python -m mriscribe.training.real_scans --data $(REAL_SCANS)

# The container image (docs/CONTAINER.md): `make image` builds it, `make test-image` runs it and
# checks and times it. Neither is part of install, test or CI. The base is made from Debian
# packages by tools/image/base.sh (debootstrap minbase, then podman import) unless BASE names
# another, e.g. make image BASE=debian:bookworm-slim. DEBIAN_MIRROR and DEBIAN_SECURITY_MIRROR,
# when set, go to debootstrap (see base.sh). PIP_CERT, pip's own variable, names a CA bundle
# that pip in the build trusts (a network whose TLS goes through a proxy); it is passed as a
# build secret, never stored in the image.
PODMAN ?= podman
# Flags some hosts need (tools/image/podman-flags.sh prints them; none on a usual host): the
# OCI runtime before the subcommand, resource limits for build and run.
PODMAN_FLAGS ?= $(shell tools/image/podman-flags.sh global)
PODMAN_LIMITS ?= $(shell tools/image/podman-flags.sh limits)
BASE_IMAGE := mriscribe-base:bookworm
BASE ?= $(BASE_IMAGE)
IMAGE ?= mriscribe:latest
PIP_CERT ?=
BUILD_FLAGS ?=
comma := ,
# --format docker: the OCI image format has no field for HEALTHCHECK.
image:
	@if [ "$(BASE)" = "$(BASE_IMAGE)" ] && ! $(PODMAN) $(PODMAN_FLAGS) image exists $(BASE_IMAGE); then \
		PODMAN="$(PODMAN) $(PODMAN_FLAGS)" tools/image/base.sh $(BASE_IMAGE); fi
	$(PODMAN) $(PODMAN_FLAGS) build --format docker $(PODMAN_LIMITS) --build-arg BASE=$(BASE) \
		$(if $(PIP_CERT),--secret id=pip-cert$(comma)src=$(PIP_CERT)) $(BUILD_FLAGS) -t $(IMAGE) -f Containerfile .

# Runs the image (a free port), checks /health, /analyze-json and /analyze with real MRI, and
# measures time to healthy and /analyze-json p50 against .venv/bin/mriscribe serve in the same run.
test-image:
	$(VENV)/bin/python tools/image/check.py --image $(IMAGE) \
		--podman "$(PODMAN) $(PODMAN_FLAGS)" --run-flags "$(PODMAN_LIMITS)"
