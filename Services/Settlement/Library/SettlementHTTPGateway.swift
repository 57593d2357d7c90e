internal import Hummingbird
internal import GRPCCore
internal import OrreryAuth
internal import OrreryProto
internal import OrreryRuntime

/// The settlement gateway's read calls as JSON over HTTP
/// (`curl -X POST …/orrery.settlement.v1.Settlement/GetBalance -H 'authorization: Bearer …' -d '{"did": …}'`).
enum SettlementHTTPGateway {
    static let service = "orrery.settlement.v1.Settlement"

    static func register(api: SettlementAPI, gateway: JSONGateway, on router: Router<OrreryRequestContext>) {
        gateway.unary(router, method: "\(service)/GetBalance", Orrery_Settlement_V1_GetBalanceRequest.self) {
            try await api.balance($0, authorization: try authorization())
        }
        gateway.unary(router, method: "\(service)/GetStatement", Orrery_Settlement_V1_GetStatementRequest.self) {
            try await api.statement($0, authorization: try authorization())
        }
        gateway.unary(router, method: "\(service)/ListPayouts", Orrery_Settlement_V1_ListPayoutsRequest.self) {
            try await api.listPayouts($0, authorization: try authorization())
        }
        gateway.unary(router, method: "\(service)/GetPayout", Orrery_Settlement_V1_GetPayoutRequest.self) {
            try await api.getPayout($0, authorization: try authorization())
        }
        gateway.unary(router, method: "\(service)/ListAddresses", Orrery_Settlement_V1_ListAddressesRequest.self) {
            try await api.listAddresses($0, authorization: try authorization())
        }
    }

    private static func authorization() throws -> Authorization {
        let authorization = try Authorization.required()
        return authorization
    }
}
