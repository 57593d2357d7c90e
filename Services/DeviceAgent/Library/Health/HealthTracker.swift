#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryProto
internal import SwiftProtobuf

/// A replica's health as its checks come in: a state machine the agent feeds each check's result and the time, which
/// answers what to do (report a change, restart the replica in place, give up on this device). It reads no clock and
/// runs nothing, so every rule is tested as data (`HealthTrackerTests`).
struct HealthTracker: Sendable, Equatable {
    /// A spec's check with its defaults and bounds applied.
    struct Policy: Sendable, Equatable {
        var interval: Duration
        var timeout: Duration
        var healthyThreshold: Int
        var unhealthyThreshold: Int
        var startPeriod: Duration
        var maxRestarts: Int

        init(_ check: Orrery_Orchestrator_V1_HealthCheck) {
            let interval = check.intervalSeconds == 0 ? 10 : Int64(min(check.intervalSeconds, 300))
            self.interval = .seconds(interval)
            timeout = .seconds(min(check.timeoutSeconds == 0 ? 2 : Int64(min(check.timeoutSeconds, 60)), interval))
            healthyThreshold = check.healthyThreshold == 0 ? 1 : Int(min(check.healthyThreshold, 10))
            unhealthyThreshold = check.unhealthyThreshold == 0 ? 3 : Int(min(check.unhealthyThreshold, 10))
            startPeriod = .seconds(Int64(min(check.startPeriodSeconds, 3600)))
            maxRestarts = check.hasMaxRestarts ? Int(min(check.maxRestarts, 100)) : 3
        }
    }

    /// What the agent does after a check.
    enum Action: Equatable, Sendable {
        /// Nothing changed that the orchestrator needs to hear.
        case none
        /// The status changed: report it.
        case report
        /// Unhealthy with restarts left: restart the replica in place, then call `started`, then report.
        case restart
        /// Unhealthy after its last allowed restart: stop it here (it is to run on another device), then report.
        case giveUp
    }

    let policy: Policy
    /// What the orchestrator hears.
    private(set) var health = Orrery_Orchestrator_V1_ReplicaHealth()
    /// Passes in a row.
    private var passes = 0
    /// When the current run (the start or the last restart) began.
    private var runStart: Date

    /// A tracker for a replica (re)started at `start`, with what an earlier tracker of it recorded (after the agent
    /// restarted): its restarts count towards the bound.
    init(policy: Policy, startedAt start: Date, restoring earlier: Orrery_Orchestrator_V1_ReplicaHealth? = nil) {
        self.policy = policy
        runStart = start
        if let earlier { health = earlier }
        if !(earlier?.status == .healthy) { health.status = .starting }
        if earlier == nil { health.changedAt = Google_Protobuf_Timestamp(date: start) }
    }

    /// The replica was restarted in place at `time`: starting again, its failures forgotten, its start period anew.
    mutating func started(at time: Date) {
        runStart = time
        passes = 0
        health.status = .starting
        health.consecutiveFailures = 0
        health.changedAt = Google_Protobuf_Timestamp(date: time)
    }

    /// The restart it asked for could not be made: it gives up on this device as after its last restart.
    mutating func couldNotRestart() {
        health.status = .unhealthy
        health.gaveUp = true
    }

    /// A check passed at `time`.
    mutating func passed(at time: Date) -> Action {
        passes += 1
        health.consecutiveFailures = 0
        guard health.status != .healthy, passes >= policy.healthyThreshold else { return .none }
        health.status = .healthy
        health.changedAt = Google_Protobuf_Timestamp(date: time)
        return .report
    }

    /// A check failed at `time`, for `reason` (what was tried and what happened).
    mutating func failed(at time: Date, reason: String) -> Action {
        passes = 0
        health.lastFailure = String(reason.prefix(500))
        // Failures while a (re)started replica is still within its start period do not count.
        if health.status == .starting, time.timeIntervalSince(runStart) < Double(policy.startPeriod.components.seconds)
        {
            return .none
        }
        health.consecutiveFailures += 1
        guard Int(health.consecutiveFailures) >= policy.unhealthyThreshold else { return .none }
        health.status = .unhealthy
        health.changedAt = Google_Protobuf_Timestamp(date: time)
        if Int(health.restarts) < policy.maxRestarts {
            health.restarts += 1
            return .restart
        }
        health.gaveUp = true
        return .giveUp
    }
}
