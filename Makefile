# Pantheon: `make run` serves the app on SQLite; `make test` runs lint and tests on PostgreSQL.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/pantheon
# Benchmarks write their own databases (this one, plus _usage_1k and _usage_1m next to it).
BENCH_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/pantheon_bench

.PHONY: run admin test lint bench venv-run venv-dev postgres chromium clean

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

test: venv-dev postgres chromium lint
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} $(VENV)/bin/pytest

bench: venv-dev postgres
	BENCH_DATABASE_URL=$${BENCH_DATABASE_URL:-$(BENCH_DATABASE_URL)} $(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache
