#!/usr/bin/env bash
# A network namespace whose UDP to the relay can really be dropped (nftables), for the
# fallback tests (testkit/tests/fallback.rs) and benches. Root only.
#
#   scripts/netns.sh check                 exit 0 if this machine can do it; else say why, exit 1
#   scripts/netns.sh up NAME INDEX         namespace NAME; veth pair, host side 10.231.INDEX.1/30,
#                                          namespace side 10.231.INDEX.2/30 (INDEX 0-255)
#   scripts/netns.sh block NAME PORT [drop|reject]
#                                          UDP from the namespace to the host's PORT is dropped
#                                          (black hole: no answer, the slow case; default) or
#                                          rejected (ICMP port unreachable: the fast case);
#                                          TCP is untouched
#   scripts/netns.sh unblock NAME          UDP flows again
#   scripts/netns.sh exec NAME CMD...      runs CMD inside the namespace
#   scripts/netns.sh down NAME             removes the namespace, the veth pair and the rules
#
# The rule sits in the host's own namespace, in a table of its own (inet aisa_NAME), on
# the input hook of the host side of the veth pair: a packet the node sends leaves its
# socket normally (no EPERM that a drop on the sender's output hook would give) and is
# never answered, exactly as on a network whose firewall swallows UDP.
# The relay listens on 10.231.INDEX.1 (or 0.0.0.0) in the host namespace; the desktop
# node (and a browser) run inside the namespace and reach it at 10.231.INDEX.1.
set -euo pipefail

cmd=${1:-}
shift || true

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "netns.sh: needs root (network namespaces and nftables rules)" >&2
    exit 1
  fi
}

veth_host() { echo "ah-${1:0:12}"; }
veth_ns() { echo "an-${1:0:12}"; }
table() { echo "aisa_${1//-/_}"; }

case $cmd in
  check)
    if [ "$(id -u)" != 0 ]; then
      echo "not root: network namespaces and nftables rules need root" >&2
      exit 1
    fi
    for tool in ip nft; do
      if ! command -v "$tool" >/dev/null 2>&1; then
        echo "$tool is missing (apt-get install iproute2 nftables; scripts/prereqs.sh test does)" >&2
        exit 1
      fi
    done
    probe="aisa-chk-$$"
    if ! err=$(ip netns add "$probe" 2>&1); then
      echo "cannot create a network namespace: $err" >&2
      exit 1
    fi
    ip netns del "$probe"
    if ! err=$(nft add table inet "aisa_chk_$$" 2>&1); then
      echo "cannot add an nftables table: $err" >&2
      exit 1
    fi
    nft delete table inet "aisa_chk_$$"
    echo ok
    ;;
  up)
    need_root
    name=$1
    index=$2
    host=$(veth_host "$name")
    ns=$(veth_ns "$name")
    # Leftovers of an earlier run that was killed.
    ip netns del "$name" 2>/dev/null || true
    ip link del "$host" 2>/dev/null || true
    nft delete table inet "$(table "$name")" 2>/dev/null || true
    ip netns add "$name"
    ip link add "$host" type veth peer name "$ns"
    ip link set "$ns" netns "$name"
    ip addr add "10.231.$index.1/30" dev "$host"
    ip link set "$host" up
    ip -n "$name" addr add "10.231.$index.2/30" dev "$ns"
    ip -n "$name" link set "$ns" up
    ip -n "$name" link set lo up
    ip -n "$name" route add default via "10.231.$index.1"
    nft add table inet "$(table "$name")"
    nft add chain inet "$(table "$name")" input \
      "{ type filter hook input priority -10; policy accept; }"
    echo "10.231.$index.1 10.231.$index.2"
    ;;
  block)
    need_root
    name=$1
    port=$2
    verdict=${3:-drop}
    case $verdict in
      drop) rule=drop ;;
      reject) rule="reject with icmpx type port-unreachable" ;;
      *)
        echo "netns.sh block: drop or reject, not $verdict" >&2
        exit 2
        ;;
    esac
    nft flush chain inet "$(table "$name")" input
    # shellcheck disable=SC2086 # the rule is several words on purpose
    nft add rule inet "$(table "$name")" input iifname "$(veth_host "$name")" \
      meta l4proto udp udp dport "$port" $rule
    ;;
  unblock)
    need_root
    nft flush chain inet "$(table "$1")" input
    ;;
  exec)
    need_root
    name=$1
    shift
    exec ip netns exec "$name" "$@"
    ;;
  down)
    need_root
    name=$1
    nft delete table inet "$(table "$name")" 2>/dev/null || true
    ip link del "$(veth_host "$name")" 2>/dev/null || true
    ip netns del "$name" 2>/dev/null || true
    ;;
  *)
    sed -n '2,22p' "$0" >&2
    exit 2
    ;;
esac
