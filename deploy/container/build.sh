#!/usr/bin/env bash
# Builds the relay image from artifacts made on this host, and smoke-tests it, with no
# base image pulled (there may be no registry to pull from):
#
#   deploy/container/build.sh build BINARY   lay out deploy/container/rootfs/ (BINARY, the
#                                            web app's browser-client/dist, CA
#                                            certificates) and `podman build` the image
#                                            with ARTIFACTS=from-host → aisa-relay:local
#   deploy/container/build.sh smoke          export the image's root filesystem and run
#                                            its relay-edge there (chroot): --version, then
#                                            `serve` on loopback, asking /healthz,
#                                            /readyz, /api/session and the web app
#
# BINARY is best a static (musl) build. A dynamically linked one works too: the
# libraries `ldd` names are copied beside it, from this host's Debian packages.
# `podman run` is not used for the smoke test: on machines without CAP_SYS_RESOURCE the
# OCI runtimes cannot set rlimits, so the image's files are run directly.
set -euo pipefail
cd "$(dirname "$0")/../.."
IMAGE=${AISA_IMAGE:-aisa-relay:local}
ROOTFS=deploy/container/rootfs

case "${1:-}" in
  build)
    binary=${2:?usage: $0 build BINARY}
    [ -f browser-client/dist/index.html ] || {
      echo "browser-client/dist is missing: (cd browser-client && npm run build)" >&2
      exit 1
    }
    rm -rf "$ROOTFS"
    install -D -m 0755 "$binary" "$ROOTFS/usr/local/bin/relay-edge"
    # The shared libraries of a dynamic binary, at the paths it looks for them.
    if ldd "$binary" >/dev/null 2>&1; then
      ldd "$binary" | grep -oE '/[^ ]+' | sort -u | while read -r lib; do
        install -D -m 0755 "$(readlink -f "$lib")" "$ROOTFS$lib"
      done
    fi
    mkdir -p "$ROOTFS/usr/share/aisuperapp/web" "$ROOTFS/var/lib/aisuperapp/relay"
    install -d -m 1777 "$ROOTFS/tmp"
    cp -r browser-client/dist/. "$ROOTFS/usr/share/aisuperapp/web/"
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
    podman build --quiet --build-arg ARTIFACTS=from-host -f deploy/container/Dockerfile -t "$IMAGE" .
    rm -rf "$ROOTFS"
    ;;
  smoke)
    work=$(mktemp -d)
    container=""
    cleanup() {
      [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true
      [ -n "$container" ] && podman rm -f "$container" >/dev/null 2>&1 || true
      rm -rf "$work"
    }
    trap cleanup EXIT
    container=$(podman create "$IMAGE")
    mkdir "$work/root"
    podman export "$container" | tar -x -C "$work/root"
    # What the image says: user, entrypoint, environment.
    podman image inspect "$IMAGE" --format '{{.Config.User}} {{json .Config.Entrypoint}}' | grep -q '^65532:65532 \["/usr/local/bin/relay-edge"\]'
    chroot "$work/root" /usr/local/bin/relay-edge --version
    # The image's environment, with loopback ports and a data folder of its own.
    mapfile -t env < <(podman image inspect "$IMAGE" --format '{{range .Config.Env}}{{println .}}{{end}}' | grep .)
    http_port=$((20000 + RANDOM % 20000))
    env -i "${env[@]}" \
      AISA_RELAY_HTTP_LISTEN=127.0.0.1:$http_port AISA_RELAY_QUIC_LISTEN=127.0.0.1:0 \
      AISA_RELAY_METRICS_ADDR=127.0.0.1:0 AISA_RELAY_PUBLIC_QUIC_ADDR=relay.example.net:443 \
      chroot --userspec=65532:65532 "$work/root" /usr/local/bin/relay-edge serve \
      >"$work/relay.out" 2>"$work/relay.err" &
    pid=$!
    for _ in $(seq 1 100); do
      curl -fsS "http://127.0.0.1:$http_port/healthz" >/dev/null 2>&1 && break
      kill -0 "$pid" 2>/dev/null || { cat "$work/relay.err" >&2; exit 1; }
      sleep 0.2
    done
    curl -fsS "http://127.0.0.1:$http_port/healthz" | grep -qx ok
    curl -fsS "http://127.0.0.1:$http_port/readyz" | grep -qx ready
    curl -fsS "http://127.0.0.1:$http_port/api/session" | grep -q '"webtransport_url":"https://relay.example.net:443/'
    curl -fsS "http://127.0.0.1:$http_port/" | grep -qi '<!doctype html>'
    # JSON logs, as the image sets.
    head -n 1 "$work/relay.err" | grep -q '^{"timestamp"'
    echo "image $IMAGE: relay-edge serves from its own root filesystem"
    ;;
  *)
    echo "usage: $0 build BINARY | smoke" >&2
    exit 2
    ;;
esac
