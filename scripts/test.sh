#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run calls it).
# Formatting and lints first, then every Rust test: unit tests of the state machine and storage,
# and the cluster tests in tests/ that start real `distsync` processes (and, for the cache, real
# redis-server processes) on loopback; then the Python SDK's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The cluster tests run the `distsync` binary; build it before they start.
cargo build -p distsync-server --bin distsync
cargo test --workspace

# The Python SDK: built into a virtualenv the way `pip install ./python` builds it (maturin;
# with the dev profile here, which reuses the debug build above), then its pytest suite against
# real clusters of the binary built above, each with a real redis-server.
venv=target/python-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q "maturin>=1.16,<2" "pytest>=7"
PATH="$PWD/$venv/bin:$PATH" MATURIN_PEP517_ARGS="--profile dev" \
  "$venv/bin/python" -m pip install -q --no-build-isolation --force-reinstall ./python
DISTSYNC_BIN="$PWD/target/debug/distsync" "$venv/bin/python" -m pytest -q -p no:cacheprovider python/tests
