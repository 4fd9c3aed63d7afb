#!/usr/bin/env bash
# What the two commands need on this machine, checked and, where it can be, installed:
#
#   scripts/prereqs.sh dev    what scripts/dev-up.sh needs
#   scripts/prereqs.sh test   that, and what scripts/test.sh needs on top
#
# dev:  a C toolchain (build-essential: the host build links with `cc`, and several
#       crates compile C), clang-14 and llvm-14 (clang-14 and llvm-ar-14 compile QuickJS
#       for wasm32, runtimes/js), the Rust target wasm32-unknown-unknown (the guests),
#       Node.js 20.19 or newer with npm, and the web app's npm packages
#       (browser-client/node_modules, installed with `npm ci` when missing or older than
#       package-lock.json).
# test: also Debian's chromium (the browser tests), PostgreSQL (the system tests run a
#       second time on it, scripts/services.sh), redis-server (the cluster-state tests,
#       relay-edge/tests/cluster_state.rs), pebble (a test ACME CA, relay-edge/tests/acme.rs), python3 (fuzz seeds, fuzz/seeds.py) and
#       the rustfmt and clippy components, iproute2 and nftables (scripts/netns.sh, the
#       fallback tests), nsis and dpkg-dev (the packages, scripts/package-*.sh),
#       dbus-daemon, xvfb, dunst, status-notifier-watcher and gdbus (desktop notifications
#       and the tray icon, desktop-node/tests/notify.rs); its
#       own `npm ci` step installs the npm packages afresh. The
#       other browser engines (firefox-esr, webkit2gtk-driver, xvfb) come from
#       scripts/browsers.sh, which this runs after the packages above.
#
# Debian packages: as root (with apt-get) the missing ones are installed; otherwise the
# script prints the one `sudo apt-get install …` line that installs them and exits 1.
# Rust (rustup) and Node.js are not taken from Debian (its rustc and nodejs are older
# than the project needs): when they are missing or too old the script says where to
# get them and exits 1. Nothing is done when everything is there already.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-dev}
case $MODE in
  dev | test) ;;
  *)
    echo "usage: $0 dev|test" >&2
    exit 2
    ;;
esac
NODE_MIN=20.19.0
WASM_TARGET=wasm32-unknown-unknown

have() { command -v "$1" >/dev/null 2>&1; }

# Debian packages, each with the command that shows it is there.
packages=()
want() { # COMMAND PACKAGE
  have "$1" || packages+=("$2")
}
want cc build-essential
want c++ build-essential
want clang-14 clang-14
want llvm-ar-14 llvm-14
if [ "$MODE" = test ]; then
  want chromium chromium
  want python3 python3
  # The fallback tests drop UDP in a network namespace (scripts/netns.sh).
  want ip iproute2
  want nft nftables
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || packages+=(postgresql)
  # deploy/'s checks: docker-compose (validates the compose file) and systemd-analyze.
  want docker-compose docker-compose
  want systemd-analyze systemd
  python3 -m pip --version >/dev/null 2>&1 || packages+=(python3-pip)
  # The cluster-state tests run redis-server and redis-cli (single and Redis Cluster).
  want redis-server redis-server
  want redis-cli redis-tools
  # The ACME test (relay-edge/tests/acme.rs) orders certificates from pebble, a test CA.
  want pebble pebble
  # The packages (scripts/package-*.sh): makensis compiles the Windows installer,
  # dpkg-shlibdeps gives the .deb its Depends.
  want makensis nsis
  want dpkg-shlibdeps dpkg-dev
  # Desktop notifications (desktop-node/tests/notify.rs): a real notification daemon
  # (dunst) on a private session bus and X server the test starts.
  want dbus-daemon dbus-daemon
  want Xvfb xvfb
  want dunst dunst
  # The tray icon's test: a StatusNotifierWatcher, and gdbus to act as the panel.
  want status-notifier-watcher haskell-status-notifier-item-utils
  want gdbus libglib2.0-bin
fi
# One name each, in a stable order.
mapfile -t packages < <(printf '%s\n' "${packages[@]}" | awk 'NF && !seen[$0]++')

if [ ${#packages[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && have apt-get; then
    echo "==> installing ${packages[*]} (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
  elif have apt-get; then
    echo "missing Debian packages: ${packages[*]}. Install them with:" >&2
    echo "  sudo apt-get install ${packages[*]}" >&2
    echo "then run $0 $MODE again (or the command that called it)." >&2
    exit 1
  else
    echo "missing: ${packages[*]} (Debian package names; install their equivalents)" >&2
    exit 1
  fi
fi

# Rust: rustup's toolchain, not Debian's (Cargo.lock needs a newer rustc).
if ! have cargo; then
  echo "Rust is missing: install it with rustup (https://rustup.rs), then open a new shell" >&2
  exit 1
fi
if have rustup; then
  if ! rustup target list --installed 2>/dev/null | grep -qx "$WASM_TARGET"; then
    echo "==> rustup target add $WASM_TARGET"
    rustup target add "$WASM_TARGET"
  fi
  if [ "$MODE" = test ]; then
    for component in rustfmt clippy; do
      if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
        echo "==> rustup component add $component"
        rustup component add "$component"
      fi
    done
  fi
elif ! [ -d "$(rustc --print sysroot)/lib/rustlib/$WASM_TARGET" ]; then
  echo "the Rust target $WASM_TARGET is missing and rustup is not here to add it" >&2
  exit 1
fi

# Node.js: 20.19 or newer (browser-client/package.json, engines).
if ! have node || ! have npm; then
  echo "Node.js $NODE_MIN or newer (with npm) is missing: install it from https://nodejs.org" \
    "(Debian 12's nodejs is 18, too old)" >&2
  exit 1
fi
if ! node -e '
  const [want, have] = [process.argv[1], process.versions.node].map((v) => v.split(".").map(Number));
  const older = want[0] - have[0] || want[1] - have[1] || want[2] - have[2];
  process.exit(older > 0 ? 1 : 0);' "$NODE_MIN"; then
  echo "Node.js $(node --version) is too old: the web app needs $NODE_MIN or newer (https://nodejs.org)" >&2
  exit 1
fi

# Python tools from PyPI: moto's S3-compatible server (scripts/services.sh, the bundle
# storage test) and kubernetes-validate (deploy/kubernetes/, offline schemas).
if [ "$MODE" = test ]; then
  pip_tools=()
  have moto_server || pip_tools+=('moto[server]')
  have kubernetes-validate || pip_tools+=(kubernetes-validate)
  if [ ${#pip_tools[@]} -gt 0 ]; then
    echo "==> pip install ${pip_tools[*]}"
    # Debian's own python3 refuses system-wide installs without the flag (PEP 668).
    python3 -m pip install --quiet "${pip_tools[@]}" 2>/dev/null ||
      python3 -m pip install --quiet --break-system-packages "${pip_tools[@]}"
  fi
fi

# The other browser engines the browser flows run in (Firefox ESR, WebKitGTK).
if [ "$MODE" = test ]; then
  scripts/browsers.sh
fi

# The web app's packages (dev-up builds it; test.sh runs its own `npm ci`).
if [ "$MODE" = dev ]; then
  lock=browser-client/package-lock.json
  installed=browser-client/node_modules/.package-lock.json
  if [ ! -f "$installed" ] || [ "$lock" -nt "$installed" ]; then
    echo "==> npm ci (browser-client)"
    (cd browser-client && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
