# Every target creates .venv if it is missing and reinstalls only when pyproject.toml changed.
PY      ?= python3
VENV    := .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
TORCH_PIN := torch==2.13.0

.PHONY: setup demo test test-slow lint format bench bench-quick bench-mqar bench-mqar-cpu bench-mqar-quick xla-check clean

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

# pytest exits 5 when it collected no tests: that is a failure too (make fails on any non-zero exit).
test: $(STAMP)
	@$(PYTHON) -m pytest -q; rc=$$?; [ $$rc -ne 5 ] || echo "make test: pytest collected no tests"; exit $$rc

test-slow: $(STAMP)
	$(PYTHON) -m pytest -q -m slow

lint: $(STAMP)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m nki_kernels.lint nki_kernels/kernels

format: $(STAMP)
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# The gate for the Trainium path (issue 8): PyTorch/XLA 2.9 on the CPU (PJRT_DEVICE=CPU) in its own venv,
# since torch-xla 2.9 (the last PyTorch/XLA release Neuron supports) needs torch 2.9. PyPI has only the CUDA
# build of torch 2.9 for Linux x86_64, and it does not import without its nvidia-* libraries (libtorch_cpu.so
# links libcudart and libcupti), so they come too: about 3 minutes and 7 GB the first time, then reused.
XLA_VENV   := .venv-xla
XLA_PYTHON := $(XLA_VENV)/bin/python
XLA_STAMP  := $(XLA_VENV)/.installed
XLA_PINS   := torch==2.9.1 torch-xla==2.9.0

# --no-cache-dir: pip's cache would keep another ~3.5 GB of wheels. The disk check fails early, with the
# reason, instead of pip's "No space left on device" halfway through (a CI run hit exactly that).
XLA_NEED_GB := 9

$(XLA_STAMP): pyproject.toml
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	if [ ! -d $(XLA_VENV)/lib ] && [ "$$free" -lt $(XLA_NEED_GB) ]; then \
		echo "xla-check: building $(XLA_VENV) needs ~$(XLA_NEED_GB) GB free on this disk, $$free GB is (df -h .)"; exit 1; fi
	test -x $(XLA_PYTHON) || $(PY) -m venv $(XLA_VENV)
	$(XLA_PYTHON) -m pip install -q --no-cache-dir $(XLA_PINS)
	# The package and its dependencies, torch held at 2.9 (an unpinned resolve could upgrade it).
	$(XLA_PYTHON) -m pip install -q --no-cache-dir -e . $(XLA_PINS)
	touch $(XLA_STAMP)

xla-check: $(XLA_STAMP)
	PJRT_DEVICE=CPU $(XLA_PYTHON) -m training.xla_check

# Evaluation suite (issue 9): benchmarks one after another, then the figures and the README's results
# section (benchmarks/report.py). bench: ~45 min on 2 CPU cores; bench-quick: ~5 min, a pipeline check.
bench: $(STAMP)
	$(PYTHON) -m benchmarks.suite

bench-quick: $(STAMP)
	$(PYTHON) -m benchmarks.suite --quick

# The MQAR grid of issue 6 on its own (not part of `bench`): the full grid takes hours on a CPU (it is meant
# for an accelerator); bench-mqar-cpu runs the CPU-sized part (~75 min on 2 cores), then the README report.
bench-mqar: $(STAMP)
	$(PYTHON) -m benchmarks.mqar

bench-mqar-cpu: $(STAMP)
	$(PYTHON) -m benchmarks.mqar --grid cpu && $(PYTHON) -m benchmarks.report

bench-mqar-quick: $(STAMP)
	$(PYTHON) -m benchmarks.mqar --quick
