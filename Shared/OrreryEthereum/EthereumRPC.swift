internal import OrreryIdentity
public import Foundation
internal import OrreryHTTPClient

/// A JSON-RPC error from the node, or a transport failure.
public enum EthereumRPCError: Error, CustomStringConvertible, Equatable {
    case node(code: Int, message: String)
    case transport(String)
    case unexpected(String)

    public var description: String {
        switch self {
        case .node(let code, let message): "the Ethereum node refused it (\(code)): \(message)"
        case .transport(let why): "the Ethereum node is unreachable: \(why)"
        case .unexpected(let why): "unexpected answer from the Ethereum node: \(why)"
        }
    }
}

/// A transaction receipt: mined in `blockNumber`, succeeded when `status` is 1.
public struct EthereumReceipt: Sendable, Hashable {
    public let transactionHash: [UInt8]
    public let blockNumber: UInt64
    public let succeeded: Bool
}

/// One event log.
public struct EthereumLog: Sendable, Hashable {
    public let address: EthereumAddress
    public let topics: [[UInt8]]
    public let data: [UInt8]
    public let blockNumber: UInt64
    public let transactionHash: [UInt8]
    public let logIndex: UInt64
}

/// The latest block's number, time and base fee.
public struct EthereumHead: Sendable, Hashable {
    public let number: UInt64
    public let timestamp: UInt64
    public let baseFeePerGas: UInt256
}

/// A client of an Ethereum node's JSON-RPC endpoint over HTTP(S), for the calls the settlement gateway makes.
public struct EthereumRPC: Sendable {
    public let endpoint: URL
    private let timeout: Duration

    public init(endpoint: URL, timeout: Duration = .seconds(10)) {
        self.endpoint = endpoint
        self.timeout = timeout
    }

    /// Calls `method`; returns its `result`.
    public func call(_ method: String, _ params: [JSONValue]) async throws -> JSONValue {
        let body = JSONValue.object([
            ("jsonrpc", .string("2.0")), ("id", .number("1")), ("method", .string(method)), ("params", .array(params)),
        ])
        let response: HTTPClient.Response
        do {
            response = try await HTTPClient.post(
                endpoint, body: Array(body.serialized.utf8), contentType: "application/json", timeout: timeout)
        } catch {
            throw EthereumRPCError.transport("\(error)")
        }
        guard response.status == 200 else {
            throw EthereumRPCError.transport("HTTP \(response.status) from \(endpoint)")
        }
        let data = response.body
        let answer = try JSONValue.parse(String(decoding: data, as: UTF8.self))
        if let error = answer["error"], error != .null {
            let code = error["code"].flatMap { if case .number(let text) = $0 { Int(text) } else { nil } } ?? 0
            throw EthereumRPCError.node(code: code, message: error["message"]?.stringValue ?? error.serialized)
        }
        guard let result = answer["result"] else { throw EthereumRPCError.unexpected("no result for \(method)") }
        return result
    }

    public func chainID() async throws -> UInt64 { try Self.quantity64(try await call("eth_chainId", []), "chainId") }

    public func head() async throws -> EthereumHead {
        let block = try await call("eth_getBlockByNumber", [.string("latest"), .bool(false)])
        return EthereumHead(
            number: try Self.quantity64(block["number"], "number"),
            timestamp: try Self.quantity64(block["timestamp"], "timestamp"),
            baseFeePerGas: try Self.quantity(block["baseFeePerGas"], "baseFeePerGas"))
    }

    public func maxPriorityFeePerGas() async throws -> UInt256 {
        try Self.quantity(try await call("eth_maxPriorityFeePerGas", []), "maxPriorityFeePerGas")
    }

    /// The account's next nonce, counting pending transactions when `pending`.
    public func transactionCount(_ address: EthereumAddress, pending: Bool) async throws -> UInt64 {
        try Self.quantity64(
            try await call(
                "eth_getTransactionCount", [.string(address.checksummed), .string(pending ? "pending" : "latest")]),
            "nonce")
    }

    /// Sends a signed transaction; returns its hash.
    public func sendRawTransaction(_ raw: [UInt8]) async throws -> [UInt8] {
        try Self.data(try await call("eth_sendRawTransaction", [.string(Hex.prefixed(raw))]), "hash")
    }

    /// The receipt, or nil while the transaction is not mined.
    public func receipt(_ hash: [UInt8]) async throws -> EthereumReceipt? {
        let receipt = try await call("eth_getTransactionReceipt", [.string(Hex.prefixed(hash))])
        guard receipt != .null else { return nil }
        return EthereumReceipt(
            transactionHash: hash, blockNumber: try Self.quantity64(receipt["blockNumber"], "blockNumber"),
            succeeded: try Self.quantity64(receipt["status"], "status") == 1)
    }

    /// `eth_call` against the latest block.
    public func call(to: EthereumAddress, data: [UInt8]) async throws -> [UInt8] {
        try Self.data(
            try await call(
                "eth_call",
                [.object([("to", .string(to.checksummed)), ("data", .string(Hex.prefixed(data)))]), .string("latest")]),
            "call result")
    }

    /// Logs of `address` in blocks `from…to` whose topics match (nil matches any).
    public func logs(address: EthereumAddress, topics: [[UInt8]?], from: UInt64, to: UInt64) async throws
        -> [EthereumLog]
    {
        let filter = JSONValue.object([
            ("address", .array([.string(address.checksummed)])),
            ("fromBlock", .string(UInt256(from).quantity)), ("toBlock", .string(UInt256(to).quantity)),
            ("topics", .array(topics.map { $0.map { .string(Hex.prefixed($0)) } ?? .null })),
        ])
        guard let items = try await call("eth_getLogs", [filter]).arrayValue else {
            throw EthereumRPCError.unexpected("eth_getLogs did not answer a list")
        }
        return try items.map { item in
            guard let logAddress = item["address"]?.stringValue.flatMap({ EthereumAddress($0.lowercased()) }) else {
                throw EthereumRPCError.unexpected("a log without an address")
            }
            return EthereumLog(
                address: logAddress,
                topics: try (item["topics"]?.arrayValue ?? []).map { try Self.data($0, "topic") },
                data: try Self.data(item["data"], "data"),
                blockNumber: try Self.quantity64(item["blockNumber"], "blockNumber"),
                transactionHash: try Self.data(item["transactionHash"], "transactionHash"),
                logIndex: try Self.quantity64(item["logIndex"], "logIndex"))
        }
    }

    static func quantity(_ value: JSONValue?, _ field: String) throws -> UInt256 {
        guard let text = value?.stringValue, let quantity = UInt256(quantity: text) else {
            throw EthereumRPCError.unexpected("\(field) is not a quantity: \(value?.serialized ?? "missing")")
        }
        return quantity
    }

    /// A quantity that block numbers, nonces, log indexes and times fit: below 2⁶³, so callers may store it as a
    /// signed 64-bit integer and add small numbers to it without overflow.
    static func quantity64(_ value: JSONValue?, _ field: String) throws -> UInt64 {
        guard let small = try quantity(value, field).uint64, small <= UInt64(Int64.max) else {
            throw EthereumRPCError.unexpected("\(field) does not fit 63 bits")
        }
        return small
    }

    static func data(_ value: JSONValue?, _ field: String) throws -> [UInt8] {
        guard let text = value?.stringValue, let bytes = Hex.decode(text) else {
            throw EthereumRPCError.unexpected("\(field) is not hex data: \(value?.serialized ?? "missing")")
        }
        return bytes
    }
}
