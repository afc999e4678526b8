#!/usr/bin/env bash
# Cargo for `napi build` (scripts/test.sh sets CARGO to this script). The napi CLI always passes
# `--target TRIPLE`; naming the host's own triple builds the same code, yet Cargo then keeps host
# and target units apart and compiles every dependency a second time under target/TRIPLE/ (about
# three minutes on two cores). On a Linux host this runs `cargo build` without it, so the addon
# reuses the workspace's build, then hard-links the package's library where the CLI looks for it
# (target/TRIPLE/PROFILE/). Anything else is passed to Cargo untouched.
set -euo pipefail
host=$(rustc -vV | sed -n 's/^host: //p')
case "$host" in *-linux-*) ;; *) exec cargo "$@" ;; esac
args=()
dropped=""
building=""
profile=debug
while [ $# -gt 0 ]; do
  case "$1" in
    --target | --target=*)
      if [ "$1" = --target ]; then triple=${2:-}; skip=2; else triple=${1#--target=}; skip=1; fi
      if [ "$triple" = "$host" ]; then dropped=$triple; shift "$skip"; continue; fi ;;
    build) building=yes ;;
    --release | -r) profile=release ;;
    --profile=*) profile=${1#--profile=} ;;
    --profile) profile=${2:-dev} ;;
  esac
  args+=("$1")
  shift
done
case "$profile" in dev | test) profile=debug ;; bench) profile=release ;; esac
cargo "${args[@]}"
[ -n "$building" ] && [ -n "$dropped" ] || exit 0
metadata=$(cargo metadata --no-deps --format-version 1)
target_dir=${CARGO_TARGET_DIR:-$(echo "$metadata" | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')}
# The package in this directory (the CLI runs Cargo in the crate's folder), by its library name.
library=$(echo "$metadata" | python3 -c '
import json, os, sys
here = os.path.realpath("Cargo.toml")
for package in json.load(sys.stdin)["packages"]:
    if os.path.realpath(package["manifest_path"]) == here:
        print("lib" + next(t["name"] for t in package["targets"] if "cdylib" in t["kind"]).replace("-", "_") + ".so")
')
[ -n "$library" ] || { echo "cargo-for-napi.sh: no cdylib package in $PWD" >&2; exit 1; }
mkdir -p "$target_dir/$dropped/$profile"
ln -f "$target_dir/$profile/$library" "$target_dir/$dropped/$profile/$library"
