// swift-tools-version: 6.1
// Orrery: a decentralized compute network. One package; every service is a library target holding its logic
// (what tests import) plus a thin executable.
import Foundation
import PackageDescription

/// Every one of our targets builds without warnings; CI (`.ci/run` sets `ORRERY_WARNINGS_AS_ERRORS=1`) holds it to
/// that. Dependencies' warnings are SwiftPM's to suppress, not ours to fix.
let warningsAsErrors: [SwiftSetting] =
    ProcessInfo.processInfo.environment["ORRERY_WARNINGS_AS_ERRORS"] == "1"
    ? [.unsafeFlags(["-warnings-as-errors"])] : []

let upcomingFeatures: [SwiftSetting] =
    [
        .enableUpcomingFeature("ExistentialAny"),
        .enableUpcomingFeature("InternalImportsByDefault"),
        .enableUpcomingFeature("MemberImportVisibility"),
    ] + warningsAsErrors

/// This manifest's directory: the linker runs elsewhere.
let packageDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().path
/// The device agent's release link on Linux. lld places the code a profiled agent ran side by side before the rest of
/// the text (the linker script `hot-code.ld`, written by `make agent-hot-code`), so the pages an agent touches are
/// few: start-up and idle code is otherwise spread over the whole text, each page fault mapping its 64 KiB
/// neighbourhood too. A section the script names that the build no longer has matches nothing: a stale script costs
/// memory, never correctness.
let agentHotCodeLink: LinkerSetting = .unsafeFlags(
    ["-use-ld=lld", "-Xlinker", "-T\(packageDirectory)/Services/DeviceAgent/Executable/hot-code.ld"],
    .when(platforms: [.linux], configuration: .release))

let grpcCore = Target.Dependency.product(name: "GRPCCore", package: "grpc-swift-2")
let grpcProtobuf = Target.Dependency.product(name: "GRPCProtobuf", package: "grpc-swift-protobuf")
let grpcPosix = Target.Dependency.product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport")
let swiftProtobuf = Target.Dependency.product(name: "SwiftProtobuf", package: "swift-protobuf")
let argumentParser = Target.Dependency.product(name: "ArgumentParser", package: "swift-argument-parser")
let logging = Target.Dependency.product(name: "Logging", package: "swift-log")
let metrics = Target.Dependency.product(name: "Metrics", package: "swift-metrics")
let prometheus = Target.Dependency.product(name: "Prometheus", package: "swift-prometheus")
let lifecycle = Target.Dependency.product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
let unixSignals = Target.Dependency.product(name: "UnixSignals", package: "swift-service-lifecycle")
let configuration = Target.Dependency.product(name: "Configuration", package: "swift-configuration")
let hummingbird = Target.Dependency.product(name: "Hummingbird", package: "hummingbird")
let hummingbirdTLS = Target.Dependency.product(name: "HummingbirdTLS", package: "hummingbird")
let postgres = Target.Dependency.product(name: "PostgresNIO", package: "postgres-nio")
// The connection pool under PostgresClient: only for the error it throws when no connection can be made.
let postgresPool = Target.Dependency.product(name: "_ConnectionPoolModule", package: "postgres-nio")
let crypto = Target.Dependency.product(name: "Crypto", package: "swift-crypto")
let systemPackage = Target.Dependency.product(name: "SystemPackage", package: "swift-system")
let yams = Target.Dependency.product(name: "Yams", package: "Yams")
let nioHTTP: [Target.Dependency] = [
    .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
    .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "NIOSSL", package: "swift-nio-ssl"),
]

/// A service: its library (logic, tested) and its thin executable.
func service(_ library: String, executable: String, folder: String, extra: [Target.Dependency] = []) -> [Target] {
    [
        .target(
            name: library,
            dependencies: [
                "OrreryRuntime", "OrreryRuntimeCore", "OrreryDatabase", "OrreryProto", "OrreryAuth", "OrreryIdentity",
                grpcCore, logging, postgres, swiftProtobuf, argumentParser, configuration,
            ] + extra,
            path: "Services/\(folder)/Library",
            swiftSettings: upcomingFeatures
        ),
        .executableTarget(
            name: executable,
            dependencies: [
                .target(name: library), "OrreryRuntime", "OrreryIdentity", "OrreryProto", argumentParser, swiftProtobuf,
            ],
            path: "Services/\(folder)/Executable",
            swiftSettings: upcomingFeatures
        ),
    ]
}

