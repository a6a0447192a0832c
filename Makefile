# Two entry points on a fresh machine: `make app` and `make test`. Both set up .venv first.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: app test setup chromium bench

setup: $(STAMP)

# torch is pinned first so pip takes the local CPU build and never a multi-GB CUDA wheel
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

app: $(STAMP)
	$(BIN)/streamlit run app.py

chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q chromium; }

test: $(STAMP) chromium
	$(BIN)/pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/brainseg bench ../shared/data/brats/Brats18_CBICA_AME_1 --json benchmarks/results.json
