#!/usr/bin/env bash
# Cargo for `napi build` (scripts/test.sh sets CARGO to this script). The napi CLI always passes
# `--target TRIPLE`; naming the host's own triple builds the same code, yet Cargo then keeps host
# and target units apart and compiles every dependency a second time under target/TRIPLE/ (about
# three minutes on two cores). This runs Cargo without it, so the addon reuses the workspace's
# build, then links the libraries where the CLI looks for them (target/TRIPLE/PROFILE/).
# Any other target is passed through untouched.
set -euo pipefail
host=$(rustc -vV | sed -n 's/^host: //p')
args=()
dropped=""
profile=debug
while [ $# -gt 0 ]; do
  case "$1" in
    --target)
      if [ "${2:-}" = "$host" ]; then dropped=$2; shift 2; continue; fi ;;
    --release) profile=release ;;
    --profile)
      case "${2:-}" in dev | test) profile=debug ;; release | bench) profile=release ;; *) profile=$2 ;; esac ;;
  esac
  args+=("$1")
  shift
done
cargo "${args[@]}"
[ "${args[0]:-}" = build ] && [ -n "$dropped" ] || exit 0
target_dir=${CARGO_TARGET_DIR:-$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')}
mkdir -p "$target_dir/$dropped/$profile"
ln -f "$target_dir/$profile"/lib*.so "$target_dir/$dropped/$profile/"
