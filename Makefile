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
