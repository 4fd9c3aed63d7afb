#!/usr/bin/env bash
# Starts (or stops) the servers the test suite uses, on loopback, in a throwaway folder:
#   scripts/services.sh start   → prints the variables to export, e.g.
#                                 `eval "$(scripts/services.sh start)"`
#   scripts/services.sh stop
#
# - PostgreSQL (AISA_TEST_POSTGRES=postgres://postgres@127.0.0.1:55432), with TLS on: a
#   test certificate authority made here with openssl signs the server's certificate
#   (names localhost and 127.0.0.1), and AISA_TEST_POSTGRES_CA names its PEM, for the
#   `sslmode=verify-full` tests (relay-edge/tests/postgres_tls.rs). PostgreSQL runs as
#   the `postgres` user when started as root (initdb refuses root).
# - An S3-compatible object store, moto's server (`pip install 'moto[server]'`,
#   scripts/prereqs.sh test installs it): AISA_TEST_S3=http://127.0.0.1:55433, for the
#   bundle-storage test (relay-edge/tests/object_store.rs). Any bucket, any keys.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${AISA_SERVICES_DIR:-/tmp/aisa-services}
PG_PORT=${AISA_PG_PORT:-55432}
S3_PORT=${AISA_S3_PORT:-55433}

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

# A test CA and a server certificate it signs, for PostgreSQL's TLS.
make_pg_tls() {
  local dir=$1
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=aisa test database CA" -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=localhost" -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$dir/ext.cnf"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 2 -extfile "$dir/ext.cnf" -out "$dir/server.crt" 2>/dev/null
  chmod 600 "$dir/server.key" "$dir/ca.key"
}

# Waits until something listens on 127.0.0.1:$1 (at most ~20 s).
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.2
  done
  echo "nothing listens on 127.0.0.1:$1: see $2" >&2
  exit 1
}

case "${1:-}" in
  start)
    bin=$(pg_bin)
    command -v moto_server >/dev/null || {
      echo "moto_server is missing: pip install 'moto[server]' (scripts/prereqs.sh test does)" >&2
      exit 1
    }
    rm -rf "$STATE" && mkdir -p "$STATE/pg"
    make_pg_tls "$STATE/pg-tls"
    [ "$(id -u)" = 0 ] && chown -R postgres "$STATE"
    as_pg "$bin/initdb" -D "$STATE/pg" -A trust -U postgres >"$STATE/initdb.log" 2>&1
    as_pg "$bin/pg_ctl" -D "$STATE/pg" -l "$STATE/pg.log" -w \
      -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $STATE/pg -c fsync=off -c max_connections=300 -c ssl=on -c ssl_cert_file=$STATE/pg-tls/server.crt -c ssl_key_file=$STATE/pg-tls/server.key" start >/dev/null
    # moto keeps everything in memory; its own process group, so stop ends it all.
    setsid moto_server -H 127.0.0.1 -p "$S3_PORT" >"$STATE/s3.log" 2>&1 </dev/null &
    echo $! >"$STATE/s3.pid"
    wait_port "$S3_PORT" "$STATE/s3.log"
    echo "export AISA_TEST_POSTGRES=postgres://postgres@127.0.0.1:$PG_PORT"
    echo "export AISA_TEST_POSTGRES_CA=$STATE/pg-tls/ca.crt"
    echo "export AISA_TEST_S3=http://127.0.0.1:$S3_PORT"
    ;;
  stop)
    if [ -d "$STATE/pg" ]; then
      as_pg "$(pg_bin)/pg_ctl" -D "$STATE/pg" -m fast -w stop >/dev/null 2>&1 || true
    fi
    if [ -f "$STATE/s3.pid" ]; then
      kill -- "-$(cat "$STATE/s3.pid")" 2>/dev/null || kill "$(cat "$STATE/s3.pid")" 2>/dev/null || true
    fi
    rm -rf "$STATE"
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
