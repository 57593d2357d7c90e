import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryAuth
import OrreryIdentity
import OrreryProto
import SwiftProtobuf
import OrreryRuntime

/// The operator as the benchmarks' consumer of an orchestrator: a client whose calls it signs, and its delegations
/// letting the orchestrator propose contracts on its behalf and escrow their cost (what `orrery run` sends; an
/// orchestrator without a settlement gateway ignores the second).
enum BenchConsumer {
    typealias Client = Orrery_Orchestrator_V1_Orchestrator.Client<HTTP2ClientTransport.Posix>

    struct Authorities: Sendable {
        let propose: Data
        let escrow: Data

        /// `key`'s delegations to `orchestrator` of proposing contracts and escrowing their cost (two hours).
        init(key: SigningKey, orchestrator: DID) throws {
            func delegation(_ command: String) throws -> Data {
                Data(
                    try UCANContainer.encode(
                        [
                            Delegation.issue(
                                by: key, to: orchestrator, subject: key.did, command: try Command(command),
                                expiration: Int64(Date().timeIntervalSince1970) + 7200
                            ).envelope.bytes
                        ], header: .raw))
            }
            propose = try delegation("/orrery/notary/propose")
            escrow = try delegation("/orrery/settlement/escrow")
        }
    }

    /// Submits `spec` with `authorities` and follows it until it runs or ends (within `timeout`): its id and that
    /// state.
    static func submitUntilRunning(
        _ spec: Orrery_Orchestrator_V1_WorkloadSpec, on orchestrator: Client, authorities: Authorities,
        timeout: Duration
    ) async throws -> (id: String, state: Orrery_Orchestrator_V1_DeploymentState) {
        let request = Orrery_Orchestrator_V1_SubmitWorkloadRequest.with {
            $0.spec = spec
            $0.idempotencyKey = UUID().uuidString
            $0.consumerAuthority = authorities.propose
            $0.settlementAuthority = authorities.escrow
        }
        // UNAVAILABLE (a busy database, a failover) is retried with the same key, as a client should: at most once
        // deployed.
        var attempt = 0
        var deployment: Orrery_Orchestrator_V1_Deployment
        while true {
            do {
                deployment = try await orchestrator.submitWorkload(request)
                break
            } catch let error as RPCError where error.code == .unavailable && attempt < 5 {
                attempt += 1
                try await Task.sleep(for: .seconds(attempt))
            }
        }
        var options = CallOptions.defaults
        options.timeout = timeout
        let deadline = ContinuousClock.now + timeout
        while true {
            do {
                let state = try await orchestrator.watchDeployment(.with { $0.id = deployment.id }, options: options) {
                    response in
                    for try await event in response.messages where event.state == .running || event.state.isTerminal {
                        return event.state
                    }
                    return Orrery_Orchestrator_V1_DeploymentState.unspecified
                }
                return (deployment.id, state)
            } catch let error as RPCError where error.code == .unavailable && ContinuousClock.now < deadline {
                // Watched again from the start: a watch replays the deployment's events.
                try await Task.sleep(for: .seconds(1))
                options.timeout = ContinuousClock.now.duration(to: deadline)
            }
        }
    }

    static func withOrchestrator<Result: Sendable>(
        _ address: String, key path: String, _ body: (Client, _ authority: Data) async throws -> Result
    ) async throws -> Result {
        try await withOrchestrator(address, key: path) { client, authorities in
            try await body(client, authorities.propose)
        }
    }

    static func withOrchestrator<Result: Sendable>(
        _ address: String, key path: String, _ body: (Client, Authorities) async throws -> Result
    ) async throws -> Result {
        guard let target = ServiceAddress(address) else { throw ValidationError("\(address) is not host:port") }
        let key = try KeyFile.read(path)
        let audience = try await ServiceProbe.withClient(target) { try DID(try await ServiceProbe.info($0).did) }
        let catalog = try MethodCatalog(descriptorSet: Data(base64Encoded: OrreryDescriptorSet.base64) ?? Data())
        let signer = InvocationSigner(key: key, subject: key.did, audience: audience, proofs: [], catalog: catalog)
        let authorities = try Authorities(key: key, orchestrator: audience)
        return try await withGRPCClient(
            transport: try .http2NIOPosix(target: target.target, transportSecurity: .plaintext), interceptors: [signer]
        ) { client in
            try await body(Orrery_Orchestrator_V1_Orchestrator.Client(wrapping: client), authorities)
        }
    }

    /// Submits `spec` with the consumer's authorities and waits until it runs; its state now (with routes and runs).
    /// Throws `ValidationError` when it ends instead.
    static func deployAndWait(
        _ spec: Orrery_Orchestrator_V1_WorkloadSpec, orchestrator address: String, key path: String
    ) async throws -> Orrery_Orchestrator_V1_Deployment {
        try await withOrchestrator(address, key: path) { (orchestrator, authorities: Authorities) in
            let (id, state) = try await submitUntilRunning(
                spec, on: orchestrator, authorities: authorities, timeout: .seconds(600))
            guard state == .running else { throw ValidationError("deployment \(id) is \(state)") }
            return try await orchestrator.getDeployment(.with { $0.id = id })
        }
    }
}

/// Prints a benchmark's Markdown `lines` and appends them to the results file `path` (made when absent).
func publishResults(_ lines: [String], to path: String) throws {
    for line in lines { print(line) }
    if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
    try handle.seekToEnd()
    try handle.write(contentsOf: Data(lines.joined(separator: "\n").appending("\n").utf8))
    try handle.close()
}
