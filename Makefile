# The two commands: `make run` and `make test`. Both bootstrap .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PKGS := strictgate validator quota registry ingest worker admin app.py

.PHONY: run test lint bench bench-quota bench-load fuzz soak clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/strictgate serve

lint: $(STAMP)
	$(VENV)/bin/ruff check --no-cache .
	$(VENV)/bin/mypy $(PKGS)

test: $(STAMP) lint
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/validate.py

bench-quota: $(STAMP)
	$(PY) bench/quota.py

bench-load: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk) || sudo apt-get install -y wrk
	$(PY) bench/load.py

# Long runs of the property-based and API fuzzers (bounded versions run in `make test`).
fuzz: $(STAMP)
	SG_FUZZ_LONG=1 $(PY) -m pytest -q fuzz

# Mixed traffic against a real server for SOAK_MINUTES; prints RSS, Redis memory, the audit.
SOAK_MINUTES ?= 10
soak: $(STAMP)
	$(PY) bench/soak.py --minutes $(SOAK_MINUTES)

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache .hypothesis
