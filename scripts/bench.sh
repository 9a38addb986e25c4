#!/usr/bin/env bash
# Builds vswitch in release mode and runs vswitch-bench side by side with the Linux bridge and
# Open vSwitch (userspace datapath). Extra arguments go to vswitch-bench (e.g. --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
# The peers and the traffic tools (nft counts frames at the receiver's interface).
BENCH_PACKAGES=(iperf3 openvswitch-switch ethtool nftables socat wireguard-go wireguard-tools etcd-server etcd-client)
missing=()
for p in "${BENCH_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
# Debian starts its own OVS service on install; the bench runs its own instances and needs none.
cargo build --release --workspace
exec target/release/vswitch-bench "$@"
