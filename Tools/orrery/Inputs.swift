import ArgumentParser
import Foundation
import OrreryIdentity

/// Reading what people hand the CLI: token files, durations, JSON.
enum Inputs {
    /// The tokens in a file: one raw DAG-CBOR envelope, its base64, or a UCAN container (text or bytes).
    static func tokens(inFile path: String) throws -> [[UInt8]] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ValidationError("cannot read \(path)")
        }
        let bytes = Array(data)
        if let first = bytes.first, first == 0x82 { return [bytes] }  // a CBOR array of two: a raw envelope
        if let containerTokens = try? UCANContainer.decode(bytes) { return containerTokens }
        let text = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if let containerTokens = try? UCANContainer.decode(text) { return containerTokens }
        if let decoded = Base64.decode(text) { return [decoded] }
        throw ValidationError("\(path) holds no UCAN token (raw DAG-CBOR, base64 or a container)")
    }

    /// Delegations from `--proof` files, ordered into one chain (root first).
    static func chain(_ paths: [String]) throws -> [Delegation] {
        let delegations = try paths.flatMap { try tokens(inFile: $0) }.map { try Delegation(bytes: $0) }
        return try DelegationChain.ordered(delegations)
    }

    /// `90s`, `30m`, `24h`, `7d`, or plain seconds.
    static func seconds(_ text: String) throws -> Int64 {
        let units: [Character: Int64] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        if let unit = text.last, let multiplier = units[unit], let value = Int64(text.dropLast()), value > 0 {
            return value * multiplier
        }
        if let value = Int64(text), value > 0 { return value }
        throw ValidationError("'\(text)' is not a duration (e.g. 90s, 30m, 24h, 7d)")
    }

    static func json(_ text: String, what: String) throws -> IPLD {
        do {
            return try IPLDJSON.parse(text)
        } catch {
            throw ValidationError("\(what): \(error)")
        }
    }

    static func key(_ path: String) throws -> SigningKey {
        do {
            return try KeyFile.read(path)
        } catch {
            throw ValidationError("\(error)")
        }
    }

    static var now: Int64 { Int64(Date().timeIntervalSince1970) }
}
