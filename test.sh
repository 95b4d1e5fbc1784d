#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, checks formatting
# (rustfmt.toml) and clippy's lints, builds, runs unit
# and end-to-end tests (the e2e tests drive the real binary; some need
# root, which CI has).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
# Style and lints first: they take seconds and fail before the long part.
cargo fmt --all -- --check
cargo clippy --release --locked --workspace --all-targets -- -D warnings
cargo build --release --locked -p lifeboat
export LIFEBOAT_BIN=$PWD/target/release/lifeboat
cargo test --release --locked --workspace --no-fail-fast -- --test-threads=2
