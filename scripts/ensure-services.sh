#!/usr/bin/env bash
# Make sure the PostgreSQL and Redis that the tests use are up: start local servers that are
# installed but stopped; say clearly what is missing otherwise. DATABASE_URL / REDIS_URL
# (or TEST_DATABASE_URL / TEST_REDIS_URL) point the tests elsewhere.
set -u
PG_HOST=${PGHOST:-127.0.0.1}
REDIS_HOST=127.0.0.1

pg_up() { pg_isready -q -h "$PG_HOST" -p 5432 2>/dev/null || (exec 3<>/dev/tcp/$PG_HOST/5432) 2>/dev/null; }
redis_up() { (exec 3<>/dev/tcp/$REDIS_HOST/6379) 2>/dev/null; }

if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "PostgreSQL is stopped: starting the local cluster"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 30); do pg_up && break; sleep 1; done
  fi
fi
if ! redis_up; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "Redis is stopped: starting a local server"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
    for _ in $(seq 30); do redis_up && break; sleep 1; done
  fi
fi
missing=()
pg_up || missing+=("PostgreSQL on $PG_HOST:5432 (install: apt-get install postgresql; trust auth for user postgres)")
redis_up || missing+=("Redis on $REDIS_HOST:6379 (install: apt-get install redis-server)")
if [ ${#missing[@]} -gt 0 ]; then
  echo "make test needs real services that are not available:" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 2
fi
