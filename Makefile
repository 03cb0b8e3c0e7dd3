# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# GPU users: create .venv and install your CUDA build of torch into it first; the Makefile keeps an installed torch.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EFFSCOPE := $(VENV)/bin/effscope
STAMP := $(VENV)/.effscope-installed
DB := effscope.db
# The demo's report goes to a folder git ignores: a run never rewrites the committed reports/demo-cpu.html.
DEMO_OUT := demo-output

.PHONY: demo test lint bench gpu-check gpu-wheels clean

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
	$(EFFSCOPE) report --storage $(DB) --study hilo_block-cpu -o $(DEMO_OUT)/demo-cpu.html

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check effscope tests benchmarks
	$(VENV)/bin/ruff format --check effscope tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/measurement_fidelity.py
	$(PY) benchmarks/search_throughput.py

# One call that proves effscope on a GPU (benchmarks/gpu_check.py): 420 s by default, results in $(OUT).
# It needs neither a venv nor a network: .venv's Python when there is one, else python3 with its own CUDA torch,
# plus the wheels in .whl/ (make gpu-wheels) for whatever that Python lacks.
OUT ?= reports/gpu-check
GPU_CHECK_PY := $(if $(wildcard $(PY)),$(PY),$(PYTHON))
gpu-check:
	$(GPU_CHECK_PY) benchmarks/gpu_check.py --out $(OUT) $(GPU_CHECK_ARGS)

# Wheels for an offline GPU machine (default: CPython 3.12 on x86_64 Linux) of what CUDA images usually lack; carry
# .whl/ along with the working tree. fvcore publishes only a source archive: it is pure Python, so it is built here.
GPU_WHEELS_PYTHON ?= 3.12
# einops is for the official code that `gpu-check --official DIR` runs; effscope does not use it. portalocker and
# tabulate are what fvcore.nn imports through iopath and its tables (tests/test_gpu_check.py checks the list).
GPU_WHEELS ?= 'optuna>=5,<6' alembic mako colorlog 'sqlalchemy>=2' greenlet 'plotly>=5.20' iopath yacs termcolor \
	tqdm packaging einops portalocker tabulate
gpu-wheels:
	rm -rf .whl && mkdir -p .whl
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --implementation cp \
	  --python-version $(GPU_WHEELS_PYTHON) --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)
	$(PYTHON) -m pip wheel -q --no-deps -w .whl 'fvcore>=0.1.5.post20221221'
	@ls .whl && du -sh .whl

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
