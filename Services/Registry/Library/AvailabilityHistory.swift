internal import Foundation
internal import GRPCCore
internal import Logging
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf

/// How long a device was available in a window, from its recorded changes (each status change is one): online and
/// suspect count as available, offline and gone do not, and before its first record it did not exist.
enum AvailabilityHistory {
    static func compute(
        _ request: Orrery_Registry_V1_GetAvailabilityRequest, client: PostgresClient, logger: Logger
    ) async throws -> Orrery_Registry_V1_Availability {
        guard !request.deviceDid.isEmpty else {
            throw RPCError(code: .invalidArgument, message: "device_did: required")
        }
        guard request.hasFrom, request.hasTo else {
            throw RPCError(code: .invalidArgument, message: "from and to: both required")
        }
        guard let from = request.from.validDate, let requestedTo = request.to.validDate else {
            throw RPCError(
                code: .invalidArgument, message: "from and to: timestamps between 0001-01-01 and 9999-12-31")
        }
        let to = min(requestedTo, Date())
        guard to >= from else {
            throw RPCError(code: .invalidArgument, message: "to must not be before from")
        }
        let rows = try await client.query(
            """
            SELECT changed_at, record FROM device_changes
            WHERE device_did = \(request.deviceDid) AND changed_at <= \(to)
              AND (changed_at >= \(from) OR revision = (
                    SELECT max(revision) FROM device_changes WHERE device_did = \(request.deviceDid) AND changed_at < \(from)))
            ORDER BY revision
            """,
            logger: logger)
        var changes: [(at: Date, available: Bool)] = []
        for try await (at, record) in rows.decode((Date, Data).self) {
            let change = try Orrery_Registry_V1_DeviceChange(serializedBytes: record)
            let status = change.device.status
            changes.append((max(at, from), status == .online || status == .suspect))
        }
        var available = 0.0
        for (index, change) in changes.enumerated() where change.available {
            let end = index + 1 < changes.count ? changes[index + 1].at : to
            available += max(0, end.timeIntervalSince(change.at))
        }
        let total = to.timeIntervalSince(from)
        return .with {
            $0.deviceDid = request.deviceDid
            $0.availableSeconds = available
            $0.totalSeconds = total
            $0.availability = total > 0 ? min(1, available / total) : 1
        }
    }
}
