# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# GPU users: create .venv and install your CUDA build of torch into it first; the Makefile keeps an installed torch.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EFFSCOPE := $(VENV)/bin/effscope
STAMP := $(VENV)/.effscope-installed
DB := effscope.db

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# The main job on embedded defaults, on the CPU: the zoo, a few presets profiled, a small search, one report.
demo: $(STAMP)
	$(EFFSCOPE) blocks list
	$(EFFSCOPE) models list
	$(EFFSCOPE) profile pvtv2_b0 lightvit_t litv2_s --db $(DB) --max-time 3
	$(EFFSCOPE) search hilo_block --trials 40 --db $(DB)
	$(EFFSCOPE) report --storage $(DB) --study hilo_block-cpu -o reports/demo-cpu.html

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check effscope tests benchmarks
	$(VENV)/bin/ruff format --check effscope tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/measurement_fidelity.py
	$(PY) benchmarks/search_throughput.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
