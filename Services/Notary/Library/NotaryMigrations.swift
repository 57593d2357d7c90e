public import OrreryDatabase
internal import OrreryRuntime

/// The versioned schema of the `notary` schema. Never edit a released migration: add the next one.
public enum NotaryMigrations {
    public static let all: [Migration] = [
        SharedMigrations.consumedInvocations
    ]
}
