import Foundation
import GRPCCore
import Logging
import OrreryAuth
import OrreryIdentity
import OrreryProto
import SwiftProtobuf
import Testing

/// The capability check as a server runs it (`CapabilityInterceptor.authorize`), with policies over the request
/// itself: what a delegation bounds cannot be escaped by signing other `args`, by a value too wide for Int64,
/// or by putting it in a list, an enum, a map or a nested message.
@Suite("Policies hold over the request itself")
struct RequestPolicyTests {
    static let catalog: MethodCatalog = {
        // The embedded descriptor set is generated code: it is always there.
        try! MethodCatalog(descriptorSet: Data(base64Encoded: OrreryDescriptorSet.base64)!)
    }()

    let operatorKey = SigningKey()
    let service = SigningKey()
    let caller = SigningKey()

    func interceptor() -> CapabilityInterceptor {
        let validator = ChainValidator()
        return CapabilityInterceptor(
            serviceDID: service.did, trustedRoots: [operatorKey.did], catalog: Self.catalog, validator: validator,
            revocations: RevocationBook(validator: validator), replayGuard: InMemoryReplayGuard(),
            logger: Logger(label: "test"))
    }

    /// A `Bearer` header: an invocation of `method` with `args`, under a delegation with `policy`.
    func header(_ method: String, policy: String, args: [String: IPLD], audience: DID? = nil) throws -> String {
        let entry = try #require(Self.catalog[method])
        let now = Int64(Date().timeIntervalSince1970)
        let grant = Delegation.issue(
            by: operatorKey, to: caller.did, subject: operatorKey.did, command: try Command("/orrery"),
            policy: try Policy(try IPLDJSON.parse(policy)), expiration: now + 600)
        let invocation = Invocation.issue(
            by: caller, subject: operatorKey.did, audience: audience ?? service.did, command: entry.command,
            arguments: args, proofs: [grant.cid], expiration: now + 120, issuedAt: now)
        return "Bearer " + (try UCANContainer.encodeText([invocation.envelope.bytes, grant.envelope.bytes]))
    }

    /// The status code the check ends with, or nil when it lets the request through.
    func outcome(
        _ method: String, policy: String, args: [String: IPLD], request: some SwiftProtobuf.Message
    ) async throws -> RPCError.Code? {
        do {
            _ = try await interceptor().authorize(
                authorizationHeader: try header(method, policy: policy, args: args), method: method, request: request)
            return nil
        } catch let error as RPCError {
            return error.code
        }
    }

    static let escrow = "orrery.settlement.v1.Settlement/Escrow"

    @Test(
        "replays: refused for every mutating method but the device's single-use answers (Tunnel, ExecSession); PeerTunnel stays guarded"
    )
    func replayGuardedMethods() throws {
        let entries = Self.catalog.entries
        let tunnel = try #require(entries["orrery.orchestrator.v1.AgentChannel/Tunnel"])
        let exec = try #require(entries["orrery.orchestrator.v1.AgentChannel/ExecSession"])
        let peer = try #require(entries["orrery.orchestrator.v1.AgentChannel/PeerTunnel"])
        let submit = try #require(entries["orrery.orchestrator.v1.Orchestrator/SubmitWorkload"])
        #expect(tunnel.answersSingleUse && !tunnel.isReplayGuarded && !tunnel.isReadOnly)
        #expect(exec.answersSingleUse && !exec.isReplayGuarded)
        #expect(!peer.answersSingleUse && peer.isReplayGuarded)
        #expect(submit.isReplayGuarded)
        #expect(entries.values.filter(\.answersSingleUse).count == 2)
    }

