#!/usr/bin/env bash
# Starts (or stops) the servers the test suite uses, on loopback, in a throwaway folder:
#   scripts/services.sh start   → prints `export AISA_TEST_POSTGRES=postgres://…`
#   scripts/services.sh stop
# PostgreSQL runs as the `postgres` user when started as root (initdb refuses root).
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${AISA_SERVICES_DIR:-/tmp/aisa-services}
PG_PORT=${AISA_PG_PORT:-55432}

pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$dir" ] && [ "$(id -u)" = 0 ]; then
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    dir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  [ -n "$dir" ] || { echo "PostgreSQL is missing: apt-get install postgresql" >&2; exit 1; }
  echo "$dir"
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
  start)
    bin=$(pg_bin)
    rm -rf "$STATE" && mkdir -p "$STATE/pg"
    [ "$(id -u)" = 0 ] && chown -R postgres "$STATE"
    as_pg "$bin/initdb" -D "$STATE/pg" -A trust -U postgres >"$STATE/initdb.log" 2>&1
    as_pg "$bin/pg_ctl" -D "$STATE/pg" -l "$STATE/pg.log" -w \
      -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $STATE/pg -c fsync=off -c max_connections=300" start >/dev/null
    echo "export AISA_TEST_POSTGRES=postgres://postgres@127.0.0.1:$PG_PORT"
    ;;
  stop)
    if [ -d "$STATE/pg" ]; then
      as_pg "$(pg_bin)/pg_ctl" -D "$STATE/pg" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$STATE"
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
