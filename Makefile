# rsna-lumbar: every target works on a fresh clone; the first one needing Python builds .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
WORK   ?= work
export HF_HUB_OFFLINE := 1
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: help install test test-all test-recipes demo bench lint clean cv200

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

test-recipes: $(VENV)/.installed  ## the gpu recipe end to end on the CPU at a tiny size (slow: minutes)
	$(PY) -m pytest -q -m slow tests/test_recipes.py

DEMO_ARGS ?=
demo: $(VENV)/.installed  ## the main job on synthetic data: run --recipe demo (DEMO_ARGS="threads=1" on a busy CPU)
	$(VENV)/bin/rsna-lumbar run --recipe demo --work $(WORK)/demo --weights weights $(DEMO_ARGS)

bench: $(VENV)/.installed  ## benchmarks; results in bench/results/*.json and quoted in the README
	$(PY) -m bench

clean:  ## remove work outputs (keeps .venv)
	rm -rf $(WORK) .pytest_cache

# --- Kaggle: offline wheelhouse, weights dataset, inference kernel (kernels/README.md) ---------
# Your Kaggle user: KAGGLE_USER (default: KAGGLE_USERNAME, else the username in kaggle.json).
# Slugs: WEIGHTS_DATASET / KERNEL_SLUG (default: the ids in dataset-metadata.json and
# kernels/kernel-metadata.json). Credentials stay with the kaggle CLI's usual configuration.
# push-weights refuses model folders not trained on competition data (provenance.json) unless
# ALLOW_SYNTHETIC=1; push-kernel waits up to DATASET_WAIT s for the dataset version (polling every
# DATASET_POLL s); submit submits KERNEL_VERSION (default: the version push-kernel recorded).
KAGGLE_USER     ?=
WEIGHTS_DATASET ?=
KERNEL_SLUG     ?=
WHEELHOUSE      ?= wheelhouse
KAGGLE_BUILD    ?= build
WEIGHTS_DIR     ?= weights
ALLOW_SYNTHETIC ?=
DATASET_WAIT    ?= 900
DATASET_POLL    ?= 15
KERNEL_VERSION  ?=
SUBMIT_MESSAGE  ?=
# Packages the Kaggle GPU image lacks, fetched as manylinux (glibc <= 2.28) wheels for every
# Python the image may run (3.12 now; 3.13 if it follows Colab; 3.11 before); unpinned names
# take their pin from requirements.txt. pydicom (pure Python, required): the kit needs 3.x;
# pylibjpeg* (compiled, optional: the kernel installs them best effort): JPEG-LS/JPEG 2000 DICOM
# decoders. libjpeg 2.5.0 has only manylinux_2_31 wheels, hence 2.4.0.
KAGGLE_WHEELS   ?= pydicom pylibjpeg pylibjpeg-libjpeg==2.4.0 pylibjpeg-openjpeg
KAGGLE_PYTHON   ?= 3.11 3.12 3.13
PUBLISH = $(PY) -m rsna_lumbar.publish
KAGGLE_ARGS = $(if $(KAGGLE_USER),--owner $(KAGGLE_USER)) $(if $(WEIGHTS_DATASET),--dataset $(WEIGHTS_DATASET))
KERNEL_ARGS = $(KAGGLE_ARGS) $(if $(KERNEL_SLUG),--kernel $(KERNEL_SLUG)) --out $(KAGGLE_BUILD)/kaggle-kernel
KERNEL_VERSION_ARG = $(if $(KERNEL_VERSION),--kernel-version $(KERNEL_VERSION))

.PHONY: wheels kit-wheel push-weights push-kernel submit kernel-status

wheels: $(VENV)/.installed  ## offline wheelhouse/: the kit's wheel + the KAGGLE_WHEELS the Kaggle image lacks
	$(PUBLISH) wheels --out $(WHEELHOUSE) --python $(KAGGLE_PYTHON) --download $(KAGGLE_WHEELS)

kit-wheel: $(VENV)/.installed  ## rebuild only the kit's wheel in wheelhouse/ (offline)
	$(PUBLISH) wheels --out $(WHEELHOUSE)

push-weights: kit-wheel  ## publish weights/ + wheelhouse/ as your Kaggle dataset (competition-trained models only; ALLOW_SYNTHETIC=1)
	$(PUBLISH) push-weights $(KAGGLE_ARGS) --weights $(WEIGHTS_DIR) --wheelhouse $(WHEELHOUSE) --out $(KAGGLE_BUILD)/kaggle-dataset $(if $(filter 1 yes true,$(ALLOW_SYNTHETIC)),--allow-synthetic)

push-kernel: $(VENV)/.installed  ## once the dataset version is ready, push the inference kernel: T4 GPU, internet off
	$(PUBLISH) push-kernel $(KERNEL_ARGS) --wait-timeout $(DATASET_WAIT) --wait-interval $(DATASET_POLL)

submit: $(VENV)/.installed  ## submit the pushed kernel version to the competition (KERNEL_VERSION=N: another)
	$(PUBLISH) submit $(KERNEL_ARGS) $(KERNEL_VERSION_ARG) $(if $(SUBMIT_MESSAGE),--message "$(SUBMIT_MESSAGE)")

kernel-status: $(VENV)/.installed  ## state of the kernel's latest run (KERNEL_VERSION=N: that version's)
	$(PUBLISH) kernel-status $(KERNEL_ARGS) $(KERNEL_VERSION_ARG)

# --- TotalSpineSeg in its own environment (it pins timm<1.0.23; the kit's .venv keeps its timm) --
# TSS_VENV: where it lives (CI keeps it in a cache folder). The adapter finds its executable via
# RSNA_TSS_BIN, else ./.tss-venv/bin/totalspineseg. Weights: TOTALSPINESEG_DATA (docs/totalspineseg.md).
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

