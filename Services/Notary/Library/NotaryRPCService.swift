public import GRPCCore
internal import OrreryAuth
public import OrreryProto
internal import OrreryRuntime

/// `orrery.notary.v1.Notary` over gRPC: each method hands the authorised caller to `NotaryAPI`.
public struct NotaryRPCService: Orrery_Notary_V1_Notary.SimpleServiceProtocol {
    private let environment: ServiceEnvironment
    private let api: NotaryAPI

    init(environment: ServiceEnvironment, api: NotaryAPI) {
        self.environment = environment
        self.api = api
    }

    private func authorization() throws -> Authorization {
        let authorization = try Authorization.required()
        return authorization
    }

    public func info(request: Orrery_Common_V1_InfoRequest, context: ServerContext) async throws
        -> Orrery_Common_V1_InfoResponse
    {
        environment.info.response()
    }

    public func proposeContract(request: Orrery_Notary_V1_ProposeContractRequest, context: ServerContext)
        async throws -> Orrery_Notary_V1_ContractRecord
    {
        try await api.propose(request, authorization: try authorization())
    }

    public func acceptContract(request: Orrery_Notary_V1_AcceptContractRequest, context: ServerContext)
        async throws -> Orrery_Notary_V1_ContractRecord
    {
        try await api.accept(request, authorization: try authorization())
    }

    public func acceptContracts(request: Orrery_Notary_V1_AcceptContractsRequest, context: ServerContext)
        async throws -> Orrery_Notary_V1_AcceptContractsResponse
    {
        try await api.acceptMany(request, authorization: try authorization())
    }

    public func transitionContract(request: Orrery_Notary_V1_TransitionContractRequest, context: ServerContext)
        async throws -> Orrery_Notary_V1_ContractRecord
    {
        try await api.transition(request, authorization: try authorization())
    }

    public func getContract(request: Orrery_Notary_V1_GetContractRequest, context: ServerContext) async throws
        -> Orrery_Notary_V1_ContractRecord
    {
        try await api.contract(request.id)
    }

    public func recordReceipt(request: Orrery_Notary_V1_RecordReceiptRequest, context: ServerContext) async throws
        -> Orrery_Notary_V1_RecordReceiptResponse
    {
        try await api.recordReceipt(request, authorization: try authorization())
    }

    public func getTreeHead(request: Orrery_Notary_V1_GetTreeHeadRequest, context: ServerContext) async throws
        -> Orrery_Notary_V1_SignedTreeHead
    {
        try await api.treeHead()
    }

    public func getInclusionProof(request: Orrery_Notary_V1_GetInclusionProofRequest, context: ServerContext)
        async throws -> Orrery_Notary_V1_InclusionProof
    {
        try await api.inclusionProof(request)
    }

    public func getConsistencyProof(request: Orrery_Notary_V1_GetConsistencyProofRequest, context: ServerContext)
        async throws -> Orrery_Notary_V1_ConsistencyProof
    {
        try await api.consistencyProof(request)
    }

    public func getEntries(request: Orrery_Notary_V1_GetEntriesRequest, context: ServerContext) async throws
        -> Orrery_Notary_V1_GetEntriesResponse
    {
        try await api.entries(request)
    }
}
