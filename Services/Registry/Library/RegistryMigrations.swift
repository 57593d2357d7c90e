public import OrreryDatabase
internal import OrreryRuntime

/// The versioned schema of the `registry` schema. Never edit a released migration: add the next one.
public enum RegistryMigrations {
    public static let all: [Migration] = [
        SharedMigrations.consumedInvocations
    ]
}
