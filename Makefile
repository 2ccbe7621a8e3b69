# The two commands: `make run` and `make test`. Both bootstrap .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PKGS := strictgate validator quota schemas bench app.py

.PHONY: help run test lint wheel-check lock bench bench-quota bench-load bench-peers bench-scale fuzz soak clean

$(STAMP): pyproject.toml constraints.txt
	@echo "strictgate: installing dependencies into $(VENV) (first run or pyproject.toml changed; about a minute)"
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --progress-bar on --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

help:
	@echo "make targets (all but help and clean first install .venv if needed):"
	@echo "  help         this list"
	@echo "  run          serve the API and the worker on STRICTGATE_PORT (default 8080), data in ./var"
	@echo "  test         lint, then the whole test suite"
	@echo "  lint         ruff and mypy --strict"
	@echo "  wheel-check  build the wheel, install it into a fresh venv, run the installed CLI"
	@echo "  lock         re-pin constraints.txt to what .venv has (after changing dependencies)"
	@echo "  bench        validation throughput"
	@echo "  bench-quota  quota admission throughput against Redis"
	@echo "  bench-load   HTTP load test with wrk (installs wrk if missing)"
	@echo "  bench-peers  strictgate vs the Fastify peer (needs node, npm) vs a floor, with wrk"
	@echo "  bench-scale  1 API + 1 worker vs 2 + 2 on a local Redis Cluster and PostgreSQL, with wrk"
	@echo "  fuzz         long runs of the property-based and API fuzzers"
	@echo "  soak         mixed traffic for SOAK_MINUTES (default 10): RSS, Redis memory, audit"
	@echo "  clean        remove .venv, var and the tool caches"

run: $(STAMP)
	$(VENV)/bin/strictgate serve

lint: $(STAMP)
	$(VENV)/bin/ruff check --no-cache .
	$(VENV)/bin/mypy $(PKGS)

# The API flows again on a 3-master Redis Cluster started from the embedded binary, the
# service told so (STRICTGATE_REDIS_CLUSTER=1): a key, script or MULTI crossing slots fails
# here (CROSSSLOT), not in production. tests/redis_mode.py explains the switch.
CLUSTER_TESTS := tests/test_ingest_e2e.py tests/test_ingest_surface.py \
	tests/test_ingest_answers.py tests/test_ingest_front.py tests/test_envelopes.py \
	tests/test_operyn.py tests/test_orcasheets.py tests/test_onesight.py tests/test_definite.py \
	tests/test_quarantine_ingest.py tests/test_quarantine_admin.py \
	tests/test_quarantine_replay.py tests/test_quarantine_storage.py tests/test_records_api.py \
	tests/test_admin_registry.py tests/test_keys.py tests/test_apikeys.py \
	tests/test_quota_admin.py tests/test_dataset_settings.py tests/test_project_settings.py \
	tests/test_registry_store.py tests/test_registry_cli.py tests/test_inference.py \
	tests/test_dry_run.py tests/test_commit_wait.py tests/test_event_records.py \
	tests/test_hostile_auth.py tests/test_hostile_bodies.py tests/test_builtin_datasets.py \
	tests/test_dialect_contract.py tests/test_backpressure.py tests/test_worker.py \
	tests/test_worker_lake.py tests/test_worker_lake_kill.py tests/test_faults_worker_kill.py \
	tests/test_worker_metrics.py tests/test_worker_sink.py tests/test_worker_compaction.py \
	tests/test_quota_event_ids.py tests/test_lake_events.py

test: $(STAMP) lint
	$(PY) -m pytest -q
	SG_TEST_REDIS_CLUSTER=1 $(PY) -m pytest -q -p no:cacheprovider $(CLUSTER_TESTS)

# A non-editable install works (CI runs it after the tests).
wheel-check: $(STAMP)
	.ci/wheel-check

# The versions the tests ran on: every install uses them (-c), so a fresh machine next month
# gets the same packages. Re-pin after changing pyproject.toml's dependencies.
lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable --disable-pip-version-check | sort -f > constraints.txt

bench: $(STAMP)
	$(PY) bench/validate.py

bench-quota: $(STAMP)
	$(PY) bench/quota.py

bench-load: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk) || sudo apt-get install -y wrk
	$(PY) bench/load.py

# strictgate, the Fastify peer (1 and PEER_WORKERS processes; skipped without node/npm) and
# the floor side by side; PEERS_ARGS adds options, e.g. --sustained-seconds 0 for a quick run
PEER_WORKERS ?= 2
PEERS_ARGS ?=
bench-peers: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk) || sudo apt-get install -y wrk
	$(PY) bench/peers.py --peer-workers $(PEER_WORKERS) $(PEERS_ARGS)

# 1 API process + 1 worker against 2 + 2 on a 3-master cluster from the embedded binary and a
# lake on the machine's PostgreSQL (127.0.0.1:5432); SCALE_ARGS adds options, e.g. --s3
SCALE_ARGS ?=
bench-scale: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk) || sudo apt-get install -y wrk
	$(PY) bench/scale.py $(SCALE_ARGS)

# Long runs of the property-based and API fuzzers (bounded versions run in `make test`).
fuzz: $(STAMP)
	SG_FUZZ_LONG=1 $(PY) -m pytest -q fuzz

# Mixed traffic against a real server for SOAK_MINUTES; prints RSS, Redis memory, the audit.
SOAK_MINUTES ?= 10
soak: $(STAMP)
	$(PY) bench/soak.py --minutes $(SOAK_MINUTES)

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache .hypothesis
