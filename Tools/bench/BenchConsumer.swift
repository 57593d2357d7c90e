import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryAuth
import OrreryIdentity
import OrreryProto
import OrreryRuntime

/// The operator as the benchmarks' consumer of an orchestrator: a client whose calls it signs, and its delegation
/// letting the orchestrator propose contracts on its behalf (what `orrery run` sends).
enum BenchConsumer {
    typealias Client = Orrery_Orchestrator_V1_Orchestrator.Client<HTTP2ClientTransport.Posix>

    static func withOrchestrator<Result: Sendable>(
        _ address: String, key path: String, _ body: (Client, _ authority: Data) async throws -> Result
    ) async throws -> Result {
        guard let target = ServiceAddress(address) else { throw ValidationError("\(address) is not host:port") }
        let key = try KeyFile.read(path)
        let audience = try await ServiceProbe.withClient(target) { try DID(try await ServiceProbe.info($0).did) }
        let catalog = try MethodCatalog(descriptorSet: Data(base64Encoded: OrreryDescriptorSet.base64) ?? Data())
        let signer = InvocationSigner(key: key, subject: key.did, audience: audience, proofs: [], catalog: catalog)
        let authority = Data(
            try UCANContainer.encode(
                [
                    Delegation.issue(
                        by: key, to: audience, subject: key.did, command: try Command("/orrery/notary/propose"),
                        expiration: Int64(Date().timeIntervalSince1970) + 7200
                    ).envelope.bytes
                ], header: .raw))
        return try await withGRPCClient(
            transport: try .http2NIOPosix(target: target.target, transportSecurity: .plaintext), interceptors: [signer]
        ) { client in
            try await body(Orrery_Orchestrator_V1_Orchestrator.Client(wrapping: client), authority)
        }
    }
}
