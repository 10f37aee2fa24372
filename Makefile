# One entry point for setting up, deploying and testing matrix-stack.
VENV := .venv
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest

.PHONY: setup deploy deps lint test test-fast test-e2e local-server local-server-down e2e-up e2e-down clean

setup:  ## the program's own dependencies (what `pulumi up` needs)
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.txt

deploy: setup  ## deploy the current stack (pulumi CLI and a logged-in backend required)
	pulumi up

deps:  ## everything the tests need, installed on a fresh Debian 12 machine
	bash tests/tools/install-deps.sh

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy components tests __main__.py

test-fast: lint  ## unit tests under mocks + every rendered config checked by its real tool
	$(PYTEST) -q -m "not e2e"

test: lint  ## everything, including the end-to-end suite on a local Debian host
	bash tests/tools/install-e2e-deps.sh
	$(PYTEST) -q -ra

test-e2e: deps
	bash tests/tools/install-e2e-deps.sh
	$(PYTEST) -q -ra -m e2e

local-server: deps  ## the program deployed on a local Debian host behind the edge stand-in, no cloud account; prints how to use it
	bash tests/tools/install-e2e-deps.sh
	$(PY) -m tests.e2e.local up

local-server-down:  ## remove a local server left behind
	$(PY) -m tests.e2e.local down

e2e-up: local-server  ## the old name of local-server

e2e-down: local-server-down

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
