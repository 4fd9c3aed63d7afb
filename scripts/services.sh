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
# - Redis (scripts/prereqs.sh test installs redis-server): one server,
#   AISA_TEST_REDIS=redis://127.0.0.1:55434, and a 3-master Redis Cluster made with
#   `redis-cli --cluster create` on 55441-55443, AISA_TEST_REDIS_CLUSTER=
#   redis-cluster://127.0.0.1:55441?node=…, for the cluster-state tests
#   (relay-edge/tests/cluster_state.rs; its Redis-restart test starts its own server).
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${AISA_SERVICES_DIR:-/tmp/aisa-services}
PG_PORT=${AISA_PG_PORT:-55432}
S3_PORT=${AISA_S3_PORT:-55433}
REDIS_PORT=${AISA_REDIS_PORT:-55434}
REDIS_CLUSTER_PORTS=(${AISA_REDIS_CLUSTER_PORTS:-55441 55442 55443})

# Starts redis-server on 127.0.0.1:$1 in $STATE/redis-$1, with extra arguments.
start_redis() {
  local port=$1
  shift
  mkdir -p "$STATE/redis-$port"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$STATE/redis-$port" --save '' \
    --appendonly no --daemonize yes --pidfile "$STATE/redis-$port/redis.pid" \
    --logfile "$STATE/redis-$port/redis.log" "$@"
  wait_port "$port" "$STATE/redis-$port/redis.log"
}

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
    command -v redis-server >/dev/null || {
      echo "redis-server is missing: apt-get install redis-server (scripts/prereqs.sh test does)" >&2
      exit 1
    }
    start_redis "$REDIS_PORT"
    for port in "${REDIS_CLUSTER_PORTS[@]}"; do
      start_redis "$port" --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000
    done
    redis-cli --cluster create $(printf '127.0.0.1:%s ' "${REDIS_CLUSTER_PORTS[@]}") \
      --cluster-replicas 0 --cluster-yes >"$STATE/redis-cluster-create.log" 2>&1
    for _ in $(seq 1 100); do
      redis-cli -p "${REDIS_CLUSTER_PORTS[0]}" cluster info | grep -q cluster_state:ok && break
      sleep 0.2
    done
    echo "export AISA_TEST_POSTGRES=postgres://postgres@127.0.0.1:$PG_PORT"
    echo "export AISA_TEST_POSTGRES_CA=$STATE/pg-tls/ca.crt"
    echo "export AISA_TEST_S3=http://127.0.0.1:$S3_PORT"
    # The test S3 server takes any keys; the relay reads its S3 keys from the environment
    # as the AWS tools do (and must not go looking for cloud instance credentials).
    echo "export AWS_ACCESS_KEY_ID=aisa-test AWS_SECRET_ACCESS_KEY=aisa-test-secret AWS_EC2_METADATA_DISABLED=true"
    echo "export AISA_TEST_REDIS=redis://127.0.0.1:$REDIS_PORT"
    echo "export AISA_TEST_REDIS_CLUSTER='redis-cluster://127.0.0.1:${REDIS_CLUSTER_PORTS[0]}?node=127.0.0.1:${REDIS_CLUSTER_PORTS[1]}&node=127.0.0.1:${REDIS_CLUSTER_PORTS[2]}'"
    ;;
  stop)
    if [ -d "$STATE/pg" ]; then
      as_pg "$(pg_bin)/pg_ctl" -D "$STATE/pg" -m fast -w stop >/dev/null 2>&1 || true
    fi
    for pidfile in "$STATE"/redis-*/redis.pid; do
      [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
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
