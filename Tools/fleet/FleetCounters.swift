import Foundation
import Synchronization

/// What the fleet did, counted across every device's tasks.
final class FleetCounters: Sendable {
    enum Name: String, CaseIterable {
        case joined, joinFailures = "join_failures", heartbeats, heartbeatStreamFailures = "heartbeat_stream_failures"
        case rejoins, rttReports = "rtt_reports", linesOpened = "lines_opened", lineFailures = "line_failures"
        case offers, bids, declines, deploys, repeatedDeploys = "repeated_deploys", completions, stops
        case withdrawnPromises = "withdrawn_promises", receiptsSigned = "receipts_signed"
        case receiptsRecorded = "receipts_recorded", left, silenced, partitioned, returned
        case unsupportedRequests = "unsupported_requests"
        /// Devices that sent a first heartbeat / opened a first line.
        case devicesHeartbeating = "devices_heartbeating", devicesOnLine = "devices_on_line"
    }

    private let values = Mutex([Int](repeating: 0, count: Name.allCases.count))

    func add(_ name: Name, _ amount: Int = 1) {
        let index = Self.index(name)
        values.withLock { $0[index] += amount }
    }

    subscript(_ name: Name) -> Int {
        let index = Self.index(name)
        return values.withLock { $0[index] }
    }

    /// Every counter by its name.
    var snapshot: [String: Int] {
        let values = values.withLock { $0 }
        return Dictionary(uniqueKeysWithValues: Name.allCases.enumerated().map { ($1.rawValue, values[$0]) })
    }

    private static func index(_ name: Name) -> Int { Name.allCases.firstIndex(of: name) ?? 0 }
}

/// Where each replica was deployed and when, across the fleet: what a mass event's moves are measured by.
final class PlacementJournal: Sendable {
    /// One Deploy a device received.
    struct Placement: Sendable {
        let device: Int
        let at: ContinuousClock.Instant
    }

    private let placements = Mutex<[String: [Placement]]>([:])

    /// Records device `device` receiving the Deploy of `replica` ("deployment/allocation/replica").
    func deployed(_ replica: String, on device: Int) {
        let now = ContinuousClock.now
        placements.withLock { $0[replica, default: []].append(Placement(device: device, at: now)) }
    }

    /// Each replica's placements, in order.
    var all: [String: [Placement]] { placements.withLock { $0 } }
}
