# Two entry points for a fresh machine (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXAMPLE := examples/notes

.PHONY: demo test lint typecheck unit bench clean

$(BIN)/oneoff: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The main job: migrate the example app's database in development, with the embedded store.
demo: $(BIN)/oneoff
	cd $(EXAMPLE) && ../../$(BIN)/oneoff tasks
	cd $(EXAMPLE) && ../../$(BIN)/oneoff run migrate --env development
	cd $(EXAMPLE) && ../../$(BIN)/oneoff runs --limit 5

lint: $(BIN)/oneoff
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(BIN)/oneoff
	$(BIN)/mypy

unit: $(BIN)/oneoff
	$(BIN)/python -m pytest

# Everything CI runs: lint, strict types, the whole test suite.
test: lint typecheck unit

bench: $(BIN)/oneoff
	$(BIN)/python -m compileall -q src/oneoff
	for script in bench/bench_*.py; do echo "== $$script"; $(BIN)/python $$script --quick || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
