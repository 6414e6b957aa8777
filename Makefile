# sopflow: `make demo` runs the main job on SQLite, `make test` runs every check. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench validate clean mutation

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	rm -f sopflow-demo.db sopflow-demo.db-wal sopflow-demo.db-shm
	$(BIN)/sopflow demo

validate: $(STAMP)
	$(BIN)/sopflow validate definitions

lint: $(STAMP)
	$(BIN)/ruff check sopflow engine cli tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck validate unit

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

# Mutation testing of the engine's decision, audit, calendar and compile modules (docs/mutation.md): minutes,
# so not part of `make test`. It runs in a private copy of the tree (MUTATION_DIR), never in the checkout.
MUTATION_DIR ?= /tmp/sopflow-mutation
$(VENV)/.mutation-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,mutation]'
	touch $@

mutation: $(VENV)/.mutation-installed
	$(BIN)/python -m tests.helpers.mutation --into $(MUTATION_DIR) $(MUTATION_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis sopflow-demo.db*
