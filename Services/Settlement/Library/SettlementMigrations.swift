public import OrreryDatabase
internal import OrreryRuntime

/// The versioned schema of the `settlement` schema. Never edit a released migration: add the next one.
public enum SettlementMigrations {
    public static let all: [Migration] = [
        SharedMigrations.consumedInvocations
    ]
}
