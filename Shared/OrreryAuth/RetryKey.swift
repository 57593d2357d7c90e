internal import Crypto
#if canImport(FoundationEssentials)
    public import FoundationEssentials
#else
    public import Foundation
#endif
internal import OrreryBasics
internal import GRPCCore
public import SwiftProtobuf

/// What makes a mutating call safe to retry: the caller, the method, the client's idempotency key and a digest of
/// the request, so a retry gets the first answer and the same key reused for another request is refused.
public struct RetryKey: Sendable, Hashable {
    public var invoker: String
    public var method: String
    public var key: String
    public var requestSHA256: Data

    /// - Throws: `INVALID_ARGUMENT` when `key` is not 1…200 characters.
    public init(request: some SwiftProtobuf.Message, key: String, method: String, invoker: String) throws {
        try Self.validate(key)
        self.invoker = invoker
        self.method = method
        self.key = key
        requestSHA256 = Data(SHA256.hash(data: try request.serializedBytes() as [UInt8]))
    }

    /// A key for an act the service itself performs (e.g. crediting an observed deposit): its description stands
    /// for the request.
    public init(invoker: String, method: String, key: String, describing act: String) {
        self.invoker = invoker
        self.method = method
        self.key = key
        requestSHA256 = Data(SHA256.hash(data: Data(act.utf8)))
    }

    /// Checks an idempotency key's length (every service takes 1…200 characters).
    public static func validate(_ key: String) throws {
        guard (1...200).contains(key.count) else {
            throw RPCError(
                code: .invalidArgument, message: "idempotency_key: required, 1…200 characters, the same for every retry"
            )
        }
    }
}
