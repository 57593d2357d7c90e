import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryAuth
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import OrreryTestSupport
import PostgresNIO
import RegistryService
import SwiftProtobuf
import Testing

/// Devices joining a real registry: proof of key possession, capabilities checked, re-join, leave, refusals.
@Suite(
    "Registry: join", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct RegistryJoinTests {
    /// A device with its owner's delegation, calling a registry.
    struct DeviceClient {
        let key: SigningKey
        let owner: SigningKey
        let chain: [Delegation]

        init(operatorKey: SigningKey, owner: SigningKey = SigningKey(), key: SigningKey = SigningKey()) throws {
            let now = Int64(Date().timeIntervalSince1970)
            let ownerGrant = Delegation.issue(
                by: operatorKey, to: owner.did, subject: operatorKey.did, command: try Command("/orrery/registry"),
                expiration: now + 3600)
            let deviceGrant = Delegation.issue(
                by: owner, to: key.did, subject: operatorKey.did, command: try Command("/orrery/registry"),
                expiration: now + 3600)
            self.key = key
            self.owner = owner
            self.chain = [ownerGrant, deviceGrant]
        }

        func withRegistry<Result: Sendable>(
            _ registry: RunningService,
            _ body: (Orrery_Registry_V1_Registry.Client<HTTP2ClientTransport.Posix>) async throws -> Result
        ) async throws -> Result {
            try await withRegistry(registry.ready, body)
        }

        /// The registry that wrote `registry` as its ready file, called as this device.
        func withRegistry<Result: Sendable>(
            _ registry: ReadyFile,
            _ body: (Orrery_Registry_V1_Registry.Client<HTTP2ClientTransport.Posix>) async throws -> Result
        ) async throws -> Result {
            let catalog = try MethodCatalog(descriptorSet: Data(base64Encoded: OrreryDescriptorSet.base64) ?? Data())
            let signer = InvocationSigner(
                key: key, subject: chain[0].issuer, audience: try DID(registry.did), proofs: chain,
                catalog: catalog)
            return try await withGRPCClient(
                transport: try .http2NIOPosix(
                    target: .ipv4(address: "127.0.0.1", port: registry.grpcPort), transportSecurity: .plaintext),
                interceptors: [signer]
            ) { client in
                try await body(Orrery_Registry_V1_Registry.Client(wrapping: client))
            }
        }

        /// BeginJoin, countersign, CompleteJoin.
        func join(
            _ registry: Orrery_Registry_V1_Registry.Client<HTTP2ClientTransport.Posix>,
            capabilities: Orrery_Registry_V1_DeviceCapabilities,
            key idempotencyKey: String = UUID().uuidString
        ) async throws -> Orrery_Registry_V1_Device {
            var challenge = try await registry.beginJoin(.with { $0.deviceDid = key.did.string }).challenge
            SignedMessage.countersign(&challenge, with: key)
            return try await registry.completeJoin(
                .with {
                    $0.challenge = challenge
                    $0.capabilities = capabilities
                    $0.idempotencyKey = idempotencyKey
                }
            ).device
        }
    }

    static func capabilities(cores: UInt32 = 8, country: String = "DE") -> Orrery_Registry_V1_DeviceCapabilities {
        .with {
            $0.architecture = "x86_64"
            $0.cpuModel = "Test CPU"
            $0.cpuCores = cores
            $0.cpuMhz = 3000
            $0.ramBytes = 32 << 30
            $0.diskBytes = 500 << 30
            $0.gpus = [
                .with {
                    $0.vendor = "NVIDIA"; $0.model = "NVIDIA L4"; $0.vramBytes = 24 << 30
                }
            ]
            $0.os = "Debian GNU/Linux 12"
            $0.kernel = "6.1.0"
            $0.location = .with {
                $0.country = country; $0.region = "Berlin"; $0.latitude = 52.52; $0.longitude = 13.4
            }
            $0.prices = .with {
                $0.perCoreHour = 20; $0.perGbRamHour = 2; $0.perGpuHour = 400; $0.minimumPerJob = 10
            }
            $0.labels = ["tier": "edge"]
        }
    }

    /// A registry built inside the test process (these paths need no process of their own).
    func withRegistry(_ body: (ReadyFile, TestNetwork, TestDatabase) async throws -> Void) async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-registry") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                // Devices here never heartbeat: a long liveness interval keeps them online however slow a loaded
                // machine is (their change log holds only what the test did).
                try await InProcessService.run(
                    RegistryServer.service(RegistrySettings(livenessInterval: .seconds(600))),
                    environment: database.serviceEnvironment.merging(network.environment(for: "registry")) { $1 },
                    directory: directory
                ) { registry in
                    try await body(registry, network, database)
                }
            }
        }
    }

    @Test("join with proof of key possession; re-join updates the same device; a retry returns the first result; leave")
    func joinRejoinLeave() async throws {
        try await withRegistry { registry, network, database in
            let device = try DeviceClient(operatorKey: network.operatorKey)
            try await device.withRegistry(registry) { client in
                let joined = try await device.join(client, capabilities: Self.capabilities(), key: "join-1")
                #expect(joined.did == device.key.did.string)
                #expect(joined.ownerDid == device.owner.did.string)
                #expect(joined.status == .online)
                #expect(joined.capabilities == Self.capabilities())
                #expect(joined.revision > 0)
                #expect(try await client.getDevice(.with { $0.did = device.key.did.string }) == joined)

                // A retry of the same join (a new invocation, the same key) returns the first result.
                var challenge = try await client.beginJoin(.with { $0.deviceDid = device.key.did.string }).challenge
                SignedMessage.countersign(&challenge, with: device.key)
                let retried = try await client.completeJoin(
                    .with {
                        $0.challenge = challenge
                        $0.capabilities = Self.capabilities(cores: 99)
                        $0.idempotencyKey = "join-1"
                    }
                ).device
                #expect(retried == joined)

                let rejoined = try await device.join(client, capabilities: Self.capabilities(cores: 16))
                #expect(rejoined.did == joined.did)
                #expect(rejoined.capabilities.cpuCores == 16)
                #expect(rejoined.revision > joined.revision)
                #expect(rejoined.joinedAt == joined.joinedAt)

                _ = try await client.leave(
                    .with {
                        $0.deviceDid = device.key.did.string; $0.idempotencyKey = "leave-1"
                    })
                #expect(try await client.getDevice(.with { $0.did = device.key.did.string }).status == .left)
            }
            try await database.withClient(schema: "registry") { db in
                let rows = try await db.query("SELECT kind FROM device_changes ORDER BY revision")
                var kinds: [Int] = []
                for try await kind in rows.decode(Int.self) { kinds.append(kind) }
                #expect(kinds == [1, 2, 4])  // joined, updated, left
                let typed = try await db.query("SELECT cpu_cores, gpu_model, country, labels->>'tier' FROM devices")
                for try await (cores, gpu, country, tier) in typed.decode((Int, String?, String?, String?).self) {
                    #expect(cores == 16 && gpu == "NVIDIA L4" && country == "DE" && tier == "edge")
                }
            }
        }
    }

    @Test("refusals: someone else's challenge, a missing or forged signature, a reused challenge, impossible hardware")
    func refusals() async throws {
        try await withRegistry { registry, network, database in
            let device = try DeviceClient(operatorKey: network.operatorKey)
            let other = try DeviceClient(operatorKey: network.operatorKey)
            try await device.withRegistry(registry) { client in
                #expect(
                    await rpcCode { _ = try await client.beginJoin(.with { $0.deviceDid = other.key.did.string }) }
                        == .permissionDenied)

                let challenge = try await client.beginJoin(.with { $0.deviceDid = device.key.did.string }).challenge
                #expect(
                    await rpcCode {
                        _ = try await client.completeJoin(
                            .with {
                                $0.challenge = challenge; $0.capabilities = Self.capabilities(); $0.idempotencyKey = "a"
                            })
                    } == .permissionDenied, "not countersigned")

                var forged = challenge
                forged.signatures.append(
                    .with {
                        $0.did = device.key.did.string
                        $0.alg = "Ed25519"
                        $0.sig = Data(
                            other.key.sign(SignedMessage.signingInput(type: challenge.type, payload: challenge.payload))
                        )
                    })
                #expect(
                    await rpcCode {
                        _ = try await client.completeJoin(
                            .with {
                                $0.challenge = forged; $0.capabilities = Self.capabilities(); $0.idempotencyKey = "b"
                            })
                    } == .unauthenticated, "signed by another key")

                for (label, capabilities) in [
                    ("zero cores", Self.capabilities(cores: 0)),
                    ("absurd cores", Self.capabilities(cores: 100_000)),
                    ("country name", Self.capabilities(country: "Germany")),
                    (
                        "no memory",
                        {
                            var c = Self.capabilities(); c.ramBytes = 0; return c
                        }()
                    ),
                    (
                        "latitude",
                        {
                            var c = Self.capabilities(); c.location.latitude = 100; return c
                        }()
                    ),
                    (
                        "too many GPUs",
                        {
                            var c = Self.capabilities(); c.gpus = Array(repeating: c.gpus[0], count: 65); return c
                        }()
                    ),
                    (
                        "label too long",
                        {
                            var c = Self.capabilities(); c.labels = ["k": String(repeating: "x", count: 257)]; return c
                        }()
                    ),
                    (
                        "too many labels",
                        {
                            var c = Self.capabilities();
                            c.labels = Dictionary(uniqueKeysWithValues: (0..<65).map { ("k\($0)", "v") }); return c
                        }()
                    ),
                    (
                        "GPU model too long",
                        {
                            var c = Self.capabilities(); c.gpus[0].model = String(repeating: "g", count: 300); return c
                        }()
                    ),
                ] {
                    var signed = try await client.beginJoin(.with { $0.deviceDid = device.key.did.string }).challenge
                    SignedMessage.countersign(&signed, with: device.key)
                    #expect(
                        await rpcCode {
                            _ = try await client.completeJoin(
                                .with {
                                    $0.challenge = signed; $0.capabilities = capabilities; $0.idempotencyKey = label
                                })
                        } == .invalidArgument, "\(label)")
                }

                var signed = try await client.beginJoin(.with { $0.deviceDid = device.key.did.string }).challenge
                SignedMessage.countersign(&signed, with: device.key)
                _ = try await client.completeJoin(
                    .with {
                        $0.challenge = signed; $0.capabilities = Self.capabilities(); $0.idempotencyKey = "ok"
                    })
                #expect(
                    await rpcCode {
                        _ = try await client.completeJoin(
                            .with {
                                $0.challenge = signed; $0.capabilities = Self.capabilities();
                                $0.idempotencyKey = "again"
                            })
                    } == .permissionDenied, "a used challenge")

                #expect(
                    await rpcCode { _ = try await client.getDevice(.with { $0.did = other.key.did.string }) }
                        == .notFound)
                #expect(
                    await rpcCode { _ = try await client.getDevice(.with { $0.did = "not-a-did" }) } == .invalidArgument
                )
                #expect(
                    await rpcCode {
                        _ = try await client.leave(
                            .with {
                                $0.deviceDid = other.key.did.string; $0.idempotencyKey = "l"
                            })
                    } == .permissionDenied)
            }
            // Nothing half-written: only the one successful join left a device and a change.
            try await database.withClient(schema: "registry") { db in
                for (table, expected) in [("devices", 1), ("device_changes", 1)] {
                    let rows = try await db.query(PostgresQuery(unsafeSQL: "SELECT count(*) FROM \(table)"))
                    for try await count in rows.decode(Int.self) { #expect(count == expected, "\(table)") }
                }
            }
        }
    }
}
