# The two set-up commands of the README (`make reproduce`, `make test`) and `make lab`.
# Each creates .venv if missing and (re)installs the package only when pyproject.toml changed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
OUT    ?= outputs
WORKERS ?= 1

.PHONY: test test-browser reproduce lab clean-venv

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

test: $(VENV)/.installed-test
	XDNB_QUIET=1 $(BIN)/python -m pytest tests
	$(BIN)/python -m pytest --nbval --nbval-current-env -p no:cacheprovider notebooks

# The tutorials in JupyterLab in headless Chromium (tests_browser/; needs /usr/bin/chromium, e.g.
# `apt-get install -y chromium`, or CHROMIUM=path); screenshots go to artifacts/browser/.
CHROMIUM ?= /usr/bin/chromium
test-browser: $(VENV)/.installed-browser
	XDNB_QUIET=1 XDNB_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -p no:cacheprovider tests_browser

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
