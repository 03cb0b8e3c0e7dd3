# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# GPU users: create .venv and install your CUDA build of torch into it first; the Makefile keeps an installed torch.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EFFSCOPE := $(VENV)/bin/effscope
STAMP := $(VENV)/.effscope-installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(EFFSCOPE) blocks list
	$(EFFSCOPE) models list

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check effscope tests benchmarks
	$(VENV)/bin/ruff format --check effscope tests benchmarks

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
