import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryAuth
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import SwiftProtobuf

/// A gRPC client whose every call carries an invocation signed with the caller's key, addressed to the service's
/// DID (learned from its open `Info`), with the caller's chain as proofs.
enum AuthorizedCall {
    static func withClient<Result: Sendable>(
        _ address: String,
        key keyPath: String,
        proofs proofPaths: [String],
        _ body: (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> Result
    ) async throws -> Result {
        guard let target = ServiceAddress(address) else { throw ValidationError("'\(address)' is not host:port") }
        let key = try Inputs.key(keyPath)
        let chain = try Inputs.chain(proofPaths)
        let audience = try await ServiceProbe.withClient(target) { try DID(try await ServiceProbe.info($0).did) }
        let catalog = try MethodCatalog(descriptorSet: Data(base64Encoded: OrreryDescriptorSet.base64) ?? Data())
        let signer = InvocationSigner(
            key: key, subject: chain.first?.subject ?? key.did, audience: audience, proofs: chain, catalog: catalog)
        return try await withGRPCClient(
            transport: try .http2NIOPosix(target: target.target, transportSecurity: .plaintext), interceptors: [signer]
        ) { client in
            try await body(client)
        }
    }
}

/// `orrery revocations`: the identity service's revocation log.
struct RevocationsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revocations", abstract: "List the revocation log (an authorised call to the identity service).")

    @Option(help: "The identity service, host:port.") var identity: String
    @Option(help: "Your key file.") var key: String
    @Option(help: "Your delegation chain (repeatable; none when you are the operator).") var proof: [String] = []
    @Option(help: "List revocations after this revision.") var after: Int64 = 0

    func run() async throws {
        let response = try await AuthorizedCall.withClient(identity, key: key, proofs: proof) { client in
            try await Orrery_Identity_V1_Identity.Client(wrapping: client).listRevocations(
                .with {
                    $0.afterRevision = after; $0.pageSize = 1000
                })
        }
        for revocation in response.revocations {
            print("\(revocation.revision)\t\(revocation.cid)\t\(revocation.revokedBy)")
        }
        print("revision \(response.revision)")
    }
}
