#!/usr/bin/env bash
# Builds vswitch and runs vswitchd in the foreground on configs/default.toml.
# Extra arguments go to vswitchd (e.g. --log-level debug). Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
cargo build --release --workspace
echo "vswitchd starting; in another shell: target/release/vswitchctl show" >&2
exec target/release/vswitchd --config configs/default.toml "$@"
