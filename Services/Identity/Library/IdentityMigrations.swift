public import OrreryDatabase
internal import OrreryRuntime

/// The versioned schema of the `identity` schema. Never edit a released migration: add the next one.
public enum IdentityMigrations {
    public static let all: [Migration] = [
        SharedMigrations.consumedInvocations
    ]
}
