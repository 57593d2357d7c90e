internal import Foundation
internal import GRPCCore
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf

/// `ListRttSamples`: the latest sample per (device, landmark), measured after a time, ordered by device and
/// landmark, in pages whose token is the last pair returned.
struct RttSampleListing {
    let measuredAfter: Date?
    let pageSize: Int
    let after: (device: String, landmark: String)?

    init(_ request: Orrery_Registry_V1_ListRttSamplesRequest) throws {
        guard (0...10_000).contains(request.pageSize) else {
            throw RPCError(code: .invalidArgument, message: "page_size: 1…10000, or 0 for 1000")
        }
        pageSize = request.pageSize == 0 ? 1000 : Int(request.pageSize)
        if request.hasMeasuredAfter {
            guard let date = request.measuredAfter.validDate else {
                throw RPCError(
                    code: .invalidArgument, message: "measured_after: a timestamp between 0001-01-01 and 9999-12-31")
            }
            measuredAfter = date
        } else {
            measuredAfter = nil
        }
        if request.pageToken.isEmpty {
            after = nil
        } else {
            guard let data = Data(base64Encoded: request.pageToken),
                case let parts = String(decoding: data, as: UTF8.self).split(
                    separator: "\u{0}", omittingEmptySubsequences: false),
                parts.count == 2
            else {
                throw RPCError(code: .invalidArgument, message: "page_token: not a token this registry returned")
            }
            after = (String(parts[0]), String(parts[1]))
        }
    }

    static func token(device: String, landmark: String) -> String {
        Data("\(device)\u{0}\(landmark)".utf8).base64EncodedString()
    }

    func run(on client: PostgresClient, logger: Logger) async throws -> Orrery_Registry_V1_ListRttSamplesResponse {
        let since = measuredAfter ?? Date(timeIntervalSince1970: 0)
        let afterDevice = after?.device ?? ""
        let afterLandmark = after?.landmark ?? ""
        let rows = try await client.query(
            """
            SELECT device_did, landmark, rtt_ms, measured_at FROM rtt_samples
            WHERE measured_at > \(since) AND (device_did, landmark) > (\(afterDevice), \(afterLandmark))
            ORDER BY device_did, landmark LIMIT \(pageSize + 1)
            """,
            logger: logger)
        var response = Orrery_Registry_V1_ListRttSamplesResponse()
        for try await (device, landmark, rtt, measuredAt) in rows.decode((String, String, Double, Date).self) {
            response.samples.append(
                .with {
                    $0.deviceDid = device
                    $0.landmark = landmark
                    $0.rttMs = rtt
                    $0.measuredAt = Google_Protobuf_Timestamp(date: measuredAt)
                })
        }
        if response.samples.count > pageSize {
            response.samples.removeLast()
            let last = response.samples[response.samples.count - 1]
            response.nextPageToken = Self.token(device: last.deviceDid, landmark: last.landmark)
        }
        return response
    }
}