let package = Package(
    name: "orrery",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "identity", targets: ["identity"]),
        .executable(name: "registry", targets: ["registry"]),
        .executable(name: "orchestrator", targets: ["orchestrator"]),
        .executable(name: "contract-notary", targets: ["contract-notary"]),
        .executable(name: "settlement-gateway", targets: ["settlement-gateway"]),
        .executable(name: "device-agent", targets: ["device-agent"]),
        .executable(name: "orrery", targets: ["orrery"]),
        .executable(name: "orrery-fleet", targets: ["orrery-fleet"]),
    ],
    dependencies: [
        .package(url: "https://github.com/grpc/grpc-swift-2", exact: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", exact: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", exact: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf", exact: "1.39.0", traits: []),
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", exact: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", exact: "2.13.0"),
        // No traits: its JSON file provider imports all of Foundation (ICU); our own reads the JSON file.
        .package(url: "https://github.com/apple/swift-configuration", exact: "1.4.0", traits: []),
        .package(url: "https://github.com/apple/swift-crypto", exact: "4.5.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", exact: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", exact: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", exact: "2.28.1"),
        .package(url: "https://github.com/vapor/postgres-nio", exact: "1.33.2"),
        .package(url: "https://github.com/apple/swift-system", exact: "1.8.1"),
        .package(url: "https://github.com/jpsim/Yams", exact: "6.2.2"),
        .package(url: "https://github.com/apple/swift-nio", exact: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl", exact: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-http2", exact: "1.46.0"),
    ],
    targets: [
        // Code generated by `make proto` from Protos/ (committed), plus the descriptor set for reflection.
        .target(
            name: "OrreryProto",
            dependencies: [grpcCore, grpcProtobuf, swiftProtobuf],
            path: "Shared/OrreryProto",
            swiftSettings: upcomingFeatures
        ),
        // What every process shares, server or edge: settings sources and readers, logging, client links, health,
        // reflection, gRPC metrics, ready files, crash points. No PostgreSQL, no HTTP framework, no full Foundation
        // (the device agent links it).
        .target(
            name: "OrreryRuntimeCore",
            dependencies: [
                "OrreryBasics", "OrreryProto", "OrreryAuth", "OrreryIdentity", grpcCore, grpcPosix, grpcProtobuf,
                swiftProtobuf, argumentParser, logging, metrics, prometheus, configuration, systemPackage, unixSignals,
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Shared/OrreryRuntimeCore",
            swiftSettings: upcomingFeatures
        ),
        // The server runtime of the five database-backed services: typed settings, the gRPC server with its
        // capability interceptor and PostgreSQL replay guard, the HTTP listener (Hummingbird), migrations, lifecycle.
        .target(
            name: "OrreryRuntime",
            dependencies: [
                "OrreryRuntimeCore", "OrreryProto", "OrreryDatabase", "OrreryAuth", "OrreryIdentity", "CMallocControl",
                grpcCore, grpcPosix, grpcProtobuf, swiftProtobuf, argumentParser, logging, metrics, prometheus,
                lifecycle, unixSignals, configuration, hummingbird, hummingbirdTLS, postgres, postgresPool, systemPackage,
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
            ],
            path: "Shared/OrreryRuntime",
            swiftSettings: upcomingFeatures
        ),
        // Foundation-free helpers for the targets the device agent links: the C library, trimming, C formatting.
        .target(name: "OrreryBasics", path: "Shared/OrreryBasics", swiftSettings: upcomingFeatures),
        // The system zlib (gzip in the UCAN container).
        .target(name: "CZlib", path: "Shared/CZlib"),
        // The system zstd (zstd-compressed image layers).
        .target(name: "CZstd", path: "Shared/CZstd"),
        // OCI images on the device: references, manifests and platforms, a Distribution API (v2) client with token
        // authentication, a content-addressed blob store, layers unpacked safely into a shared read-only root.
        .target(
            name: "OrreryOCI",
            dependencies: [
                "OrreryBasics", "OrreryHTTPClient", "CZlib", "CZstd", crypto,
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Shared/OrreryOCI", swiftSettings: upcomingFeatures),
        // Workloads' data: input sources (https, s3, oci) and their rules, S3 presigned URLs (SigV4).
        .target(
            name: "OrreryData", dependencies: ["OrreryBasics", "OrreryOCI", crypto], path: "Shared/OrreryData",
            swiftSettings: upcomingFeatures),
        // glibc's allocator statistics and malloc_trim, for handing freed heap pages back to the system.
        .target(name: "CMallocControl", path: "Shared/CMallocControl"),
        // The chain adapters' C libraries from the system: secp256k1 ECDSA, the Keccak permutation, BLAKE2b.
        .target(name: "CSecp256k1", path: "Shared/CSecp256k1"),
        .target(name: "CNettle", path: "Shared/CNettle"),
        .target(name: "CSodium", path: "Shared/CSodium"),
        // Ethereum without a node: keccak-256, secp256k1 keys, RLP, ABI, EIP-712, EIP-1559, a JSON-RPC client.
        .target(
            name: "OrreryEthereum", dependencies: ["CSecp256k1", "CNettle", "OrreryIdentity", "OrreryHTTPClient"],
            path: "Shared/OrreryEthereum",
            swiftSettings: upcomingFeatures),
        // A small HTTP/1.1 client (plain or TLS) over SwiftNIO, for chain nodes' JSON-RPC and submit endpoints.
        .target(
            name: "OrreryHTTPClient", dependencies: nioHTTP, path: "Shared/OrreryHTTPClient",
            swiftSettings: upcomingFeatures),
        // Cardano without a node: BLAKE2b, bech32 CIP-19 addresses, CBOR, CIP-8 COSE_Sign1, signed transactions.
        .target(
            name: "OrreryCardano", dependencies: ["CSodium", "OrreryHTTPClient", crypto], path: "Shared/OrreryCardano",
            swiftSettings: upcomingFeatures),
        // Identity and trust: did:key, signing keys, the Signed envelope, DAG-CBOR, UCAN 1.0 capabilities.
        .target(
            name: "OrreryIdentity",
            dependencies: ["OrreryBasics", "OrreryProto", "CZlib", crypto, swiftProtobuf],
            path: "Shared/OrreryIdentity",
            swiftSettings: upcomingFeatures
        ),
        // Zero trust on every RPC: the capability interceptor, replay guards, revocations, invocation signing.
        .target(
            name: "OrreryAuth",
            dependencies: ["OrreryBasics", "OrreryIdentity", "OrreryProto", grpcCore, swiftProtobuf, logging, crypto],
            path: "Shared/OrreryAuth",
            swiftSettings: upcomingFeatures
        ),
        // PostgreSQL access: connection settings and versioned, per-schema migrations.
        .target(
            name: "OrreryDatabase",
            dependencies: [postgres, logging, lifecycle, crypto],
            path: "Shared/OrreryDatabase",
            swiftSettings: upcomingFeatures
        ),
        // The append-only log's Merkle tree (RFC 6962 / 9162): hashing, proofs and their verification. Pure.
        .target(
            name: "OrreryLedger",
            dependencies: ["OrreryBasics", "OrreryIdentity", "OrreryProto", crypto, swiftProtobuf],
            path: "Shared/OrreryLedger", swiftSettings: upcomingFeatures),
        // Actors (DESIGN §5): addresses and signed envelopes, and the receiving side's checks.
        .target(
            name: "OrreryActors",
            dependencies: ["OrreryBasics", "CSodium", "OrreryIdentity", "OrreryProto", crypto, swiftProtobuf],
            path: "Shared/OrreryActors", swiftSettings: upcomingFeatures),
        // Placement: a pure library (no I/O) that filters, ranks and jointly solves where an ensemble runs.
        .target(name: "OrreryPlacement", path: "Shared/OrreryPlacement", swiftSettings: upcomingFeatures),
        // What the CLI shares with a service, without linking the service: the workload spec file's reader, and the
        // text an address signs to be bound to a DID.
        .target(
            name: "OrreryWorkloadSpec", dependencies: ["OrreryProto", swiftProtobuf, yams],
            path: "Shared/OrreryWorkloadSpec", swiftSettings: upcomingFeatures),
        // The settlement gateway's `Operate` stream as a client sees it (the orchestrator's clerk, the benchmark).
        .target(
            name: "OrrerySettlementClient", dependencies: ["OrreryProto", "OrreryAuth", grpcCore, swiftProtobuf],
            path: "Shared/OrrerySettlementClient", swiftSettings: upcomingFeatures),
        .target(
            name: "OrreryAddressBinding", dependencies: ["OrreryEthereum"], path: "Shared/OrreryAddressBinding",
            swiftSettings: upcomingFeatures),
        // Helpers for tests: throwaway databases, child processes, ready files.
        .target(
            name: "OrreryTestSupport",
            dependencies: [
                "OrreryDatabase", "OrreryRuntime", "OrreryIdentity", "OrreryOCI", "OrreryHTTPClient", grpcCore, logging,
                postgres, argumentParser,
            ],
            path: "Shared/OrreryTestSupport",
            swiftSettings: upcomingFeatures
        ),
        .executableTarget(
            name: "orrery",
            dependencies: [
                "OrreryRuntimeCore", "OrreryProto", "OrreryIdentity", "OrreryAuth", "OrreryWorkloadSpec",
                "OrreryLedger", "OrreryOCI", "OrreryData", "OrreryHTTPClient",
                "OrreryEthereum", "OrreryCardano", "OrreryAddressBinding", argumentParser,
                grpcCore, grpcPosix, grpcProtobuf, swiftProtobuf, crypto,
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            path: "Tools/orrery",
            swiftSettings: upcomingFeatures
        ),
        // The measurements behind `make bench` (a release build).
        .executableTarget(
            name: "orrery-bench",
            dependencies: [
                "OrreryRuntime", "OrreryProto", "OrreryIdentity", "OrreryAuth", "OrreryPlacement", "OrreryLedger",
                "OrreryEthereum", "OrreryCardano", "OrrerySettlementClient", "OrreryOCI", "OrreryData",
                "OrreryHTTPClient", "DeviceAgent",
                argumentParser, grpcCore, grpcPosix,
                swiftProtobuf, logging, crypto,
            ],
            path: "Tools/bench",
            swiftSettings: upcomingFeatures
        ),
        // `orrery-fleet`: many simulated devices in one process, speaking the real protocols (a release build in
        // `make bench`).
        .executableTarget(
            name: "orrery-fleet",
            dependencies: [
                "OrreryRuntimeCore", "OrreryProto", "OrreryIdentity", "OrreryAuth", "DeviceAgent", argumentParser,
                grpcCore, grpcPosix, swiftProtobuf, crypto, unixSignals,
            ],
            path: "Tools/fleet",
            swiftSettings: upcomingFeatures
        ),
        .testTarget(
            name: "OrreryRuntimeTests",
            dependencies: [
                "OrreryRuntime", "OrreryRuntimeCore", "OrreryAuth", "OrreryProto", "OrreryDatabase", "OrreryIdentity",
                "OrreryTestSupport",
                grpcCore,
                grpcPosix, configuration, logging, swiftProtobuf, argumentParser,
                postgres, postgresPool, .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Tests/OrreryRuntimeTests",
            swiftSettings: upcomingFeatures
        ),
        .testTarget(
            name: "OrreryAuthTests",
            dependencies: ["OrreryAuth", "OrreryIdentity", "OrreryProto", grpcCore, logging, swiftProtobuf],
            path: "Tests/OrreryAuthTests",
            swiftSettings: upcomingFeatures
        ),
        .testTarget(
            name: "OrreryIdentityTests",
            dependencies: ["OrreryIdentity", "OrreryProto", "OrreryTestSupport", swiftProtobuf, crypto],
            path: "Tests/OrreryIdentityTests",
            swiftSettings: upcomingFeatures
        ),
        .testTarget(
            name: "DeviceAgentTests",
            dependencies: [
                "DeviceAgent", "OrreryActors", "OrreryBasics", "OrreryIdentity", "OrreryPlacement", "OrreryTestSupport",
                "OrreryProto", "OrreryOCI", "OrreryHTTPClient", logging, swiftProtobuf,
            ],
            path: "Tests/DeviceAgentTests",
            swiftSettings: upcomingFeatures
        ),
        .testTarget(
            name: "OrreryOCITests",
            dependencies: ["OrreryOCI", "OrreryData", "OrreryBasics", "OrreryHTTPClient", "OrreryTestSupport", crypto],
            path: "Tests/OrreryOCITests",
            swiftSettings: upcomingFeatures
        ),
        .testTarget(
            name: "OrreryPlacementTests",
            dependencies: ["OrreryPlacement"],
            path: "Tests/OrreryPlacementTests",
            swiftSettings: upcomingFeatures
        ),
        .testTarget(
            name: "OrreryActorsTests",
            dependencies: ["OrreryActors", "OrreryIdentity", "OrreryProto", swiftProtobuf],
            path: "Tests/OrreryActorsTests",
            swiftSettings: upcomingFeatures
        ),
        .testTarget(
            name: "OrreryChainTests",
            dependencies: ["OrreryEthereum", "OrreryCardano", "OrreryIdentity", "OrreryTestSupport", crypto],
            path: "Tests/OrreryChainTests",
            swiftSettings: upcomingFeatures
        ),
        .testTarget(
            name: "OrreryLedgerTests",
            dependencies: ["OrreryLedger", "OrreryIdentity", "OrreryProto", swiftProtobuf],
            path: "Tests/OrreryLedgerTests",
            swiftSettings: upcomingFeatures
        ),
        .testTarget(
            name: "OrreryDatabaseTests",
            dependencies: ["OrreryDatabase", "OrreryTestSupport", postgres, logging],
            path: "Tests/OrreryDatabaseTests",
            swiftSettings: upcomingFeatures
        ),
        // The orchestrator's decisions as pure functions, and spec files: no database, no process.
        .testTarget(
            name: "OrchestratorServiceTests",
            dependencies: [
                "OrchestratorService", "OrreryPlacement", "OrreryProto", "OrreryTestSupport", "OrreryWorkloadSpec",
                "OrreryIdentity", "OrreryAuth", swiftProtobuf, .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Tests/OrchestratorServiceTests",
            swiftSettings: upcomingFeatures
        ),
        .testTarget(
            name: "EndToEndTests",
            dependencies: [
                "OrreryProto", "OrreryTestSupport", "OrreryRuntime", "OrreryIdentity", "OrreryAuth", "IdentityService",
                "RegistryService",
                "OrchestratorService", "NotaryService", "SettlementService", "DeviceAgent", "OrreryPlacement",
                "OrreryWorkloadSpec", "OrreryAddressBinding", "OrrerySettlementClient",
                "OrreryLedger", "OrreryEthereum", "OrreryCardano", "OrreryOCI", "OrreryData", "OrreryDatabase", crypto,
                grpcCore,
                grpcPosix,
                grpcProtobuf, postgres, argumentParser, swiftProtobuf,
            ],
            path: "Tests/EndToEndTests",
            swiftSettings: upcomingFeatures
        ),
    ]
        + service("IdentityService", executable: "identity", folder: "Identity")
        + service("RegistryService", executable: "registry", folder: "Registry")
        + service(
            "OrchestratorService", executable: "orchestrator", folder: "Orchestrator",
            extra: [
                "OrreryPlacement", "OrreryActors", "OrreryLedger", "OrrerySettlementClient", "OrreryOCI",
                "OrreryData", "OrreryHTTPClient",
                crypto, grpcPosix,
                hummingbird, metrics, .product(name: "NIOHTTP2", package: "swift-nio-http2"),
            ] + nioHTTP)
        + service("NotaryService", executable: "contract-notary", folder: "Notary", extra: ["OrreryLedger", crypto])
        + service(
            "SettlementService", executable: "settlement-gateway", folder: "Settlement",
            extra: [
                "OrreryLedger", "OrreryEthereum", "OrreryCardano", "OrreryAddressBinding", crypto, hummingbird, metrics,
                .product(name: "NIOCore", package: "swift-nio"),
            ])
        + [
            // The edge agent links only what it uses: the core runtime (no PostgreSQL, no HTTP framework) and
            // Foundation's essentials (no ICU).
            .target(
                name: "DeviceAgent",
                dependencies: [
                    "OrreryBasics", "OrreryRuntimeCore", "OrreryProto", "OrreryAuth", "OrreryIdentity",
                    "OrreryPlacement", "OrreryLedger", "OrreryActors", "OrreryOCI", "OrreryData", "OrreryHTTPClient",
                    "CZlib", crypto,
                    grpcCore, grpcPosix, logging,
                    metrics, prometheus, lifecycle, unixSignals, swiftProtobuf, argumentParser, configuration,
                    .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                ],
                path: "Services/DeviceAgent/Library",
                swiftSettings: upcomingFeatures
            ),
            .executableTarget(
                name: "device-agent",
                dependencies: [
                    "DeviceAgent", "OrreryBasics", "OrreryRuntimeCore", "OrreryIdentity", "OrreryProto", argumentParser,
                    swiftProtobuf,
                ],
                path: "Services/DeviceAgent/Executable",
                // The linker script release builds pack the hot code with (`agentHotCodeLink`): not a source.
                exclude: ["hot-code.ld"],
                swiftSettings: upcomingFeatures,
                // With the Swift runtime linked statically, its link arguments export every symbol
                // (`-export-dynamic`, for names in crash backtraces): ~59,000 dynamic symbols, 6 MiB of the stripped
                // agent, which the dynamic linker reads through at every start (2.3 MiB resident). The agent
                // exports none: a backtrace of the stripped binary shows addresses, for `addr2line -e` on the
                // unstripped build of the same commit.
                linkerSettings: [
                    .unsafeFlags(["-Xlinker", "--no-export-dynamic"], .when(platforms: [.linux])), agentHotCodeLink,
                ]
            ),
        ],
    swiftLanguageModes: [.v6]
)
