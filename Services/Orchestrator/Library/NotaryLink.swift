internal import Foundation
internal import GRPCCore
internal import GRPCNIOTransportHTTP2Posix
internal import Logging
internal import OrreryAuth
internal import OrreryIdentity
internal import OrreryProto
internal import OrreryRuntime
internal import Synchronization
internal import SwiftProtobuf

/// The orchestrator's line to the contract notary: one long-lived gRPC client, each call carrying an invocation
/// signed for it — under the operator's chain, or, to propose a contract, under the consumer's own delegation.
final class NotaryLink: Sendable {
    let address: ServiceAddress
    let environment: ServiceEnvironment
    private let connected = Mutex<(client: GRPCClient<HTTP2ClientTransport.Posix>, did: DID)?>(nil)

    init(address: ServiceAddress, environment: ServiceEnvironment) {
        self.address = address
        self.environment = environment
    }

    /// Keeps the client connected until cancelled.
    func run() async {
        let (address, logger, trustRoots) = (address, environment.logger, environment.settings.tlsTrustRoots)
        await Reconnecting.run(onFailure: { error in
            logger.warning("notary unreachable; retrying", metadata: ["notary": "\(address)", "error": "\(error)"])
        }) {
            let did = try await ServiceProbe.withClient(address, trustRoots: trustRoots) {
                try DID(try await ServiceProbe.info($0).did)
            }
            try await withGRPCClient(
                transport: try .http2NIOPosix(
                    target: address.target, transportSecurity: ServiceProbe.security(trustRoots: trustRoots))
            ) { client in
                connected.withLock { $0 = (client, did) }
                defer { connected.withLock { $0 = nil } }
                logger.info("notary connected", metadata: ["notary": "\(address)", "did": "\(did)"])
                while !Task.isCancelled { try await Task.sleep(for: .seconds(3600)) }
            }
        }
    }

    /// Stages a contract under the consumer's delegation (`proofs`, root first).
    func propose(_ request: Orrery_Notary_V1_ProposeContractRequest, consumer: DID, proofs: [Delegation])
        async throws -> Orrery_Notary_V1_ContractRecord
    {
        // The orchestrator's own standing with the operator travels along: the notary takes proposals only from
        // orchestrators the operator vouches for.
        try await call(
            Orrery_Notary_V1_Notary.Method.ProposeContract.descriptor, request, subject: consumer, proofs: proofs,
            alsoCarrying: environment.proofs
        ) { client, request, options in
            try await client.proposeContract(request, metadata: options)
        }
    }

    func accept(_ request: Orrery_Notary_V1_AcceptContractRequest) async throws -> Orrery_Notary_V1_ContractRecord {
        try await call(Orrery_Notary_V1_Notary.Method.AcceptContract.descriptor, request) { client, request, metadata in
            try await client.acceptContract(request, metadata: metadata)
        }
    }

    func acceptMany(_ request: Orrery_Notary_V1_AcceptContractsRequest) async throws
        -> Orrery_Notary_V1_AcceptContractsResponse
    {
        try await call(Orrery_Notary_V1_Notary.Method.AcceptContracts.descriptor, request) {
            client, request, metadata in
            try await client.acceptContracts(request, metadata: metadata)
        }
    }

    func transition(_ request: Orrery_Notary_V1_TransitionContractRequest) async throws
        -> Orrery_Notary_V1_ContractRecord
    {
        try await call(Orrery_Notary_V1_Notary.Method.TransitionContract.descriptor, request) {
            client, request, metadata in
            try await client.transitionContract(request, metadata: metadata)
        }
    }

    func recordReceipt(_ request: Orrery_Notary_V1_RecordReceiptRequest) async throws
        -> Orrery_Notary_V1_RecordReceiptResponse
    {
        try await call(Orrery_Notary_V1_Notary.Method.RecordReceipt.descriptor, request) { client, request, metadata in
            try await client.recordReceipt(request, metadata: metadata)
        }
    }

    func contract(_ id: String) async throws -> Orrery_Notary_V1_ContractRecord {
        try await call(
            Orrery_Notary_V1_Notary.Method.GetContract.descriptor,
            Orrery_Notary_V1_GetContractRequest.with {
                $0.id = id
            }
        ) { client, request, metadata in
            try await client.getContract(request, metadata: metadata)
        }
    }

    func treeHead() async throws -> Orrery_Notary_V1_SignedTreeHead {
        try await call(Orrery_Notary_V1_Notary.Method.GetTreeHead.descriptor, Orrery_Notary_V1_GetTreeHeadRequest()) {
            client, request, metadata in
            try await client.getTreeHead(request, metadata: metadata)
        }
    }

    func consistencyProof(_ request: Orrery_Notary_V1_GetConsistencyProofRequest) async throws
        -> Orrery_Notary_V1_ConsistencyProof
    {
        try await call(Orrery_Notary_V1_Notary.Method.GetConsistencyProof.descriptor, request) {
            client, request, metadata in
            try await client.getConsistencyProof(request, metadata: metadata)
        }
    }

    private func call<Request: SwiftProtobuf.Message & Sendable, Response: Sendable>(
        _ method: MethodDescriptor, _ request: Request, subject: DID? = nil, proofs: [Delegation]? = nil,
        alsoCarrying: [Delegation] = [],
        _ body: (Orrery_Notary_V1_Notary.Client<HTTP2ClientTransport.Posix>, Request, Metadata) async throws -> Response
    ) async throws -> Response {
        guard let (client, did) = connected.withLock({ $0 }) else {
            throw RPCError(code: .unavailable, message: "the notary at \(address) is not connected yet")
        }
        var metadata = Metadata()
        metadata.addString(
            try InvocationSigner.authorization(
                for: request, method: method.fullyQualifiedMethod, key: environment.key,
                subject: subject ?? environment.operatorDID, audience: did, proofs: proofs ?? environment.proofs,
                catalog: environment.catalog, alsoCarrying: alsoCarrying),
            forKey: "authorization")
        return try await body(Orrery_Notary_V1_Notary.Client(wrapping: client), request, metadata)
    }
}
