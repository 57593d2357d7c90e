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

/// The orchestrator's line to the contract notary: each call an invocation signed for it — under the operator's
/// chain, or, to propose a contract, under the consumer's own delegation.
final class NotaryLink: Sendable {
    let link: ServiceLink
    let environment: ServiceEnvironment

    init(address: ServiceAddress, environment: ServiceEnvironment) {
        link = ServiceLink(address: address, peer: "notary", environment: environment)
        self.environment = environment
    }

    /// Keeps the client connected until cancelled.
    func run() async { await link.run() }

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

    func inclusionProof(index: UInt64, treeSize: UInt64) async throws -> Orrery_Notary_V1_InclusionProof {
        try await call(
            Orrery_Notary_V1_Notary.Method.GetInclusionProof.descriptor,
            Orrery_Notary_V1_GetInclusionProofRequest.with {
                $0.index = index
                $0.treeSize = treeSize
            }
        ) { client, request, metadata in
            try await client.getInclusionProof(request, metadata: metadata)
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
        try await link.invoke(method, request, subject: subject, proofs: proofs, alsoCarrying: alsoCarrying) {
            client, request, metadata in
            try await body(Orrery_Notary_V1_Notary.Client(wrapping: client), request, metadata)
        }
    }
}
