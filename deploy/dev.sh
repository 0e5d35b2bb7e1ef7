#!/usr/bin/env bash
# rollout's two everyday commands, each doing its own set-up from a fresh clone:
#   deploy/dev.sh demo [ARGS...]   the main job: a demo on the embedded default (SQLite)
#   deploy/dev.sh test [PYTEST ARGS...]   the whole test suite
# and two more:
#   deploy/dev.sh lint             ruff, mypy and the import-layer contracts
#   deploy/dev.sh bench NAME [ARGS...]   rollout bench NAME (push, checkin, fanout, status, metrics)
# Set-up: a virtual environment in .venv with the package and its dev tools, installed
# again only when pyproject.toml changes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${ROLLOUT_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

log() { printf '[dev] %s\n' "$*" >&2; }

setup_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
      log "Python 3.11 or newer is needed (found $("$PYTHON" --version 2>&1)); set PYTHON=..."
      exit 1
    }
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  local stamp="$VENV/.rollout-installed"
  local want
  want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing rollout and its dependencies into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
    echo "$want" > "$stamp"
  fi
}

# Start the local PostgreSQL and Redis when they are installed but not running.
start_services() {
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
      for version in /etc/postgresql/*; do
        log "starting PostgreSQL $(basename "$version")"
        pg_ctlcluster --skip-systemctl-redirect "$(basename "$version")" main start || true
      done
      for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
    fi
  fi
  if command -v redis-server >/dev/null 2>&1; then
    if ! (command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1); then
      log "starting Redis"
      redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
      for _ in $(seq 1 20); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.25; done
    fi
  fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# RabbitMQ too (one test runs a rollout over AMQP), when installed but stopped.
start_rabbitmq() {
  if command -v rabbitmq-server >/dev/null 2>&1 && ! port_open 5672; then
    log "starting RabbitMQ"
    rabbitmq-server -detached >/dev/null 2>&1 || true
    for _ in $(seq 1 60); do port_open 5672 && break; sleep 0.5; done
  fi
}

NGINX=/usr/sbin/nginx

# The push and fan-out benches push to nginx (the Python APNs stand-in would be the limit and
# measure itself): install it from the system's packages when we can, else say how.
ensure_nginx() {
  [ -x "$NGINX" ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing nginx-light (the fast APNs endpoint for the push and fan-out benches)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q nginx-light >/dev/null \
      || { apt-get update -q >/dev/null && apt-get install -y -q nginx-light >/dev/null; } \
      || log "could not install nginx-light"
  fi
  if [ ! -x "$NGINX" ]; then
    log "nginx is not installed; for the product's figures install it (Debian/Ubuntu: sudo apt-get install nginx-light) and run again"
  fi
}

cmd="${1:-}"
shift || true
case "$cmd" in
  demo)
    setup_venv
    "$VENV/bin/rollout" db upgrade >/dev/null
    exec "$VENV/bin/rollout" demo "$@"
    ;;
  test)
    setup_venv
    start_services
    start_rabbitmq
    # Two test processes by default (pytest-xdist; a file's tests stay in one process, so the
    # fixtures they share stay shared); ROLLOUT_TEST_PROCESSES=0 runs them all in this one.
    exec "$VENV/bin/python" -m pytest -n "${ROLLOUT_TEST_PROCESSES:-2}" --dist loadfile "$@"
    ;;
  bench)
    name="${1:-}"
    case "$name" in
      push|checkin|fanout|status|metrics) ;;
      *) echo "usage: deploy/dev.sh bench push|checkin|fanout|status|metrics [--size N] [--json]" >&2; exit 2 ;;
    esac
    setup_venv
    start_services
    case "$name" in push|fanout) ensure_nginx ;; esac
    exec "$VENV/bin/rollout" bench "$@"
    ;;
  lint)
    setup_venv
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    "$VENV/bin/mypy"
    exec "$VENV/bin/lint-imports" --no-cache
    ;;
  *)
    echo "usage: deploy/dev.sh demo [--devices N ...] | test [pytest args] | lint | bench NAME [--size N] [--json]" >&2
    exit 2
    ;;
esac
