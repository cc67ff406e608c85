# Two entry points for a fresh machine (see README): `make dev` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: dev test install lint bench clean

$(BIN)/waypost: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/waypost

dev: install
	$(BIN)/waypost agent -dev -config-dir examples/services

lint: install
	$(BIN)/ruff check .

test: install lint
	$(BIN)/pytest

bench: install
	$(BIN)/python tests/bench/bench_http.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
