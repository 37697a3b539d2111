# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv when missing and installs
# what it needs. Without an NVIDIA GPU (no nvidia-smi), torch 2.13.0 goes in first so pip takes the local CPU
# wheel instead of pulling several GB of CUDA packages.
PYTHON_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet
BASE := $(VENV)/.installed-base
DEV := $(VENV)/.installed-dev

.PHONY: demo test lint bench clean docs chromium

$(PY):
	$(PYTHON_SYS) -m venv $(VENV)

$(BASE): pyproject.toml | $(PY)
	@if ! command -v nvidia-smi >/dev/null 2>&1; then $(PIP) torch==2.13.0; fi
	$(PIP) -e .
	@touch $@

$(DEV): pyproject.toml $(BASE)
	$(PIP) -e ".[dev,s2cloudless,stac,eval,docs]"
	@touch $@

demo: $(BASE)
	$(VENV)/bin/xcloudfree demo --out demo_output

test: $(DEV) chromium
	$(PY) -m pytest -q

# The docs tests open the site in Debian's Chromium (Playwright drives it; its own browser download needs a network
# this project does not have). CI runs as root with Debian's registry reachable.
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# The site, warnings as errors (broken links, missing API objects). Examples whose figure is missing or older than
# the script run first, into examples_output/ (docs/_hooks/xcloudfree_docs.py).
docs: $(DEV)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site
	@echo "open site/index.html"

lint: $(DEV)
	$(VENV)/bin/ruff check xcloudfree tests bench examples docs/_hooks
	$(VENV)/bin/ruff format --check xcloudfree tests bench examples docs/_hooks

clean:
	rm -rf $(VENV) demo_output .pytest_cache .ruff_cache site examples_output
