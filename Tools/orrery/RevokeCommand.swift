import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryIdentity
import OrreryProto
import OrreryRuntimeCore
import SwiftProtobuf

/// `orrery revoke`: revokes a delegation at the identity service (a /ucan/revoke invocation).
struct RevokeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke",
        abstract: "Revoke a delegation you issued (or one below a delegation you issued).",
        discussion:
            "--path names the chain that contains the revoked delegation (root first); it is sent as the path witness.")

    @Option(help: "The revoker's key file.") var key: String
    @Option(help: "The identity service, host:port.") var identity: String
    @OptionGroup var tls: TLSOptions
    @Option(help: "The CID of the delegation to revoke (default: the last delegation of --path).") var cid: String?
    @Option(help: "Files with the chain containing it (repeatable).") var path: [String] = []

    func run() async throws {
        let revoker = try Inputs.key(key)
        var chain = try Inputs.chain(path)
        guard let last = chain.last else {
            throw ValidationError("--path: give the chain that contains the delegation to revoke")
        }
        let revoked: CID
        if let cid {
            do { revoked = try CID(cid) } catch { throw ValidationError("--cid: \(error)") }
            guard chain.contains(where: { $0.cid == revoked }) else {
                throw ValidationError("--cid: \(cid) is not in the chain of --path")
            }
        } else {
            revoked = last.cid
        }
        if let end = chain.firstIndex(where: { $0.cid == revoked }) { chain = Array(chain[...end]) }
        guard let address = ServiceAddress(identity) else { throw ValidationError("--identity is not host:port") }
        let revocation = try await ServiceProbe.withClient(address, trustRoots: tls.trustRoots) { client in
            let identityDID = try DID(try await ServiceProbe.info(client).did)
            let idempotencyKey = revoked.string
            let invocation = Invocation.issue(
                by: revoker, subject: revoker.did, audience: identityDID, command: try Command("/ucan/revoke"),
                arguments: [
                    "revoke": .link(revoked), "path": .list(chain.map { .link($0.cid) }),
                    "idempotency_key": .string(idempotencyKey),
                ],
                expiration: Inputs.now + 120, issuedAt: Inputs.now)
            let container = try UCANContainer.encodeText([invocation.envelope.bytes] + chain.map(\.envelope.bytes))
            let identityClient = Orrery_Identity_V1_Identity.Client(wrapping: client)
            var metadata = Metadata()
            metadata.addString("Bearer " + container, forKey: "authorization")
            return try await identityClient.revoke(.with { $0.idempotencyKey = idempotencyKey }, metadata: metadata)
                .revocation
        }
        print("revoked \(revocation.cid) at revision \(revocation.revision)")
    }
}