    @Test("a uint64 past Int64 is compared exactly: signing amount 0 does not escape amount ≤ 100")
    func wideUnsignedIntegers() async throws {
        let policy = #"[["<=", ".amount", 100]]"#
        func escrow(_ amount: UInt64) -> Orrery_Settlement_V1_EscrowRequest {
            .with {
                $0.contractID = "ctr_1"
                $0.amount = amount
                $0.idempotencyKey = "k"
            }
        }
        let huge = UInt64(Int64.max) + 2  // 9,223,372,036,854,775,809: the attack
        let key: [String: IPLD] = ["idempotency_key": .string("k")]
        // The attack as found: args say 0, the request says 2^63+1.
        #expect(
            try await outcome(
                Self.escrow, policy: policy, args: key.merging(["amount": .integer(0)]) { $1 }, request: escrow(huge))
                == .permissionDenied)
        // args silent about the amount: the policy still sees the request's.
        #expect(try await outcome(Self.escrow, policy: policy, args: key, request: escrow(huge)) == .permissionDenied)
        // args honest about it: the policy refuses the value itself.
        #expect(
            try await outcome(
                Self.escrow, policy: policy, args: key.merging(["amount": .exact(huge)]) { $1 },
                request: escrow(huge)) == .permissionDenied)
        for boundary in [UInt64(1) << 31, UInt64(1) << 53, UInt64(1) << 63, UInt64.max] {
            #expect(try await outcome(Self.escrow, policy: policy, args: key, request: escrow(boundary)) != nil)
        }
        #expect(try await outcome(Self.escrow, policy: policy, args: key, request: escrow(100)) == nil)
        #expect(try await outcome(Self.escrow, policy: policy, args: key, request: escrow(101)) == .permissionDenied)
        // A policy bound past Int64 works too.
        let wide = #"[[">=", ".amount", 18446744073709551615]]"#
        #expect(try await outcome(Self.escrow, policy: wide, args: key, request: escrow(.max)) == nil)
        #expect(try await outcome(Self.escrow, policy: wide, args: key, request: escrow(.max - 1)) == .permissionDenied)
    }

    @Test("decimal-string amounts reach policies as exact integers; one that is not a decimal is refused")
    func decimalAmounts() async throws {
        let method = "orrery.settlement.v1.Settlement/Deposit"
        let policy = #"[["<=", ".amount", 100]]"#
        func deposit(_ amount: String) -> Orrery_Settlement_V1_DepositRequest {
            .with {
                $0.did = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
                $0.amount = amount
                $0.source = "ledger"
                $0.idempotencyKey = "k"
            }
        }
        let key: [String: IPLD] = ["idempotency_key": .string("k")]
        #expect(try await outcome(method, policy: policy, args: key, request: deposit("100")) == nil)
        #expect(try await outcome(method, policy: policy, args: key, request: deposit("101")) == .permissionDenied)
        let uint256 = "115792089237316195423570985008687907853269984665640564039457584007913129639935"
        #expect(try await outcome(method, policy: policy, args: key, request: deposit(uint256)) == .permissionDenied)
        // Signed as text or as an integer: both agree with the request.
        #expect(
            try await outcome(
                method, policy: policy, args: key.merging(["amount": .string("50")]) { $1 }, request: deposit("50"))
                == nil)
        #expect(
            try await outcome(
                method, policy: policy, args: key.merging(["amount": .integer(50)]) { $1 }, request: deposit("50"))
                == nil)
        #expect(
            try await outcome(
                method, policy: policy, args: key.merging(["amount": .string("0")]) { $1 }, request: deposit("50"))
                == .permissionDenied)
        for unreadable in ["1e3", "0x10", "-0", "12 ", "007", String(repeating: "9", count: 500)] {
            #expect(
                try await outcome(method, policy: policy, args: key, request: deposit(unreadable)) == .invalidArgument,
                "\(unreadable)")
        }
    }

    @Test("lists, enums, maps and nested messages are under the policy")
    func structuredFields() async throws {
        let query = "orrery.registry.v1.Registry/QueryDevices"
        func devices(_ countries: [String], labels: [String: String] = [:]) -> Orrery_Registry_V1_QueryDevicesRequest {
            .with {
                $0.countries = countries
                $0.labels = labels
                $0.statuses = [.online]
            }
        }
        let germany = #"[["==", ".countries", ["DE"]]]"#
        #expect(try await outcome(query, policy: germany, args: [:], request: devices(["DE"])) == nil)
        #expect(try await outcome(query, policy: germany, args: [:], request: devices(["FR"])) == .permissionDenied)
        #expect(try await outcome(query, policy: germany, args: [:], request: devices([])) == .permissionDenied)
        // A signed list that differs from the request is refused even without a policy on it.
        #expect(
            try await outcome(
                query, policy: "[]", args: ["countries": .list([.string("DE")])], request: devices(["FR"]))
                == .permissionDenied)
        let anyOnline = #"[["all", ".statuses", ["==", ".", "DEVICE_STATUS_ONLINE"]]]"#
        #expect(try await outcome(query, policy: anyOnline, args: [:], request: devices(["DE"])) == nil)
        var offline = devices(["DE"])
        offline.statuses = [.online, .offline]
        #expect(try await outcome(query, policy: anyOnline, args: [:], request: offline) == .permissionDenied)
        let tier = #"[["==", ".labels.tier", "edge"]]"#
        #expect(
            try await outcome(query, policy: tier, args: [:], request: devices([], labels: ["tier": "edge"])) == nil)
        #expect(
            try await outcome(query, policy: tier, args: [:], request: devices([], labels: ["tier": "core"]))
                == .permissionDenied)

        let submit = "orrery.orchestrator.v1.Orchestrator/SubmitWorkload"
        func workload(cores: UInt32, executor: Orrery_Orchestrator_V1_Executor)
            -> Orrery_Orchestrator_V1_SubmitWorkloadRequest
        {
            .with {
                $0.idempotencyKey = "k"
                $0.spec = .with {
                    $0.name = "job"
                    $0.allocations = [
                        .with {
                            $0.name = "main"
                            $0.executor = executor
                            $0.resources = .with { $0.cpuCores = cores }
                        }
                    ]
                }
            }
        }
        let small =
            #"[["all", ".spec.allocations", ["and", [["<=", ".resources.cpu_cores", 4], ["==", ".executor", "EXECUTOR_PROCESS"]]]]]"#
        let key: [String: IPLD] = ["idempotency_key": .string("k")]
        #expect(
            try await outcome(submit, policy: small, args: key, request: workload(cores: 4, executor: .process)) == nil)
        #expect(
            try await outcome(submit, policy: small, args: key, request: workload(cores: 64, executor: .process))
                == .permissionDenied)
        #expect(
            try await outcome(submit, policy: small, args: key, request: workload(cores: 1, executor: .unspecified))
                == .permissionDenied)
    }

    @Test("cheap refusals: oversized headers and DIDs, lower-case scheme accepted, another audience unauthenticated")
    func headerShape() async throws {
        let method = "orrery.registry.v1.Registry/QueryDevices"
        let request = Orrery_Registry_V1_QueryDevicesRequest()
        func code(_ header: String) async -> RPCError.Code? {
            do {
                _ = try await interceptor().authorize(authorizationHeader: header, method: method, request: request)
                return nil
            } catch let error as RPCError {
                return error.code
            } catch {
                return .unknown
            }
        }
        let valid = try header(method, policy: "[]", args: [:])
        #expect(await code(valid) == nil)
        #expect(await code("bearer " + valid.dropFirst("Bearer ".count)) == nil)
        #expect(await code("BEARER  " + valid.dropFirst("Bearer ".count)) == nil)
        #expect(await code("Bearerx" + valid.dropFirst("Bearer ".count)) == .unauthenticated)
        #expect(await code("Bearer " + String(repeating: "C", count: 20_000)) == .unauthenticated)
        #expect(await code(try header(method, policy: "[]", args: [:], audience: SigningKey().did)) == .unauthenticated)

        // Oversized DIDs at each position of a signed token (within the header's bound), and a gzip bomb: refused as
        // malformed, UNAUTHENTICATED, with no base58 decoded and nothing inflated past the container's bound.
        let now = Int64(Date().timeIntervalSince1970)
        let long = "did:key:z" + String(repeating: "6", count: 11_000)
        for position in ["iss", "aud", "sub"] {
            var payload: [String: IPLD] = [
                "iss": .string(caller.did.string), "aud": .string(service.did.string),
                "sub": .string(operatorKey.did.string), "cmd": .string("/orrery/registry/query-devices"),
                "args": .map([:]), "prf": .list([]), "nonce": .bytes([1, 2, 3]), "exp": .integer(now + 60),
            ]
            payload[position] = .string(long)
            let envelope = UCANEnvelope(signing: payload, tag: UCANEnvelope.invocationTag, with: caller)
            let token = "Bearer " + (try UCANContainer.encodeText([envelope.bytes]))
            #expect(await code(token) == .unauthenticated, "\(position)")
        }
        let bomb = try UCANContainer.encodeText([[UInt8](repeating: 0, count: 8 << 20)], header: .gzipBase64URL)
        #expect(bomb.utf8.count < CapabilityInterceptor.maximumAuthorizationLength)
        #expect(await code("Bearer " + bomb) == .unauthenticated)

        // A DID of 32,000 characters is refused by its length, before any base58 (the error says so).
        for length in [32_000, 200] {
            let error = #expect(throws: DIDError.self) { try DID("did:key:z" + String(repeating: "6", count: length)) }
            #expect("\(error.map(String.init(describing:)) ?? "")".contains("characters"))
        }
    }
}
