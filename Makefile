# Two commands on a fresh Debian machine, as root or not:
#   make demo   install what is missing, start the embedded database, train examples/grid.yaml
#   make test   the whole test suite (what CI runs)
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
VENV ?= .venv
PG_MAJOR ?= 15
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_ROWS ?= 40000

.PHONY: demo test bench docs system-deps test-deps venv clean

system-deps:  ## Debian packages: PostgreSQL server + PL/Python (skipped when present)
	@if [ -x /usr/lib/postgresql/$(PG_MAJOR)/bin/postgres ] && \
	    [ -f /usr/lib/postgresql/$(PG_MAJOR)/lib/plpython3.so ]; then :; else \
	  echo "installing postgresql-$(PG_MAJOR) postgresql-plpython3-$(PG_MAJOR)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    postgresql-$(PG_MAJOR) postgresql-plpython3-$(PG_MAJOR) python3-venv >/dev/null; fi

test-deps: system-deps  ## pgbouncer, for the tests of ctq behind a connection pooler (skipped when present)
	@if [ -x /usr/sbin/pgbouncer ]; then :; else \
	  echo "installing pgbouncer"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends pgbouncer >/dev/null; fi

$(BIN)/ctq: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

venv: $(BIN)/ctq

examples/data/demo.csv: examples/make_data.py | $(BIN)/ctq
	@mkdir -p examples/data
	$(BIN)/python examples/make_data.py --rows $(DEMO_ROWS) --out $@

demo: system-deps venv examples/data/demo.csv
	$(BIN)/ctq db start
	$(BIN)/ctq load examples/data/demo.csv --table public.demo --replace
	$(BIN)/ctq train examples/grid.yaml

test: test-deps venv
	$(BIN)/python -m pytest -q --durations=25

bench: system-deps venv
	$(BIN)/python bench/run.py

docs: venv  ## docs/cli.md and docs/grid-yaml.md from the code (tests/test_docs.py checks they are current)
	$(BIN)/python docs/generate.py

clean:
	-$(BIN)/ctq db stop
	rm -rf $(VENV) examples/data
