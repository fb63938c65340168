# Each target builds its own virtualenv: a fresh machine needs only Python >= 3.10 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test demo lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# The machine's pip (23.2) cannot install PEP 735 groups: bring uv into the venv.
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1" "uv>=0.8"
	# Compile bytecode once: PYTHONDONTWRITEBYTECODE machines would recompile at every start.
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e . --group dev
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .meltano .target-omnisend build dist
