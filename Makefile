# Set-up and the two main commands. `make bench` and `make test` create the virtual environment
# and install ssrl on first use.
PYTHON ?= python3
VENV ?= .venv
# torch: a torch already in $(VENV) is kept (put the build you want there first, or pass
# TORCH=...). Otherwise, with an NVIDIA GPU (nvidia-smi on the PATH) PyPI's default CUDA build;
# without one the CPU build, never the multi-GB CUDA one: from a local wheel folder pip is
# configured with (our machines have torch 2.13.0+cpu on disk), else from PyTorch's CPU index.
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PY := $(VENV)/bin/python
export MUJOCO_GL ?= egl

.PHONY: install bench demo test clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || { \
	  if [ -n "$(TORCH)" ]; then $(PY) -m pip install -q "$(TORCH)"; \
	  elif command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q "torch==$(TORCH_VERSION)"; \
	  else $(PY) -m pip install -q "torch==$(TORCH_VERSION)+cpu" 2>/dev/null \
	    || $(PY) -m pip install -q "torch==$(TORCH_VERSION)+cpu" --extra-index-url "$(TORCH_CPU_INDEX)"; fi; }
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# The main job: the quick suite, two seeds, on one DMC task (13.0 min here, 2 cores).
bench: install
	$(PY) -m ssrl.cli bench --suite quick --workers 2 --out outputs/bench-quick

demo: install
	$(PY) -m ssrl.cli demo

# Lint and format check first (ruff, configured in pyproject.toml), then the tests.
test: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
