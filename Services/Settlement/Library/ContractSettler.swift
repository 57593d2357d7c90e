internal import Foundation
internal import GRPCCore
internal import GRPCNIOTransportHTTP2Posix
internal import Logging
internal import OrreryDatabase
internal import OrreryIdentity
internal import OrreryProto
internal import OrreryRuntime
internal import PostgresNIO
internal import SwiftProtobuf

/// Records refunded contracts as `settled` in the notary's log, signed by the gateway (the only party the notary
/// takes that transition from), retrying until the notary has it.
struct ContractSettler: Sendable {
    let notary: ServiceLink
    let client: PostgresClient
    let key: SigningKey
    let logger: Logger
    var interval: Duration = .seconds(2)

    func run() async {
        await PeriodicWork("settling contracts", every: interval, logger: logger) { try await settlePending() }.run()
    }

    func settlePending() async throws {
        let pending = try await client.query(
            "SELECT contract_id FROM settlements WHERE settled_at IS NULL ORDER BY contract_id LIMIT 50",
            logger: logger
        ).decode(String.self).collected()
        for contract in pending {
            do {
                try await settle(contract)
                try await client.query(
                    "UPDATE settlements SET settled_at = now() WHERE contract_id = \(contract)", logger: logger)
                logger.info("contract settled", metadata: ["contract": "\(contract)"])
            } catch let error as RPCError where error.code != .unavailable {
                try await client.query(
                    """
                    UPDATE settlements SET attempts = attempts + 1, last_error = \(error.message)
                    WHERE contract_id = \(contract)
                    """, logger: logger)
            }
        }
    }

    private func settle(_ contract: String) async throws {
        let transition = Orrery_Notary_V1_ContractTransition.with {
            $0.contractID = contract
            $0.to = .settled
            $0.reason = "escrow released and refunded by the settlement gateway"
            $0.at = Google_Protobuf_Timestamp(date: Date())
        }
        let request = Orrery_Notary_V1_TransitionContractRequest.with {
            $0.transition = SignedMessage.make(
                type: Orrery_Notary_V1_ContractTransition.protoMessageName,
                payload: (try? transition.serializedBytes()) ?? Data(), signers: [key])
            $0.idempotencyKey = "settle/\(contract)"
        }
        do {
            _ = try await notary.invoke(Orrery_Notary_V1_Notary.Method.TransitionContract.descriptor, request) {
                client, request, metadata in
                try await Orrery_Notary_V1_Notary.Client(wrapping: client).transitionContract(
                    request, metadata: metadata)
            }
        } catch let error as RPCError where error.code == .failedPrecondition {
            // Settled before (by an earlier attempt whose answer was lost), or not ended yet.
            let record = try await notary.invoke(
                Orrery_Notary_V1_Notary.Method.GetContract.descriptor,
                Orrery_Notary_V1_GetContractRequest.with { $0.id = contract }
            ) { client, request, metadata in
                try await Orrery_Notary_V1_Notary.Client(wrapping: client).getContract(request, metadata: metadata)
            }
            guard record.state == .settled else { throw error }
        }
    }
}
