#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run calls it).
# Formatting and lints first, then every Rust test: unit tests of the state machine and storage,
# and the cluster tests in tests/ that start real `distsync` processes (and, for the cache, real
# redis-server processes) on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The cluster tests run the `distsync` binary; build it before they start.
cargo build -p distsync-server --bin distsync
cargo test --workspace
