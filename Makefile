# The two set-up commands of the README (`make reproduce`, `make test`) and `make lab`.
# Each creates .venv if missing and (re)installs the package only when pyproject.toml changed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
OUT    ?= outputs
WORKERS ?= 1

.PHONY: test test-browser test-binder reproduce lab clean-venv

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "xdnb needs Python >= 3.10, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

$(VENV)/.installed-browser: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[browser]'
	@touch $@

$(VENV)/.installed-notebooks: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[notebooks]'
	@touch $@

# Tests and notebooks run on TEST_WORKERS processes (pytest-xdist; "auto": one per core, at most
# 4), each on one torch thread; a notebook's cells stay together on one worker (--dist loadfile).
TEST_WORKERS ?= auto
test: $(VENV)/.installed-test
	XDNB_QUIET=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --maxprocesses 4 tests
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile --nbval --nbval-current-env -p no:cacheprovider notebooks

# The tutorials in JupyterLab in headless Chromium (tests_browser/; needs /usr/bin/chromium, e.g.
# `apt-get install -y chromium`, or CHROMIUM=path); screenshots go to artifacts/browser/.
CHROMIUM ?= /usr/bin/chromium
test-browser: $(VENV)/.installed-browser
	XDNB_QUIET=1 XDNB_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -p no:cacheprovider tests_browser

# Build the Binder environment the way repo2docker does and run notebook 01 in it: a fresh venv
# (build/binder-venv) from binder/requirements.txt, binder/postBuild, then nbconvert --execute.
# The CPU-only torch index of binder/requirements.txt is not reachable from every machine (not from
# this project's CI): pip then takes torch from the other indexes it reaches, so this checks the
# requirements, postBuild and the notebook, not the size of Binder's image.
BINDER_VENV := build/binder-venv
test-binder:
	rm -rf $(BINDER_VENV) build/binder-home
	$(PYTHON) -m venv $(BINDER_VENV)
	PIP_RETRIES=1 $(BINDER_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r binder/requirements.txt
	mkdir -p build/binder-home
	PATH=$(CURDIR)/$(BINDER_VENV)/bin:$$PATH XDNB_CACHE=$(CURDIR)/build/binder-home/cache bash binder/postBuild
	cd notebooks && PATH=$(CURDIR)/$(BINDER_VENV)/bin:$$PATH XDNB_CACHE=$(CURDIR)/build/binder-home/cache \
	  JUPYTER_DATA_DIR=$(CURDIR)/build/binder-home/jupyter JUPYTER_CONFIG_DIR=$(CURDIR)/build/binder-home/jupyter-config \
	  PYTHONPATH= XDNB_QUIET=1 OMP_NUM_THREADS=1 \
	  jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=600 \
	  --output-dir $(CURDIR)/build/binder-home 01_error_accumulation.ipynb
	@echo "Binder environment built and notebook 01 executed: build/binder-home/01_error_accumulation.ipynb"

# Regenerate the stored notebook outputs (one thread, no widget state); NOTEBOOKS=path... for some.
.PHONY: notebooks
notebooks: $(VENV)/.installed-test
	$(BIN)/python scripts/regenerate_notebooks.py $(NOTEBOOKS)

reproduce: $(VENV)/.installed-notebooks
	$(BIN)/xdnb reproduce digits --out $(OUT) --workers $(WORKERS)

lab: $(VENV)/.installed-notebooks
	$(BIN)/jupyter lab notebooks

clean-venv:
	rm -rf $(VENV)
