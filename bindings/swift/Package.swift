// swift-tools-version:5.9
// The Swift SDK: the sources bindings/generate.sh generates (Sources/Distsync, and the C target
// Sources/DistsyncFFI with the FFI header) over the distsync_bindings library, and an XCTest
// suite against a real cluster. Build the library first:
//
//     cargo build --release -p distsync-bindings -p distsync-cli
//     DISTSYNC_TARGET=../../target/release swift test
//
// (see bindings/README.md; this repository's CI machine has no Swift toolchain).
import Foundation
import PackageDescription

let target = ProcessInfo.processInfo.environment["DISTSYNC_TARGET"] ?? "../../target/release"

let package = Package(
    name: "Distsync",
    platforms: [.macOS(.v12), .iOS(.v15)],
    products: [
        .library(name: "Distsync", targets: ["Distsync"]),
    ],
    targets: [
        .target(
            name: "DistsyncFFI",
            path: "Sources/DistsyncFFI",
            linkerSettings: [
                .linkedLibrary("distsync_bindings"),
                .unsafeFlags(["-L\(target)"]),
            ]
        ),
        .target(name: "Distsync", dependencies: ["DistsyncFFI"], path: "Sources/Distsync"),
        .testTarget(name: "DistsyncTests", dependencies: ["Distsync"], path: "Tests/DistsyncTests"),
    ]
)
