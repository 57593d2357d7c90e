internal import Foundation
internal import GRPCCore
internal import Logging
internal import OrreryDatabase
internal import OrreryAuth
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf

/// Chain addresses bound to DIDs (each proven by a signature of the address over a fresh challenge), and the
/// deposits observed from them.
struct AddressBook: Sendable {
    let client: PostgresClient
    let logger: Logger
    /// The gateway's DID: the invoker of the entries it posts by itself (deposit credits).
    let gatewayDID: String

    /// Binds `address` on `chain` to `did`, and credits deposits that came from it before it was bound — in one
    /// transaction. Rebinding an address to the same DID refreshes it; to another DID it is refused.
    func bind(did: String, chain: String, address: String, nonce: String, issuedAt: Int64, proof: [UInt8])
        async throws -> Orrery_Settlement_V1_AddressBinding
    {
        let (gatewayDID, logger) = (gatewayDID, logger)
        do {
            return try await client.transaction(logger: logger) { connection in
                var boundAt: Date?
                for try await at in try await connection.query(
                    """
                    INSERT INTO address_bindings (chain, address, did, nonce, issued_at, proof)
                    VALUES (\(chain), \(address), \(did), \(nonce), to_timestamp(\(Double(issuedAt))), \(Data(proof)))
                    ON CONFLICT (chain, address) DO UPDATE
                        SET nonce = EXCLUDED.nonce, issued_at = EXCLUDED.issued_at, proof = EXCLUDED.proof,
                            bound_at = now()
                        WHERE address_bindings.did = EXCLUDED.did
                    RETURNING bound_at
                    """, logger: logger
                ).decode(Date.self) { boundAt = at }
                guard let boundAt else {
                    throw RPCError(code: .alreadyExists, message: "\(address) is bound to another DID on \(chain)")
                }
                var credited: UInt32 = 0
                let pending = try await connection.query(
                    """
                    SELECT transaction_hash, log_index, amount::text FROM chain_deposits
                    WHERE chain = \(chain) AND from_address = \(address) AND credited_to IS NULL
                    ORDER BY block_number, log_index FOR UPDATE
                    """, logger: logger
                ).decode((String, Int64, String).self).collected()
                for (transaction, index, amount) in pending {
                    try await Self.credit(
                        chain: chain, transaction: transaction, logIndex: index, amount: amount, to: did,
                        gatewayDID: gatewayDID, on: connection, logger: logger)
                    credited += 1
                }
                return .with {
                    $0.did = did
                    $0.chain = chain
                    $0.address = address
                    $0.boundAt = Google_Protobuf_Timestamp(date: boundAt)
                    $0.depositsCredited = credited
                }
            }
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "23505" {
            throw RPCError(code: .alreadyExists, message: "nonce '\(nonce)' was used already: sign a fresh challenge")
        }
    }

    /// Credits one observed deposit to `did` (clearing/<chain> → available/<did>) and marks it credited. Its
    /// idempotency key is the deposit's identity, so it can never be credited twice.
    static func credit(
        chain: String, transaction: String, logIndex: Int64, amount: String, to did: String, gatewayDID: String,
        on connection: PostgresConnection, logger: Logger
    ) async throws {
        let key = "deposit/\(chain)/\(transaction)/\(logIndex)"
        let entry = try await LedgerStore.insert(
            kind: "deposit", contractID: nil, memo: "\(chain) \(transaction) #\(logIndex)",
            retry: RetryKey(invoker: gatewayDID, method: "deposit", key: key, describing: key),
            lines: [
                .init(account: "clearing/\(chain)", owner: nil, kind: "clearing", amount: Amount.negated(amount)),
                .init(account: "available/\(did)", owner: did, kind: "available", amount: amount),
            ], newAccount: nil, on: connection, logger: logger)
        try await connection.query(
            """
            UPDATE chain_deposits SET credited_to = \(did), entry_id = \(entry)
            WHERE chain = \(chain) AND transaction_hash = \(transaction) AND log_index = \(logIndex)
            """, logger: logger)
    }

    func bindings(did: String) async throws -> [Orrery_Settlement_V1_AddressBinding] {
        try await client.query(
            "SELECT chain, address, bound_at FROM address_bindings WHERE did = \(did) ORDER BY chain, bound_at DESC",
            logger: logger
        ).decode((String, String, Date).self).collected().map { chain, address, at in
            .with {
                $0.did = did
                $0.chain = chain
                $0.address = address
                $0.boundAt = Google_Protobuf_Timestamp(date: at)
            }
        }
    }

    /// Where `did` is paid on `chain`: its most recently bound address.
    func payoutAddress(did: String, chain: String) async throws -> String? {
        try await client.query(
            """
            SELECT address FROM address_bindings WHERE did = \(did) AND chain = \(chain)
            ORDER BY bound_at DESC LIMIT 1
            """, logger: logger
        ).decode(String.self).collected().first
    }

    /// The DID an address is bound to.
    func owner(chain: String, address: String) async throws -> String? {
        try await client.query(
            "SELECT did FROM address_bindings WHERE chain = \(chain) AND address = \(address)", logger: logger
        ).decode(String.self).collected().first
    }
}
