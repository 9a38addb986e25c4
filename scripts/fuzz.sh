#!/usr/bin/env bash
# Runs every cargo-fuzz target for a short budget on its committed corpus (fuzz/corpus/TARGET),
# after replaying fuzz/regressions/TARGET. A crash fails the script; its input is left in
# fuzz/artifacts/TARGET/.
#   scripts/fuzz.sh              every target, FUZZ_SECONDS (default 25) each
#   scripts/fuzz.sh dhcp dns     only these
# New inputs libFuzzer finds go to a scratch directory, not the committed corpus (set
# FUZZ_GROW_CORPUS=1 to add them to fuzz/corpus instead).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-25}
TARGETS=(pipeline nat control_request dhcp dns offload vxlan trace ipvlan wireguard)
if [ $# -gt 0 ]; then TARGETS=("$@"); fi

# CI machines are fresh: a nightly toolchain and cargo-fuzz may be missing.
if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

cd fuzz
for t in "${TARGETS[@]}"; do
    cargo +nightly fuzz build -O "$t"
done
for t in "${TARGETS[@]}"; do
    mkdir -p "artifacts/$t"
    if [ -d "regressions/$t" ] && [ -n "$(ls -A "regressions/$t")" ]; then
        echo "== $t: replaying regressions"
        cargo +nightly fuzz run -O "$t" "regressions/$t"/* -- -runs=0
    fi
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    corpus=("$scratch" "corpus/$t")
    if [ "${FUZZ_GROW_CORPUS:-0}" = 1 ]; then corpus=("corpus/$t"); fi
    echo "== $t: fuzzing for ${SECONDS_EACH}s"
    cargo +nightly fuzz run -O "$t" "${corpus[@]}" -- \
        -max_total_time="$SECONDS_EACH" -max_len=16384 -rss_limit_mb=2048 -print_final_stats=1
    rm -rf "$scratch"
done
echo "fuzz: every target ran ${SECONDS_EACH}s without a crash"
