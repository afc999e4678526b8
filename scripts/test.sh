#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run calls it).
# Formatting and lints first, then every Rust test: unit tests of the state machine and storage,
# and the cluster tests in tests/ that start real `distsync` processes (and, for the cache, real
# redis-server processes) on loopback; then the Python, Node and Kotlin SDKs' tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# How long each phase took, to see where CI's time goes.
phase() { echo "test.sh: $1 done at ${SECONDS}s"; }

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
phase clippy
# The cluster tests run the `distsync` binary; build it before they start. The whole workspace,
# with the feature set bindings/generate.sh builds below, so that it rebuilds nothing.
cargo build --workspace
# maturin and the napi CLI build the Python and Node packages alone; they reuse the build above
# only while their features match the workspace's (workspace-features/Cargo.toml says why).
tree() { cargo tree -e normal,build --format "{p} [{f}]" --prefix none --no-dedupe "$@" | sort -u; }
workspace_tree=$(tree --workspace)
for package in distsync-python distsync-node; do
  package_tree=$(tree -p "$package")
  [ -n "$package_tree" ] || { echo "cargo tree -p $package printed nothing" >&2; exit 1; }
  unmatched=$(comm -13 <(echo "$workspace_tree") <(echo "$package_tree"))
  if [ -n "$unmatched" ]; then
    echo "$package resolves features the workspace does not (add them to workspace-features/Cargo.toml):" >&2
    echo "$unmatched" >&2
    exit 1
  fi
done
phase build
cargo test --workspace
phase "Rust tests"

# The fault suite (docs/reliability.md): short seeded runs of every primitive under every fault
# kind, on 3 nodes and on 5; each exits non-zero when a checker finds a violation. As root (CI),
# each node runs in its own network namespace and partitions and packet loss are iptables rules
# (.ci/run installs iproute2 and iptables); otherwise on loopback through the nodes' switch.
network=loopback
if [ "$(id -u)" -eq 0 ]; then network=netns; fi
for run in "--seed 1 --duration 40" "--seed 2 --duration 40" "--seed 3 --duration 30 --nodes 5"; do
  # shellcheck disable=SC2086 # the options are words
  ./target/debug/distsync-torture --network "$network" $run
done
phase "fault suite"

# The Python SDK: built into a virtualenv the way `pip install ./python` builds it (maturin;
# with the dev profile here, which reuses the debug build above), then its pytest suite against
# real clusters of the binary built above, each with a real redis-server.
venv=target/python-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q "maturin>=1.16,<2" "pytest>=7" "pytest-timeout>=2"
PATH="$PWD/$venv/bin:$PATH" MATURIN_PEP517_ARGS="--profile dev" \
  "$venv/bin/python" -m pip install -q --no-build-isolation --force-reinstall ./python
DISTSYNC_BIN="$PWD/target/debug/distsync" "$venv/bin/python" -m pytest -q -p no:cacheprovider python/tests
phase Python

# The Node SDK: its devDependencies (@napi-rs/cli, TypeScript) from npm; the addon built by the
# CLI (debug profile, reusing the build above), which also regenerates index.js and index.d.ts:
# the checked-in copies must be current. Then `npm install ./node` into a scratch project, as a
# user would, and the node:test suite against real clusters of the binary built above.
# CARGO: scripts/cargo-for-napi.sh drops the CLI's `--target HOST`, which would compile every
# dependency again.
(cd node && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error &&
  CARGO="$PWD/../scripts/cargo-for-napi.sh" npx napi build --platform)
if ! git diff --quiet -- node/index.js node/index.d.ts; then
  git --no-pager diff --stat -- node/index.js node/index.d.ts
  echo "node/index.js or node/index.d.ts is not what @napi-rs/cli generates: run 'npm run build' in node/ and commit" >&2
  exit 1
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
(cd "$scratch" && npm init -y >/dev/null && npm install --no-audit --no-fund --loglevel=error "$OLDPWD/node" &&
  node -e "const { Client, DistsyncError } = require('distsync'); if (typeof Client.connect !== 'function' || !DistsyncError) process.exit(1)")
# --test-timeout: a lost message fails its test instead of hanging the suite.
(cd node && DISTSYNC_BIN="$PWD/../target/debug/distsync" node --test --test-timeout=180000 test/*.test.js)
phase Node

# The Kotlin and Swift SDKs: regenerated from the library by uniffi-bindgen (the checked-in
# sources must be current), then the Kotlin JUnit suite with Maven (Kotlin, JNA, JUnit from Maven
# Central) against real clusters of the binary built above. The Swift package is generated only:
# there is no Swift toolchain here (bindings/README.md).
bash bindings/generate.sh
if [ -n "$(git status --porcelain -- bindings/kotlin/src/main bindings/swift/Sources)" ]; then
  git status --short -- bindings/kotlin/src/main bindings/swift/Sources
  echo "the generated Kotlin/Swift sources are not current: run 'bash bindings/generate.sh' and commit" >&2
  exit 1
fi
# The Kotlin compiler runs inside Maven's process: its default daemon would outlive the run (a
# 600 MB JVM left behind on the machine, using CPU).
(cd bindings/kotlin && mvn -B -ntp -q test -Dkotlin.compiler.daemon=false)
phase Kotlin
