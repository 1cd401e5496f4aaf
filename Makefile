# The two commands of the README:  make demo  (the main job)  and  make test  (the tests).
# Both set up everything on a fresh machine: a virtual environment in .venv, the requirements, and the
# compiled extension (pip install --no-build-isolation -e ., which needs torch installed first).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.requirements-installed
# The torch to install into a fresh venv: 2.13.0 is the CPU build on this platform's local disk (an unpinned
# torch would pull a multi-GB CUDA build). Override for a GPU box: make test TORCH=torch==2.11.0
TORCH  ?= torch==2.13.0

.PHONY: setup build test demo bench clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -r requirements.txt
	touch $(STAMP)

setup: $(STAMP)

# flock: several shells may build at once; one build folder, one writer. Rebuilt only when a native source or the
# build's own files changed (pip's no-op editable install alone costs seconds on every make demo).
BUILT  := $(VENV)/.ltl_ext-built
NATIVE := $(shell find csrc -type f) setup.py pyproject.toml ltl_ext/ops/build_config.py ltl_ext/_version.py
$(BUILT): $(STAMP) $(NATIVE)
	flock /tmp/ltl_ext_build.lock $(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $(BUILT)

build: $(BUILT)

test: build
	$(PY) -m pytest -q tests

# the demo (python -m ltl_ext demo), then its figures as the artefact docs/results/demo.json (the README renders it)
demo: build
	$(PY) scripts/run_demo_artefact.py --out runs/demo

bench: build
	$(PY) -m pytest -q bench --benchmark-only

clean:
	rm -rf build *.egg-info ltl_ext/_C*.so $(BUILT)
