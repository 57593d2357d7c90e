internal import Foundation
internal import Logging
internal import OrreryPlacement
internal import OrreryProto
internal import Synchronization

/// Workloads relocate as conditions change: a running stateful replica moves (checkpoint, resume) when another
/// feasible device is at least `marginPercent` cheaper than the one it runs on. Looked for whenever a device comes
/// online (one joined, came back, or changed) and every `sweepInterval`, over the 100 oldest running deployments;
/// deployments with a service level are left where they are (a voluntary move would count against its bound).
struct BetterPlacements: Sendable {
    let store: DeploymentStore
    let driver: DeploymentDriver
    let mover: ActorMover
    let logger: Logger
    /// 1…90; 0 turns it off.
    let marginPercent: Int
    var sweepInterval: Duration = .seconds(60)
    private let kicks = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))

    init(store: DeploymentStore, driver: DeploymentDriver, mover: ActorMover, logger: Logger, marginPercent: Int) {
        self.store = store
        self.driver = driver
        self.mover = mover
        self.logger = logger
        self.marginPercent = marginPercent
    }

    /// A device came online: look again soon (kicks coalesce).
    func deviceAppeared() { kicks.continuation.yield() }

    func run() async {
        guard marginPercent > 0 else { return }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: sweepInterval)
                    kicks.continuation.yield()
                }
            }
            group.addTask {
                for await _ in kicks.stream {
                    // Let a burst of changes settle (a device's join and its first heartbeat).
                    try? await Task.sleep(for: .milliseconds(500))
                    do {
                        try await look()
                    } catch {
                        logger.warning("looking for better placements failed", metadata: ["error": "\(error)"])
                    }
                }
            }
        }
    }

    /// Moves each running stateful replica for which a markedly cheaper feasible device exists.
    func look() async throws {
        guard driver.fleet.isSynced else { return }
        for id in try await store.waiting(in: .running, limit: 100) {
            // Under a service level every relocation counts against its bound: none is made voluntarily.
            guard let deployment = try await store.deployment(id), deployment.state == .running, !deployment.spec.hasSla
            else { continue }
            let stateful = Set(deployment.spec.allocations.filter(\.stateful).map(\.name))
            for assignment in deployment.assignments where stateful.contains(assignment.allocation) {
                guard
                    let (_, _, found) = try await driver.replacement(
                        deployment, allocation: assignment.allocation, replica: assignment.replica,
                        leaving: assignment.deviceDid),
                    let target = found,
                    Self.isMarkedlyCheaper(target.hourlyPrice, than: assignment.hourlyPrice, margin: marginPercent)
                else { continue }
                let why =
                    "moved to a device \(100 - Int(target.hourlyPrice * 100 / max(assignment.hourlyPrice, 1)))% cheaper (\(target.hourlyPrice) instead of \(assignment.hourlyPrice) NTX an hour; margin \(marginPercent)%)"
                logger.info(
                    "moving a replica for a better price",
                    metadata: ["deployment": "\(id)", "allocation": "\(assignment.allocation)", "why": "\(why)"])
                do {
                    _ = try await mover.move(
                        deployment, allocation: assignment.allocation, replica: assignment.replica,
                        from: assignment.deviceDid, to: target.deviceDID, why: why)
                } catch {
                    logger.warning(
                        "a move for a better price did not happen",
                        metadata: ["deployment": "\(id)", "error": "\(error)"])
                }
                break  // the deployment changed: its other replicas are looked at next time
            }
        }
    }

    /// Whether `candidate` is at least `margin` percent below `current` (compared without overflow).
    static func isMarkedlyCheaper(_ candidate: UInt64, than current: UInt64, margin: Int) -> Bool {
        candidate < current
            && candidate.multipliedFullWidth(by: 100) <= current.multipliedFullWidth(by: UInt64(100 - margin))
    }
}
