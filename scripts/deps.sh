#!/usr/bin/env bash
# Installs what vswitch needs to build and to be tested, on a Debian-like machine, as root.
# Idempotent: apt runs only when something is missing, or always with VSWITCH_APT=always (CI).
set -euo pipefail

# Tools the daemon and the integration tests use: ip/netns (iproute2), ping (iputils-ping),
# arping, sysctl (procps), modprobe (kmod), python3 (raw frames in tests), DHCP clients
# (busybox udhcpc, isc-dhcp-client dhclient), dig/nslookup (dnsutils), a real DNS server for
# the tests to forward to (dnsmasq-base: the binary without a system service), iperf3 and curl (TCP
# through software segmentation), a C and C++ toolchain for crates that build them (g++: the
# fuzz targets' libFuzzer; AF_XDP needs no C
# library: its sockets and rings are the switch's own, ports/xsk.rs). ethtool lets tests check
# the veths' offloads. The
# runtimes' tests run a private podman (CNI backend, runc with cgroupfs: crun refuses this
# machine's hybrid cgroups) on an image made from busybox-static (which replaces busybox and
# keeps `busybox udhcpc`), and a private dockerd (docker.io: Docker's remote-driver tests).
# wireguard-go and wg (wireguard-tools) are the kernel-side WireGuard peer of the encrypted
# overlays' interop test. protoc (protobuf-compiler) builds etcd-client's gRPC code; etcd
# (etcd-server) is the cluster store the cluster tests start, etcdctl (etcd-client) how they
# check and change it, openssl how the TLS test makes its certificates.
PACKAGES=(iproute2 g++ iputils-ping iputils-arping procps kmod python3 busybox-static isc-dhcp-client dnsutils dnsmasq-base iperf3 tcpdump socat gcc pkg-config ca-certificates curl
  make ethtool
  podman runc conmon containernetworking-plugins docker.io wireguard-go wireguard-tools
  protobuf-compiler etcd-server etcd-client openssl)

if [ "$(id -u)" != 0 ]; then
  echo "vswitch: run this as root (it creates TAP devices and network namespaces)" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${VSWITCH_APT:-}" = always ] || [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  # No service starts on install (docker.io would start a system dockerd, with its docker0
  # bridge and iptables rules, on a machine with an init system): the tests run their own.
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get install -y --no-install-recommends "${PACKAGES[@]}"
  if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# TUN/TAP device node.
if [ ! -c /dev/net/tun ]; then
  modprobe tun 2>/dev/null || true
  if [ ! -c /dev/net/tun ]; then
    mkdir -p /dev/net
    mknod /dev/net/tun c 10 200
    chmod 0666 /dev/net/tun
  fi
fi
mkdir -p /run/netns

# Rust toolchain: machines of this kind have one; install rustup's stable otherwise.
if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
