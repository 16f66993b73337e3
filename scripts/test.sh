#!/usr/bin/env bash
# Builds every workspace binary (the end-to-end tests run the real `adora` and node binaries),
# then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins --locked
# The "new" adora of the rolling-upgrade test (tests/cluster_ops.rs): same code, another version.
ADORA_VERSION_SUFFIX=-upgrade-test cargo build -p adora-cli --profile upgrade-test --locked
cargo test --workspace --locked --no-fail-fast "$@"
