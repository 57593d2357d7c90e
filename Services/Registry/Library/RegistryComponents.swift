internal import Foundation
internal import Logging
internal import OrreryDatabase
internal import OrreryProto
internal import OrreryRuntime
internal import PostgresNIO
internal import SwiftProtobuf

/// The registry's parts, built once per process and shared by its handlers and its background workers.
struct RegistryComponents: Sendable {
    let store: DeviceStore
    let liveness: Liveness
    let changes: ChangeFeed<Orrery_Registry_V1_DeviceChange>

    /// The parts for this environment.
    static func make(_ environment: ServiceEnvironment, settings: RegistrySettings, database: PostgresClient)
        -> RegistryComponents
    {
        let logger = environment.logger
        return RegistryComponents(
            store: DeviceStore(client: database, logger: logger),
            liveness: Liveness(client: database, logger: logger, interval: settings.livenessInterval),
            changes: ChangeFeed(
                client: database, channel: "orrery_device_changes", writersLock: DeviceStore.changeLogLock,
                logger: logger
            ) {
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
    }
}
