# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-all bench install clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned to the CPU build, so that nothing below can pull a CUDA build
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[test,bench,onnx]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m hf_longctx compare

# The everyday tier; test-all adds the slow tier (launchers, example scripts, every head compiled): what CI runs.
test: $(STAMP)
	$(PY) tools/sync_common.py --check
	$(PY) -m pytest -q -p no:cacheprovider tests

test-all: $(STAMP)
	$(PY) tools/sync_common.py --check
	RUN_SLOW=1 $(PY) -m pytest -q -p no:cacheprovider tests

bench: $(STAMP)
	$(PY) -m hf_longctx bench longformer --out benchmarks/results/longformer_cpu

clean:
	rm -rf $(VENV) build src/*.egg-info
