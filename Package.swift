// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Tidepool",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "tidepool", targets: ["tidepool"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        // C view of the system librdkafka (Debian: librdkafka-dev), plus a shim for the
        // parts Swift cannot import (variadic producev, macros with casts).
        .systemLibrary(
            name: "CRdKafka",
            pkgConfig: "rdkafka",
            providers: [.apt(["librdkafka-dev"])]
        ),
        // C view of the system SQLite (Debian: libsqlite3-dev).
        .systemLibrary(
            name: "CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        // Memory primitives Swift cannot express: a CPU cache prefetch hint (`__builtin_prefetch`)
        // for the engine's batched apply, and `mremap` (variadic in C) for `SlotArray`'s growth
        // without copying. No I/O and no effect on results.
        .target(name: "CMemory"),
        // Pure engine: events, decoding, per-partition customer state, trigger rules.
        // No I/O, no clock: every call takes the time it should use.
        .target(
            name: "TidepoolEngine",
            dependencies: ["CMemory"],
            swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]
        ),
        // Thin Swift layer over librdkafka: batch consumer, idempotent producer, mock cluster.
        .target(
            name: "TidepoolKafka",
            dependencies: ["CRdKafka"]
        ),
        // Checkpoints of engine state in SQLite (plain C API, prepared statements, WAL).
        .target(
            name: "TidepoolStore",
            dependencies: ["CSQLite", "TidepoolEngine"]
        ),
        // Daemon wiring: configuration, the processing pipeline, lifecycle, the demo.
        .target(
            name: "TidepoolDaemon",
            dependencies: [
                "TidepoolEngine", "TidepoolKafka", "TidepoolStore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // The operations HTTP endpoint (Hummingbird): /metrics, /healthz, /readyz, /customers, /segments.
        .target(
            name: "TidepoolHTTP",
            dependencies: [
                "TidepoolDaemon", "TidepoolEngine",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "tidepool",
            dependencies: [
                "TidepoolDaemon", "TidepoolHTTP",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "tidepool-bench",
            dependencies: ["TidepoolEngine", "TidepoolStore", "CMemory"],
            path: "Benchmarks/tidepool-bench"
        ),
        .executableTarget(
            name: "tidepool-latency",
            dependencies: ["TidepoolEngine", "TidepoolKafka"],
            path: "Benchmarks/tidepool-latency"
        ),
        .testTarget(name: "TidepoolEngineTests", dependencies: ["TidepoolEngine"]),
        .testTarget(name: "TidepoolStoreTests", dependencies: ["TidepoolStore", "TidepoolEngine"]),
        .testTarget(name: "TidepoolDaemonTests", dependencies: ["TidepoolDaemon", "TidepoolKafka", "TidepoolEngine"]),
    ],
    swiftLanguageModes: [.v5]
)
