#!/usr/bin/env bash
# Runs every test: unit tests and the integration tests against real namespaces (needs root).
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
cargo build --workspace --all-targets
cargo test --workspace "$@"
