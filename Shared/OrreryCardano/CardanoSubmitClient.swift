public import Foundation
internal import OrreryHTTPClient

/// A client of a cardano-submit-api endpoint: POSTs a signed transaction's CBOR to `/api/submit/tx` and returns the
/// transaction id the node accepted. Used only when one is configured; no Cardano node runs here.
public struct CardanoSubmitClient: Sendable {
    public let endpoint: URL

    public init(endpoint: URL) { self.endpoint = endpoint }

    public enum Failure: Error, CustomStringConvertible, Equatable {
        case refused(status: Int, reason: String)
        case unexpected(String)

        public var description: String {
            switch self {
            case .refused(let status, let reason): "the submit API refused the transaction (HTTP \(status)): \(reason)"
            case .unexpected(let why): "unexpected answer from the submit API: \(why)"
            }
        }
    }

    /// Submits `transaction` (the signed CBOR); returns the id the API reports (hex), which must be the body's.
    public func submit(_ transaction: [UInt8], expectedID: [UInt8]) async throws -> String {
        let url = endpoint.appendingPathComponent("api/submit/tx")
        let response = try await HTTPClient.post(url, body: transaction, contentType: "application/cbor")
        let text = String(decoding: response.body, as: UTF8.self)
        guard response.status == 202 || response.status == 200 else {
            throw Failure.refused(status: response.status, reason: String(text.prefix(500)))
        }
        // The API answers with the id as a JSON string.
        let id = text.trimmingCharacters(in: CharacterSet(charactersIn: "\" \n\r\t"))
        let expected = expectedID.map { String(format: "%02x", $0) }.joined()
        guard id.lowercased() == expected else {
            throw Failure.unexpected("it reports id \(id), the transaction's is \(expected)")
        }
        return id
    }
}
