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

DEMO_ARGS ?=
demo: $(VENV)/.installed  ## the main job on synthetic data, end to end (DEMO_ARGS="--threads 1" on a busy CPU)
	$(VENV)/bin/rsna-lumbar demo --work $(WORK)/demo --weights weights $(DEMO_ARGS)

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
# Packages the Kaggle GPU image lacks, fetched as cp310/cp311 manylinux (glibc <= 2.28) wheels;
# unpinned names take their pin from requirements.txt. pydicom: the kit needs 3.x; pylibjpeg*:
# JPEG-LS/JPEG 2000 DICOM decoders. libjpeg 2.5.0 has only manylinux_2_31 wheels, hence 2.4.0.
KAGGLE_WHEELS   ?= pydicom pylibjpeg pylibjpeg-libjpeg==2.4.0 pylibjpeg-openjpeg
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

# --- TotalSpineSeg in its own environment (it pins timm<1.0.23; the kit's .venv keeps its timm) --
# TSS_VENV: where it lives (CI keeps it in a cache folder). The adapter finds its executable via
# RSNA_TSS_BIN, else ./.tss-venv/bin/totalspineseg. Weights: TOTALSPINESEG_DATA (README).
TSS_VENV  ?= .tss-venv
TSS_TORCH ?= torch==2.14.1 torchvision==0.29.1
TSS_KAGGLE_PYTHON ?= 3.11

.PHONY: tss-env test-live tss-wheels

$(TSS_VENV)/.installed: requirements-tss.txt
	test -x $(TSS_VENV)/bin/python || $(PYTHON) -m venv $(TSS_VENV)
	$(TSS_VENV)/bin/pip install --quiet --upgrade pip
	$(TSS_VENV)/bin/pip install --quiet $(TSS_TORCH)
	$(TSS_VENV)/bin/pip install --quiet -r requirements-tss.txt
	$(TSS_VENV)/bin/python -c "import totalspineseg.inference, nnunetv2, auglab"
	touch $@

tss-env: $(TSS_VENV)/.installed  ## TotalSpineSeg + nnU-Net in their own venv (.tss-venv, ~6.4 GB)

test-live: $(VENV)/.installed $(TSS_VENV)/.installed  ## live TotalSpineSeg test: real command, hand-set weights (~3-5 min)
	RSNA_TSS_BIN=$(abspath $(TSS_VENV))/bin/totalspineseg $(PY) -m pytest -q -m live -s tests/test_tss_live.py

tss-wheels: $(TSS_VENV)/.installed  ## Kaggle: offline wheels of the TotalSpineSeg env in $(WHEELHOUSE)/tss (after `make wheels`)
	$(PY) tools/tss_wheelhouse.py --venv $(TSS_VENV) --out $(WHEELHOUSE)/tss --python $(TSS_KAGGLE_PYTHON)

# --- learned localiser (rsna_lumbar/localize/keypoints) ------------------------------------------
LOC_DATA ?= $(WORK)/synth-localizer
LOC_MODEL ?= weights/localizer
# The measured recipe of the README (5 folds, three tasks, two models at a time of 1 thread
# each: 61 min on 2 AVX-512 cores; --jobs 1 trains the same weights, slower); `make demo` trains a
# smaller one into weights/localizer too — the last one trained is what predict and
# localize-check use.
LOC_ARGS ?= --n-folds 5 --steps sag_t2=6000,sag_t1=2000,axial=1500 --batch 8 --threads 1 --jobs 2

.PHONY: localize-weights localize-check

$(LOC_DATA)/truth/manifest.json: $(VENV)/.installed
	$(PY) -c "from rsna_lumbar.synth.generate import generate; generate('$(LOC_DATA)', 120, seed=17, test_studies=4, scale=2.0)"

$(LOC_MODEL)/config.json: $(LOC_DATA)/truth/manifest.json
	$(VENV)/bin/rsna-lumbar localize --data $(LOC_DATA) --split train --work $(WORK)/localizer \
	  --out $(WORK)/localizer/oof.csv --model $(LOC_MODEL) $(LOC_ARGS)

localize-weights: $(LOC_MODEL)/config.json  ## train the learned localiser OOF on 120 synthetic studies → LOC_MODEL (2 CPU cores, ~1 h)

localize-check: $(LOC_MODEL)/config.json  ## learned localiser: CLI on synthetic data + sim-to-real on the 5 real exams
	RSNA_LOCALIZER=$(abspath $(LOC_MODEL)) $(PY) -m pytest -q -m slow -s tests/test_localize_real.py
