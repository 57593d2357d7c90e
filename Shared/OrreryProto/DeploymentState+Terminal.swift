extension Orrery_Orchestrator_V1_DeploymentState {
    /// The states a deployment never leaves, for the orchestrator, the CLI and every client alike.
    public static let terminal: Set<Self> = [.completed, .failed, .cancelled]

    /// Whether the deployment ended (completed, failed or cancelled).
    public var isTerminal: Bool { Self.terminal.contains(self) }
}
