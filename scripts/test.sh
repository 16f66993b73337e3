#!/usr/bin/env bash
# Checks formatting and lints, builds every workspace binary (the end-to-end tests run the real
# `adora` and node binaries),
# then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# The lint gate: formatting and clippy (warnings are errors) before anything runs.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The "new" adora of the rolling-upgrade tests (tests/upgrade.rs): same code, another version
# (embedded at build time). Built in the normal profile and copied aside: only the workspace crates
# that report the version rebuild, twice, instead of a whole second profile with all dependencies.
ADORA_VERSION_SUFFIX=-upgrade-test cargo build -p adora-cli --locked
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
mkdir -p "$target_dir/upgrade-test"
cp "$target_dir/debug/adora" "$target_dir/upgrade-test/adora"
cargo build --workspace --bins --locked
# The Python node API (apis/python/node, tests/python.rs, the Python examples): built by maturin
# from this tree and installed into the python3 on PATH, with pyarrow and numpy.
python3 -m pip install --quiet --disable-pip-version-check maturin pyarrow numpy mcap
python3 -m pip install --quiet --disable-pip-version-check --no-build-isolation ./apis/python/node
cargo test --workspace --locked --no-fail-fast "$@"