# --- the kernel on Kaggle's own stack (kernels/kaggle-image-requirements.txt, Python 3.12) ---------
# A venv of the image's package versions (7.6 GB with torch 2.10's CUDA libraries; build time in
# docs/results/ci.json), kept in a cache folder keyed by the pins so a machine builds it once.
KAGGLE_IMAGE_PYTHON ?= $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do $$p -c '' 2>/dev/null && { echo $$p; break; }; done)
KAGGLE_IMAGE_KEY    := $(shell cat kernels/kaggle-image-requirements.txt 2>/dev/null | sha256sum | cut -c1-12)
KAGGLE_IMAGE_VENV   ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/rsna-lumbar/kaggle-image-venv-$(KAGGLE_IMAGE_KEY)

.PHONY: kaggle-image-env test-kaggle-image

$(KAGGLE_IMAGE_VENV)/.installed: kernels/kaggle-image-requirements.txt
	@test -n "$(KAGGLE_IMAGE_PYTHON)" || { echo "no Python 3.12 found: set KAGGLE_IMAGE_PYTHON=/path/to/python3.12"; exit 2; }
	test -x $(KAGGLE_IMAGE_VENV)/bin/python || $(KAGGLE_IMAGE_PYTHON) -m venv $(KAGGLE_IMAGE_VENV)
	$(KAGGLE_IMAGE_VENV)/bin/pip install --quiet pip==24.1.2
	$(KAGGLE_IMAGE_VENV)/bin/pip install --quiet -r kernels/kaggle-image-requirements.txt
	touch $@

kaggle-image-env: $(KAGGLE_IMAGE_VENV)/.installed  ## a venv of Kaggle's image versions (Python 3.12, torch 2.10, ...)

test-kaggle-image: $(VENV)/.installed $(KAGGLE_IMAGE_VENV)/.installed  ## the kernel offline on Kaggle's Python and packages
	RSNA_KAGGLE_IMAGE_PYTHON=$(KAGGLE_IMAGE_VENV)/bin/python $(PY) -m pytest -q -m kaggle_image tests/test_kaggle_image.py

# --- learned localiser (rsna_lumbar/localize/keypoints) ------------------------------------------
LOC_DATA ?= $(WORK)/synth-localizer
LOC_MODEL ?= weights/localizer
# The localiser recipe of docs/localiser.md (5 folds, three tasks, two models at a time of 1
# thread each, about an hour on 2 cores; --jobs 1 trains the same weights, slower) into
# weights/localizer, which predict and localize use before the packaged localiser.
LOC_ARGS ?= --n-folds 5 --steps sag_t2=6000,sag_t1=2000,axial=1500 --batch 8 --threads 1 --jobs 2

.PHONY: localize-weights localize-check localiser-package

$(LOC_DATA)/truth/manifest.json: $(VENV)/.installed
	$(PY) -c "from rsna_lumbar.synth.generate import generate; generate('$(LOC_DATA)', 120, seed=17, test_studies=4, scale=2.0)"

$(LOC_MODEL)/config.json: $(LOC_DATA)/truth/manifest.json
	$(VENV)/bin/rsna-lumbar localize --data $(LOC_DATA) --split train --work $(WORK)/localizer \
	  --out $(WORK)/localizer/oof.csv --model $(LOC_MODEL) $(LOC_ARGS)

localize-weights: $(LOC_MODEL)/config.json  ## train the learned localiser OOF on 120 synthetic studies → LOC_MODEL (2 CPU cores, ~1 h)

# The packaged localiser (rsna_lumbar/localize/pretrained, docs/localiser.md#the-packaged-localiser):
# the recipe above on the same 120 synthetic studies and the 34 real exams of ../shared/data
# (required), then fold 0's models in float16 and the model card. On the machine kind that made
# them the files come out byte for byte; `git status` afterwards shows whether they changed.
PKG_WORK ?= $(WORK)/localiser-package
cv200: $(VENV)/.installed  ## the 200-study synthetic CV of the cpu recipe's severity models (5 folds, 40 epochs, ~45 min on 2 cores) → docs/results/cv200.json
	$(VENV)/bin/rsna-lumbar run --recipe cv200 --work $(WORK)/cv200 --weights $(WORK)/cv200/weights $(CV_ARGS)
	$(PY) -m bench.cv_result $(WORK)/cv200/summary.json docs/results/cv200.json "make cv200 (rsna-lumbar run --recipe cv200 --work $(WORK)/cv200 --weights $(WORK)/cv200/weights $(CV_ARGS))"

localiser-package: $(VENV)/.installed  ## retrain and export the packaged localiser (synthetic + 34 real exams; ~1.3 h on 2 cores)
	test -f $(PKG_WORK)/data/truth/manifest.json || $(PY) -c "from rsna_lumbar.synth.generate import generate; generate('$(PKG_WORK)/data', 120, seed=17, test_studies=4, scale=2.0)"
	$(VENV)/bin/rsna-lumbar localize --data $(PKG_WORK)/data --split train --work $(PKG_WORK)/work \
	  --out $(PKG_WORK)/oof.csv --model $(PKG_WORK)/model --real on $(LOC_ARGS)
	$(PY) -m rsna_lumbar.localize.packaged --model $(PKG_WORK)/model --data $(PKG_WORK)/data \
	  --oof $(PKG_WORK)/oof.csv --work $(PKG_WORK)/work
	git status --short rsna_lumbar/localize/pretrained

localize-check: $(VENV)/.installed  ## learned localiser: CLI on synthetic data + the packaged localiser (or RSNA_LOCALIZER) on the 34 real exams
	$(PY) -m pytest -q -m slow -s tests/test_localize_real.py
