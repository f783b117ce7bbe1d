#!/usr/bin/env bash
# Runs every test of livehub on a fresh machine: installs what the tests need, starts Redis and
# PostgreSQL when they are down, then runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)

# Python: a virtual environment with livehub and its test tools.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.livehub-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check -e ".[test,lint]"
  touch "$stamp"
fi

# Redis: the tests use 127.0.0.1:6379 and start their own servers for fault tests.
if ! command -v redis-server >/dev/null; then
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

# nginx: the e2e tests run deploy/nginx/livehub.conf in their own nginx (never the system one,
# which is not started: policy-rc.d keeps the package from starting it where none is in place).
if ! command -v nginx >/dev/null && ! [ -x /usr/sbin/nginx ]; then
  apt-get update -qq
  package=nginx-light
  apt-cache show nginx-light >/dev/null 2>&1 || package=nginx
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
  if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
export PATH="$PATH:/usr/sbin"

# PostgreSQL: 127.0.0.1:5432 with trust auth, and a database for the tests.
if ! command -v pg_ctlcluster >/dev/null; then
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
fi
if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
  for _ in $(seq 100); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.1; done
fi
export LIVEHUB_TEST_POSTGRES_URL=${LIVEHUB_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/livehub_test}
if ! psql -h 127.0.0.1 -U postgres -tAc "select 1 from pg_database where datname='livehub_test'" | grep -q 1; then
  psql -h 127.0.0.1 -U postgres -qc "create database livehub_test"
fi

# Node.js: socket.io-client 4 from npm, to prove the JavaScript client.
if command -v node >/dev/null && command -v npm >/dev/null; then
  if [ ! -d tests/js/node_modules/socket.io-client ] || [ tests/js/package.json -nt tests/js/node_modules ]; then
    (cd tests/js && npm ci --silent --no-audit --no-fund)
  fi
fi

exec .venv/bin/python -m pytest "$@"
