# Set-up and the two main commands. `make bench` and `make test` create the virtual environment
# and install ssrl on first use.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch 2.13.0 lies on our machines' disks; on a GPU machine, install the torch
# build you want into $(VENV) first (or pass TORCH=...), and it is kept: see README.
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
export MUJOCO_GL ?= egl

.PHONY: install bench demo test clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# The main job: every representation and the reference rows on one DMC task (~15 min, 2 cores).
bench: install
	$(PY) -m ssrl.cli bench --suite quick --workers 2 --out outputs/bench-quick

demo: install
	$(PY) -m ssrl.cli demo

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
