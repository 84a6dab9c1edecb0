# The README's two commands: `make run` (embedded, nothing else needed) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run demo test bench lint format check-deploy clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Web (gunicorn), Celery worker, SMS worker, dispatcher and beat in the foreground; a crashed one is
# restarted, Ctrl-C stops all of them. The same settings as every `manage.py` command: DEBUG
# stays off unless set (DEBUG=1 make run), keys are generated once under var/.
run: $(STAMP)
	$(PY) manage.py serve

# The app with live fakes of Bitrix24, Mango, MTT, a generic PBX and MTS, a demo portal,
# scripted calls and an SMS (README: "See it work"). SCENARIO=busy-hour plays 50 calls at once; everything lives in var/demo/.
demo: $(STAMP)
	$(PY) -m demo $(if $(SCENARIO),--scenario $(SCENARIO)) $(DEMO_ARGS)

# The whole suite against real PostgreSQL and Redis (started here if installed but stopped).
test: $(STAMP)
	bash scripts/ensure-services.sh
	bash scripts/ensure-browser.sh
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	bash scripts/ensure-services.sh
	$(PY) -m bench $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Production settings must pass Django's deployment checklist.
check-deploy: $(STAMP)
	DEBUG=0 SECRET_KEY=$$($(PY) -c 'import secrets;print(secrets.token_urlsafe(50))') \
	FIELD_ENCRYPTION_KEYS=$$($(PY) -c 'from cryptography.fernet import Fernet;print(Fernet.generate_key().decode())') \
	ALLOWED_HOSTS=example.com APP_BASE_URL=https://example.com \
	$(PY) manage.py check --deploy --fail-level WARNING

clean:
	rm -rf var/broker var/cache var/celerybeat-schedule*
