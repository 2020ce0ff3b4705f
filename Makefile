# Pantheon: `make run` serves the app on SQLite; `make test` runs lint and tests on PostgreSQL;
# `make test-fast` is the inner loop (no lint, no browser, gunicorn or fuzzing tests).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/pantheon
# Benchmarks write their own databases (this one, plus _usage_1k and _usage_1m next to it).
BENCH_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/pantheon_bench
# pytest-xdist workers: one per core here; each gets its own test database (test_pantheon_gw0, …).
TEST_WORKERS ?= 2
# Extra pytest arguments for both targets, e.g. `make test-fast PYTEST_ARGS="-x tests/billing"`.
PYTEST_ARGS ?=
# `--dist load` keeps pytest-django's order on every worker (no plain database test after a
# transactional one, which empties the database); `--dist loadfile` would break it.
PYTEST_PARALLEL = $(VENV)/bin/pytest -n $(TEST_WORKERS) --dist load
FAST_MARKERS = not browser and not gunicorn and not fuzz

.PHONY: run admin test test-fast lint bench venv-run venv-dev postgres chromium clean

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.run-installed: requirements.txt | $(VENV)/bin/activate
	$(PIP) install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt | $(VENV)/bin/activate
	$(PIP) install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.run-installed

venv-run: $(VENV)/.run-installed
venv-dev: $(VENV)/.dev-installed

run: venv-run
	DEBUG=$${DEBUG:-true} $(PY) manage.py migrate --noinput
	DEBUG=$${DEBUG:-true} $(PY) manage.py runserver $(HOST):$(PORT)

# The first admin account, on the database `make run` serves, with the same settings (DEBUG=true
# unless set, so no SECRET_KEY is needed locally); migrates first so it works on a fresh checkout.
admin: venv-run
	DEBUG=$${DEBUG:-true} $(PY) manage.py migrate --noinput
	DEBUG=$${DEBUG:-true} $(PY) manage.py createsuperuser

postgres:
	@scripts/ensure_postgres.sh

chromium:
	@scripts/ensure_chromium.sh

lint: venv-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	DEBUG=true $(VENV)/bin/mypy

# The whole suite, in two passes: everything but `serial` on all workers, then the `serial`
# tests (wall-clock promises) alone. Both passes always run; either failing fails the target
# (exit 5, "nothing selected", is not a failure when PYTEST_ARGS narrows the run).
test: venv-dev postgres chromium lint
	export DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)}; status=0; \
	$(PYTEST_PARALLEL) -m "not serial" $(PYTEST_ARGS) || status=$$?; \
	$(VENV)/bin/pytest -p no:xdist -m serial $(PYTEST_ARGS) || { code=$$?; [ $$code -eq 5 ] || status=$$code; }; \
	exit $$status

test-fast: venv-dev postgres
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} $(PYTEST_PARALLEL) -m "$(FAST_MARKERS)" $(PYTEST_ARGS)

bench: venv-dev postgres
	BENCH_DATABASE_URL=$${BENCH_DATABASE_URL:-$(BENCH_DATABASE_URL)} $(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache
