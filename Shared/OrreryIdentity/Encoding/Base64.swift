internal import Foundation

/// Base64 forms the protocols here use: standard with padding, and URL-safe without padding.
public enum Base64 {
    public static func standard(_ bytes: some Collection<UInt8>) -> String {
        Data(bytes).base64EncodedString()
    }

    public static func url(_ bytes: some Collection<UInt8>) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// Decodes either alphabet, with or without padding; nil for anything else.
    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
        var normalized = text.trimmingCharacters(in: .whitespacesAndNewlines)
            .replacingOccurrences(of: "-", with: "+")
            .replacingOccurrences(of: "_", with: "/")
        normalized = normalized.replacingOccurrences(of: "=", with: "")
        normalized += String(repeating: "=", count: (4 - normalized.count % 4) % 4)
        return Data(base64Encoded: normalized).map(Array.init)
    }
}
