public import OrreryDatabase
internal import OrreryRuntime

/// The versioned schema of the `orchestrator` schema. Never edit a released migration: add the next one.
public enum OrchestratorMigrations {
    public static let all: [Migration] = [
        SharedMigrations.consumedInvocations
    ]
}
