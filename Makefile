# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv when missing and installs
# what it needs. Without an NVIDIA GPU (no nvidia-smi), torch 2.13.0 goes in first so pip takes the local CPU
# wheel instead of pulling several GB of CUDA packages.
PYTHON_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet
BASE := $(VENV)/.installed-base
DEV := $(VENV)/.installed-dev

.PHONY: demo test lint bench clean

$(PY):
	$(PYTHON_SYS) -m venv $(VENV)

$(BASE): pyproject.toml | $(PY)
	@if ! command -v nvidia-smi >/dev/null 2>&1; then $(PIP) torch==2.13.0; fi
	$(PIP) -e .
	@touch $@

$(DEV): pyproject.toml $(BASE)
	$(PIP) -e ".[dev,s2cloudless,stac,eval]"
	@touch $@

demo: $(BASE)
	$(VENV)/bin/xcloudfree demo --out demo_output

test: $(DEV)
	$(PY) -m pytest -q

lint: $(DEV)
	$(VENV)/bin/ruff check xcloudfree tests bench
	$(VENV)/bin/ruff format --check xcloudfree tests bench

clean:
	rm -rf $(VENV) demo_output .pytest_cache .ruff_cache
