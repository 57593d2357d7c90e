internal import Foundation
internal import GRPCCore
internal import GRPCNIOTransportHTTP2Posix
internal import Logging
internal import OrreryAuth
internal import OrreryIdentity
internal import OrreryProto
internal import SwiftProtobuf

/// Follows the identity service's revocation log (`WatchRevocations`, resumed after the last revision seen) into
/// this process's `RevocationBook`, reconnecting with exponential backoff and jitter when the stream breaks.
struct RevocationFollower {
    let address: ServiceAddress
    /// PEM roots to verify the identity service's TLS certificate; nil to connect in plaintext.
    let trustRoots: String?
    let environment: ServiceEnvironment
    let proofs: [Delegation]

    func run() async {
        await Reconnecting.run(onFailure: { error in
            environment.logger.warning(
                "revocation feed interrupted; retrying", metadata: ["identity": "\(address)", "error": "\(error)"])
        }) {
            try await follow()
        }
    }

    private func follow() async throws {
        let identityDID = try await ServiceProbe.withClient(address, trustRoots: trustRoots) { client in
            try DID(try await ServiceProbe.info(client).did)
        }
        let signer = InvocationSigner(
            key: environment.key, subject: environment.operatorDID, audience: identityDID, proofs: proofs,
            catalog: environment.catalog)
        try await withGRPCClient(
            transport: try .http2NIOPosix(
                target: address.target, transportSecurity: ServiceProbe.security(trustRoots: trustRoots)),
            interceptors: [signer]
        ) { client in
            let identity = Orrery_Identity_V1_Identity.Client(wrapping: client)
            let request = Orrery_Identity_V1_WatchRevocationsRequest.with {
                $0.afterRevision = environment.revocations.revision
            }
            try await identity.watchRevocations(request) { response in
                environment.logger.info(
                    "following revocations", metadata: ["identity": "\(address)", "after": "\(request.afterRevision)"])
                for try await revocation in response.messages {
                    let cid = try CID(revocation.cid)
                    environment.revocations.apply(cid: cid, revision: revocation.revision)
                    environment.logger.info(
                        "revocation applied", metadata: ["cid": "\(cid)", "revision": "\(revocation.revision)"])
                }
            }
        }
    }
}
