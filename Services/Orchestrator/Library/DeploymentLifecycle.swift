internal import OrreryProto

/// The moves a deployment's state may make, defined once: every transition the store writes is checked against it
/// (`DeploymentStore.transition`), so a move no rule allows — out of a final state, into `deploying` without an
/// escrow, to `completed` without running — is refused where it would be written, whatever code asked for it.
///
/// submitted → matched → offered → contracted → escrowed → deploying → running → completed, with:
/// - `matched` again from `offered` (placed again after declines or expiries) and from `matched`;
/// - `deploying` again from `running` (a replica relocated) and from `deploying`;
/// - the same state from any non-final one (the record changes, the state does not: contracts attached);
/// - `failed` and `cancelled` from any non-final state;
/// - nothing out of `completed`, `failed` or `cancelled`.
enum DeploymentLifecycle {
    typealias State = Orrery_Orchestrator_V1_DeploymentState

    /// The states each state may move to.
    static let moves: [State: Set<State>] = [
        .submitted: [.matched],
        .matched: [.offered, .matched],
        .offered: [.contracted, .matched],
        .contracted: [.escrowed],
        .escrowed: [.deploying],
        .deploying: [.running, .deploying],
        .running: [.completed, .deploying],
    ]

    /// Whether a deployment in `from` may move to `to`.
    static func allows(_ from: State, _ to: State) -> Bool {
        guard !from.isTerminal, from != .unspecified, to != .unspecified else { return false }
        if from == to || to == .failed || to == .cancelled { return true }
        return moves[from]?.contains(to) ?? false
    }
}

/// A transition no rule of `DeploymentLifecycle` allows.
struct IllegalTransition: Error, CustomStringConvertible {
    let deployment: String
    let from: Orrery_Orchestrator_V1_DeploymentState
    let to: Orrery_Orchestrator_V1_DeploymentState

    var description: String { "deployment \(deployment) cannot move from \(from) to \(to)" }
}
