public import GRPCCore

extension Metadata {
    /// The first `authorization` entry as text (`Bearer <UCAN container>`), or nil when there is none.
    public var authorizationHeader: String? {
        guard let value = self["authorization"].first(where: { _ in true }) else { return nil }
        switch value {
        case .string(let text): return text
        case .binary(let bytes): return String(decoding: bytes, as: UTF8.self)
        }
    }
}
