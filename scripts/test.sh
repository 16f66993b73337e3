#!/usr/bin/env bash
# Builds every workspace binary (the end-to-end tests run the real `adora` and node binaries),
# then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins --locked
cargo test --workspace --locked --no-fail-fast "$@"
