# Two entry points on a fresh machine: `make app` and `make test`. Both set up .venv first.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: app test setup chromium bench

setup: $(STAMP)

# torch is pinned first, to the CPU build: PyPI's Linux wheel pulls several GB of CUDA libraries.
# A local 2.13.0+cpu wheel (pip's find-links) is taken as is; otherwise PyTorch's CPU index serves it.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0+cpu 2>/dev/null || \
		$(BIN)/pip install -q --extra-index-url https://download.pytorch.org/whl/cpu torch==2.13.0+cpu
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

app: $(STAMP)
	$(BIN)/streamlit run app.py

chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q chromium; }

test: $(STAMP) chromium
	$(BIN)/pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/brainseg bench ../shared/data/brats/Brats18_CBICA_AME_1 --json bench.json
