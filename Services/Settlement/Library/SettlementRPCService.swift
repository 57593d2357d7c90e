public import GRPCCore
internal import OrreryAuth
public import OrreryProto
internal import OrreryRuntime

/// `orrery.settlement.v1.Settlement` over gRPC: each method hands the authorised caller to `SettlementAPI`.
public struct SettlementRPCService: Orrery_Settlement_V1_Settlement.SimpleServiceProtocol {
    private let environment: ServiceEnvironment
    private let api: SettlementAPI

    init(environment: ServiceEnvironment, api: SettlementAPI) {
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

    public func auditJournal(
        request: Orrery_Settlement_V1_AuditJournalRequest,
        response: RPCWriter<Orrery_Settlement_V1_AuditJournalItem>, context: ServerContext
    ) async throws {
        try await api.auditJournal(authorization: try authorization()) { try await response.write($0) }
    }

    public func getBalance(request: Orrery_Settlement_V1_GetBalanceRequest, context: ServerContext) async throws
        -> Orrery_Settlement_V1_Balance
    {
        try await api.balance(request, authorization: try authorization())
    }

    public func deposit(request: Orrery_Settlement_V1_DepositRequest, context: ServerContext) async throws
        -> Orrery_Settlement_V1_JournalEntry
    {
        try await api.deposit(request, authorization: try authorization())
    }

    public func escrow(request: Orrery_Settlement_V1_EscrowRequest, context: ServerContext) async throws
        -> Orrery_Settlement_V1_JournalEntry
    {
        try await api.escrow(request, authorization: try authorization())
    }

    public func release(request: Orrery_Settlement_V1_ReleaseRequest, context: ServerContext) async throws
        -> Orrery_Settlement_V1_JournalEntry
    {
        try await api.release(request, authorization: try authorization())
    }

    public func refund(request: Orrery_Settlement_V1_RefundRequest, context: ServerContext) async throws
        -> Orrery_Settlement_V1_JournalEntry
    {
        try await api.refund(request, authorization: try authorization())
    }

    public func getStatement(request: Orrery_Settlement_V1_GetStatementRequest, context: ServerContext) async throws
        -> Orrery_Settlement_V1_Statement
    {
        try await api.statement(request, authorization: try authorization())
    }

    public func bindAddress(request: Orrery_Settlement_V1_BindAddressRequest, context: ServerContext) async throws
        -> Orrery_Settlement_V1_AddressBinding
    {
        try await api.bindAddress(request, authorization: try authorization())
    }

    public func listAddresses(request: Orrery_Settlement_V1_ListAddressesRequest, context: ServerContext) async throws
        -> Orrery_Settlement_V1_ListAddressesResponse
    {
        try await api.listAddresses(request, authorization: try authorization())
    }

    public func requestPayout(request: Orrery_Settlement_V1_RequestPayoutRequest, context: ServerContext) async throws
        -> Orrery_Settlement_V1_Payout
    {
        try await api.requestPayout(request, authorization: try authorization())
    }

    public func listPayouts(request: Orrery_Settlement_V1_ListPayoutsRequest, context: ServerContext) async throws
        -> Orrery_Settlement_V1_ListPayoutsResponse
    {
        try await api.listPayouts(request, authorization: try authorization())
    }

    public func getPayout(request: Orrery_Settlement_V1_GetPayoutRequest, context: ServerContext) async throws
        -> Orrery_Settlement_V1_Payout
    {
        try await api.getPayout(request, authorization: try authorization())
    }

    public func operate(
        request: RPCAsyncSequence<Orrery_Settlement_V1_Operation, any Error>,
        response: RPCWriter<Orrery_Settlement_V1_OperationResult>, context: ServerContext
    ) async throws {
        guard let capabilities = environment.capabilities else {
            throw RPCError(code: .unavailable, message: "this server checks no capabilities: Operate is off")
        }
        try await OperationStream(
            api: api, capabilities: capabilities, logger: environment.logger, peer: context.remotePeer
        ).run(
            request, answering: response)
    }
}
