# Every target creates .venv if it is missing and reinstalls when pyproject.toml or the lock changed.
PY      ?= python3
VENV    := .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
TORCH_PIN := torch==2.13.0
# Exact versions of every direct and transitive dependency of .venv (dev tools included), made by `make lock`.
LOCK    := requirements.lock

.PHONY: setup lock demo test test-slow test-latest lint format bench bench-quick bench-mqar bench-mqar-cpu bench-mqar-quick xla-check clean

setup: $(STAMP)

# The lock holds torch's CPU wheel (2.13.0+cpu, on this machine's disk), so nothing pulls the CUDA build. The
# package itself goes in without dependencies, and `pip check` fails if pyproject.toml asks for something the
# lock lacks (then run `make lock`).
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q -r $(LOCK)
	$(PYTHON) -m pip install -q --no-deps -e .
	$(PYTHON) -m pip check || { echo "setup: $(LOCK) does not satisfy pyproject.toml; run 'make lock'"; exit 1; }
	touch $(STAMP)

# Regenerate the lock after changing a dependency in pyproject.toml, or to move to newer releases on purpose
# (after `make test-latest` passes with them). pip-tools runs in its own throw-away venv.
LOCK_VENV := .venv-lock
PIP_TOOLS := pip-tools==7.6.2

lock:
	test -x $(LOCK_VENV)/bin/python || $(PY) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q $(PIP_TOOLS)
	echo "$(TORCH_PIN)" > $(LOCK_VENV)/torch-pin.txt
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile -q --upgrade --extra dev --strip-extras \
		--constraint $(LOCK_VENV)/torch-pin.txt --no-emit-index-url --no-emit-find-links --output-file $(LOCK) \
		pyproject.toml

demo: $(STAMP)
	$(PYTHON) -m training.demo

# pytest exits 5 when it collected no tests: that is a failure too (make fails on any non-zero exit).
test: $(STAMP)
	@$(PYTHON) -m pytest -q; rc=$$?; [ $$rc -ne 5 ] || echo "make test: pytest collected no tests"; exit $$rc

test-slow: $(STAMP)
	$(PYTHON) -m pytest -q -m slow

# The drift check: a separate venv with the newest releases that pyproject.toml's ranges allow (torch held at
# the pinned CPU wheel), running the tests that face transformers, datasets and accelerate. It names every
# package whose version differs from the lock, before the tests and again if they fail.
LATEST_VENV   := .venv-latest
LATEST_PYTHON := $(LATEST_VENV)/bin/python
# The model, layer, tokenizer, cache and generate tests (tests/bmojo_neuron without its ops/, which face torch only),
# generation/export/serving, and the Trainer CLI and checkpoints.
HF_TESTS      := $(wildcard tests/bmojo_neuron/test_*.py) tests/bmojo_neuron/layers tests/inference \
                 tests/training/test_train_cli.py tests/training/test_train_checkpoints.py

test-latest:
	test -x $(LATEST_PYTHON) || $(PY) -m venv $(LATEST_VENV)
	$(LATEST_PYTHON) -m pip install -q $(TORCH_PIN)
	$(LATEST_PYTHON) -m pip install -q --upgrade --upgrade-strategy eager -e ".[dev]" $(TORCH_PIN)
	@$(LATEST_PYTHON) tools/lock_drift.py $(LOCK)
	@$(LATEST_PYTHON) -m pytest -q -p no:cacheprovider $(HF_TESTS); rc=$$?; \
	if [ $$rc -ne 0 ]; then \
		echo "test-latest: failed (pytest exit $$rc) with the newest releases; what differs from the lock:"; \
		$(LATEST_PYTHON) tools/lock_drift.py $(LOCK) --title "differs from the lock (suspects)"; fi; exit $$rc

lint: $(STAMP)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m nki_kernels.lint nki_kernels/kernels

format: $(STAMP)
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

clean:
	rm -rf $(VENV) $(LATEST_VENV) $(LOCK_VENV) .pytest_cache .ruff_cache

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

$(XLA_STAMP): pyproject.toml $(LOCK)
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	if [ ! -d $(XLA_VENV)/lib ] && [ "$$free" -lt $(XLA_NEED_GB) ]; then \
		echo "xla-check: building $(XLA_VENV) needs ~$(XLA_NEED_GB) GB free on this disk, $$free GB is (df -h .)"; exit 1; fi
	test -x $(XLA_PYTHON) || $(PY) -m venv $(XLA_VENV)
	$(XLA_PYTHON) -m pip install -q --no-cache-dir $(XLA_PINS)
	# Everything else at the locked versions, as in .venv (the lock's torch is the 2.13 CPU wheel: left out).
	grep -v '^torch==' $(LOCK) > $(XLA_VENV)/lock-without-torch.txt
	$(XLA_PYTHON) -m pip install -q --no-cache-dir -r $(XLA_VENV)/lock-without-torch.txt $(XLA_PINS)
	$(XLA_PYTHON) -m pip install -q --no-cache-dir --no-deps -e .
	$(XLA_PYTHON) -m pip check
	touch $(XLA_STAMP)

xla-check: $(XLA_STAMP)
	PJRT_DEVICE=CPU $(XLA_PYTHON) -m tools.xla_check

# Evaluation suite (issue 9): benchmarks one after another, then the figures and the results page
# docs/results.md (benchmarks/report.py). bench: ~45 min on 2 CPU cores; bench-quick: ~5 min, a pipeline check.
bench: $(STAMP)
	$(PYTHON) -m benchmarks.suite

bench-quick: $(STAMP)
	$(PYTHON) -m benchmarks.suite --quick

# The MQAR grid of issue 6 on its own (not part of `bench`): the full grid takes hours on a CPU (it is meant
# for an accelerator); bench-mqar-cpu runs the CPU-sized part as two one-thread processes with about equal
# work (~3.5 hours on 2 cores), merges them into mqar_cpu, then rewrites the results page.
MQAR_CPU = $(PYTHON) -m benchmarks.mqar --grid cpu --threads 1 --no-tqdm
bench-mqar: $(STAMP)
	$(PYTHON) -m benchmarks.mqar

bench-mqar-cpu: $(STAMP)
	$(MQAR_CPU) --layer-types bmojo,attention,sliding_attention,ssm --name mqar_cpu_part1 & part1=$$!; \
	$(MQAR_CPU) --layer-types SB,hybrid,bmojo_f --name mqar_cpu_part2; part2=$$?; \
	wait $$part1 && test $$part2 -eq 0
	$(PYTHON) -m benchmarks.mqar --merge benchmarks/results/mqar_cpu_part1.json benchmarks/results/mqar_cpu_part2.json --name mqar_cpu
	$(PYTHON) -m benchmarks.report

bench-mqar-quick: $(STAMP)
	$(PYTHON) -m benchmarks.mqar --quick
