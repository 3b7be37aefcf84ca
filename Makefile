# Two entry points (README): `make demo` and `make test`. Each creates .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; on a board the firmware scripts pick the right wheel instead.
TORCH ?= torch==2.13.0

.PHONY: demo test test-slow lint clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/hiertrain-edge demo

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check hiertrain_edge tests
	$(VENV)/bin/ruff format --check hiertrain_edge tests

test: $(VENV)/.installed
	bash .ci/system-deps.sh
	$(MAKE) lint
	$(PY) -m pytest -q --durations=15

test-slow: $(VENV)/.installed
	bash .ci/system-deps.sh
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) build *.egg-info
