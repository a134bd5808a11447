# Every target creates .venv if it is missing and reinstalls only when pyproject.toml changed.
PY      ?= python3
VENV    := .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
TORCH_PIN := torch==2.13.0

.PHONY: setup demo test test-slow lint format bench bench-quick xla-check clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch would pull the CUDA build.
	$(PYTHON) -m pip install -q $(TORCH_PIN)
	$(PYTHON) -m pip install -q -e ".[dev]" $(TORCH_PIN)
	touch $(STAMP)

demo: $(STAMP)
	$(PYTHON) -m training.demo

test: $(STAMP)
	$(PYTHON) -m pytest -q

test-slow: $(STAMP)
	$(PYTHON) -m pytest -q -m slow

lint: $(STAMP)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format: $(STAMP)
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
