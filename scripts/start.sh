#!/usr/bin/env bash
# Builds vswitch and runs vswitchd in the foreground on configs/default.toml.
# Extra arguments go to vswitchd (e.g. --log-level debug). Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
cargo build --release --workspace
# Shell completions and man pages for vswitchctl, from its own definitions (scripts/install.sh
# installs everything, the service included).
ctl=target/release/vswitchctl
for d in /usr/local/share/bash-completion/completions /usr/local/share/zsh/site-functions \
    /usr/local/share/fish/vendor_completions.d /usr/local/share/man/man1; do mkdir -p "$d"; done
"$ctl" completion bash > /usr/local/share/bash-completion/completions/vswitchctl
"$ctl" completion zsh > /usr/local/share/zsh/site-functions/_vswitchctl
"$ctl" completion fish > /usr/local/share/fish/vendor_completions.d/vswitchctl.fish
"$ctl" man --dir /usr/local/share/man/man1
echo "vswitchd starting; in another shell: target/release/vswitchctl show" >&2
exec target/release/vswitchd --config configs/default.toml "$@"
