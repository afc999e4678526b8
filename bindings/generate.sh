#!/usr/bin/env bash
# Regenerates the Kotlin and Swift sources from the compiled distsync_bindings library, with
# uniffi-bindgen built at the workspace's uniffi version. The output is checked in; CI runs this
# and fails if it changed anything (scripts/test.sh).
#
#   bash bindings/generate.sh            # debug build of the library
#   PROFILE=release bash bindings/generate.sh
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${PROFILE:-dev}
# The whole workspace, so that the feature set (and so the compiled dependencies) is the one the
# workspace build and tests use.
cargo build --profile "$profile" --workspace
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
dir="$target/$([ "$profile" = dev ] && echo debug || echo "$profile")"
case "$(uname -s)" in
  Darwin) library="$dir/libdistsync_bindings.dylib" ;;
  *) library="$dir/libdistsync_bindings.so" ;;
esac

# Kotlin: one file, package dev.distsync (bindings/uniffi.toml), beside the hand-written
# Deliveries.kt.
kotlin=bindings/kotlin/src/main/kotlin
rm -f "$kotlin/dev/distsync/distsync_bindings.kt"
"$dir/uniffi-bindgen" generate --library "$library" --language kotlin --out-dir "$kotlin" --no-format

# Swift: the Swift module and, for SwiftPM, a C target with the FFI header and its modulemap.
swift_out=$(mktemp -d)
trap 'rm -rf "$swift_out"' EXIT
"$dir/uniffi-bindgen" generate --library "$library" --language swift --out-dir "$swift_out" --no-format
# Sources/Distsync also holds the hand-written Deliveries.swift.
rm -rf bindings/swift/Sources/Distsync/Distsync.swift bindings/swift/Sources/DistsyncFFI
mkdir -p bindings/swift/Sources/Distsync bindings/swift/Sources/DistsyncFFI/include
mv "$swift_out"/*.swift bindings/swift/Sources/Distsync/
mv "$swift_out"/DistsyncFFI.h bindings/swift/Sources/DistsyncFFI/include/
mv "$swift_out"/DistsyncFFI.modulemap bindings/swift/Sources/DistsyncFFI/include/module.modulemap
# SwiftPM needs a source file in a C target.
printf '// The FFI of distsync_bindings is in include/DistsyncFFI.h; the library links at build time.\n' \
  > bindings/swift/Sources/DistsyncFFI/DistsyncFFI.c
echo "generated: $kotlin, bindings/swift/Sources"
