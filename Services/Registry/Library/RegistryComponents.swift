internal import Foundation
internal import Logging
internal import OrreryDatabase
internal import OrreryProto
internal import OrreryRuntime
internal import PostgresNIO
internal import SwiftProtobuf
internal import Synchronization

/// The registry's per-process parts, shared by its handlers and its background tasks.
struct RegistryComponents: Sendable {
    let store: DeviceStore
    let liveness: Liveness
    let changes: ChangeFeed<Orrery_Registry_V1_DeviceChange>

    private static let current = Mutex<RegistryComponents?>(nil)

    /// The process's components, made on first use.
    static func shared(_ environment: ServiceEnvironment, database: PostgresClient) -> RegistryComponents {
        current.withLock { current in
            if let current { return current }
            let logger = environment.logger
            let made = RegistryComponents(
                store: DeviceStore(client: database, logger: logger),
                liveness: Liveness(client: database, logger: logger, interval: environment.settings.livenessInterval),
                changes: ChangeFeed(client: database, channel: "orrery_device_changes", logger: logger) {
                    client, after, limit in
                    let rows = try await client.query(
                        "SELECT revision, record FROM device_changes WHERE revision > \(after) ORDER BY revision LIMIT \(limit)",
                        logger: logger)
                    var changes: [(revision: Int64, change: Orrery_Registry_V1_DeviceChange)] = []
                    for try await (revision, record) in rows.decode((Int64, Data).self) {
                        changes.append((revision, try Orrery_Registry_V1_DeviceChange(serializedBytes: record)))
                    }
                    return changes
                })
            current = made
            return made
        }
    }
}
