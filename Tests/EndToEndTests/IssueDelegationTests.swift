import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import IdentityService
import OrreryAuth
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import OrreryTestSupport
import SwiftProtobuf
import Testing

@Suite(
    "Identity.IssueDelegation", .serialized,
    .enabled(if: TestDatabase.isConfigured, "needs the throwaway PostgreSQL of `make test`"))
struct IssueDelegationTests {
    @Test("scoped by the caller's policy, idempotent by key, refusing a reused key for another request")
    func issue() async throws {
        try await TestDatabase.withDatabase { database in
            try await TestEnvironment.withTemporaryDirectory("orrery-issue") { directory in
                let network = try TestNetwork(directory: directory.appendingPathComponent("credentials"))
                let operatorKeyPath = directory.appendingPathComponent("credentials/operator.key").path
                // Built inside the test process: this path needs no process of its own.
                try await InProcessService.run(
                    IdentityServer.service(IdentitySettings(operatorKeyFile: operatorKeyPath)),
                    environment: database.serviceEnvironment.merging(network.environment(for: "identity")) { $1 },
                    directory: directory
                ) { identity in

                    // An onboarding desk: it may ask for registry delegations only.
                    let desk = SigningKey()
                    let operatorKey = network.operatorKey
                    let grant = Delegation.issue(
                        by: operatorKey, to: desk.did, subject: operatorKey.did,
                        command: try Command("/orrery/identity/issue-delegation"),
                        policy: try Policy(
                            try IPLDJSON.parse(
                                #"[["like", ".command", "/orrery/registry*"], ["<=", ".lifetime_seconds", 86400]]"#)),
                        expiration: Int64(Date().timeIntervalSince1970) + 3600)
                    let catalog = try MethodCatalog(
                        descriptorSet: try #require(Data(base64Encoded: OrreryDescriptorSet.base64)))
                    let signer = InvocationSigner(
                        key: desk, subject: operatorKey.did, audience: try DID(identity.did), proofs: [grant],
                        catalog: catalog)
                    let owner = SigningKey()
                    func request(_ command: String, key: String, lifetime: Int64 = 3600)
                        -> Orrery_Identity_V1_IssueDelegationRequest
                    {
                        .with {
                            $0.audience = owner.did.string
                            $0.command = command
                            $0.lifetimeSeconds = lifetime
                            $0.idempotencyKey = key
                        }
                    }
                    try await withGRPCClient(
                        transport: try .http2NIOPosix(
                            target: .ipv4(address: "127.0.0.1", port: identity.grpcPort), transportSecurity: .plaintext),
                        interceptors: [signer]
                    ) { client in
                        let service = Orrery_Identity_V1_Identity.Client(wrapping: client)
                        let first = try await service.issueDelegation(request("/orrery/registry", key: "owner-1"))
                        let chain = try DelegationChain.read(first.container)
                        #expect(chain.count == 1)
                        #expect(
                            chain[0].issuer == operatorKey.did && chain[0].audience == owner.did
                                && chain[0].command.string == "/orrery/registry")
                        #expect(chain[0].cid.string == first.cid)
                        #expect(chain[0].envelope.signatureIsValid(issuer: operatorKey.did))

                        let retry = try await service.issueDelegation(request("/orrery/registry", key: "owner-1"))
                        #expect(
                            retry == first, "a retry with a new invocation and the same key returns the first result")

                        do {
                            _ = try await service.issueDelegation(request("/orrery/registry/leave", key: "owner-1"))
                            Issue.record("a reused key with another request was accepted")
                        } catch let error as RPCError {
                            #expect(error.code == .alreadyExists)
                        }
                        for (command, lifetime) in [
                            ("/orrery/settlement", Int64(3600)), ("/orrery/registry", Int64(90_000)),
                        ] {
                            do {
                                _ = try await service.issueDelegation(
                                    request(command, key: "k-\(command)-\(lifetime)", lifetime: lifetime))
                                Issue.record("\(command) for \(lifetime) s passed a policy that forbids it")
                            } catch let error as RPCError {
                                #expect(error.code == .permissionDenied)
                                #expect(error.message.contains("MatchError"))
                            }
                        }
                        do {
                            _ = try await service.issueDelegation(request("not a command", key: "bad"))
                            Issue.record("a malformed command was accepted")
                        } catch let error as RPCError {
                            // The policy sees the bad command first: `like` fails on it.
                            #expect(error.code == .permissionDenied || error.code == .invalidArgument)
                        }
                    }
                }
            }
        }
    }
}
