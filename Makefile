# rsna-lumbar: every target works on a fresh clone; the first one needing Python builds .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
WORK   ?= work
export HF_HUB_OFFLINE := 1
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: help install test test-all demo bench lint clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.14.1 torchvision==0.29.1
	$(PIP) install --quiet -r requirements.txt
	$(PIP) install --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed  ## create .venv with the pinned stack and the kit (editable)

test: $(VENV)/.installed  ## the default test suite (fast; what CI runs)
	$(PY) -m pytest -q

test-all: $(VENV)/.installed  ## every test, slow ones included
	$(PY) -m pytest -q -m ''

demo: $(VENV)/.installed  ## the main job on synthetic data, end to end
	$(VENV)/bin/rsna-lumbar demo --work $(WORK)/demo

bench: $(VENV)/.installed  ## benchmarks; results in bench/results/*.json and quoted in the README
	$(PY) -m bench

clean:  ## remove work outputs (keeps .venv)
	rm -rf $(WORK) .pytest_cache

# --- Kaggle: offline wheelhouse, weights dataset, inference kernel (kernels/README.md) ---------
# Your Kaggle user: KAGGLE_USER (default: KAGGLE_USERNAME, else the username in kaggle.json).
# Slugs: WEIGHTS_DATASET / KERNEL_SLUG (default: the ids in dataset-metadata.json and
# kernels/kernel-metadata.json). Credentials stay with the kaggle CLI's usual configuration.
KAGGLE_USER     ?=
WEIGHTS_DATASET ?=
KERNEL_SLUG     ?=
WHEELHOUSE      ?= wheelhouse
KAGGLE_BUILD    ?= build
# Packages the Kaggle GPU image lacks (pins from requirements.txt), fetched as cp310/cp311 wheels.
KAGGLE_WHEELS   ?= pydicom pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg
KAGGLE_PYTHON   ?= 3.10 3.11
PUBLISH = $(PY) -m rsna_lumbar.kaggle_publish
KAGGLE_ARGS = $(if $(KAGGLE_USER),--owner $(KAGGLE_USER)) $(if $(WEIGHTS_DATASET),--dataset $(WEIGHTS_DATASET))

.PHONY: wheels kit-wheel push-weights push-kernel

wheels: $(VENV)/.installed  ## offline wheelhouse/: the kit's wheel + the KAGGLE_WHEELS the Kaggle image lacks
	$(PUBLISH) wheels --out $(WHEELHOUSE) --python $(KAGGLE_PYTHON) --download $(KAGGLE_WHEELS)

kit-wheel: $(VENV)/.installed  ## rebuild only the kit's wheel in wheelhouse/ (offline)
	$(PUBLISH) wheels --out $(WHEELHOUSE)

push-weights: kit-wheel  ## publish weights/ + wheelhouse/ as your Kaggle dataset (version, or create)
	$(PUBLISH) push-weights $(KAGGLE_ARGS) --wheelhouse $(WHEELHOUSE) --out $(KAGGLE_BUILD)/kaggle-dataset

push-kernel: $(VENV)/.installed  ## push the inference kernel (kernels/) to Kaggle: GPU on, internet off
	$(PUBLISH) push-kernel $(KAGGLE_ARGS) $(if $(KERNEL_SLUG),--kernel $(KERNEL_SLUG)) --out $(KAGGLE_BUILD)/kaggle-kernel
