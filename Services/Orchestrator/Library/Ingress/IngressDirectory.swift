internal import Foundation
internal import OrreryProto
internal import Synchronization

/// Where a host name leads: its route, and the replicas that serve it now. Deployments are read from the database
/// and remembered for a second, so a burst of connections costs one read, and a host name that leads nowhere (a
/// guess, a deployment that ended) is remembered too: nobody outside can make the ingress read the database faster
/// than once a second per name — and at most `maximumLookups` reads run at once.
final class IngressDirectory: Sendable {
    /// A route and its deployment as read.
    struct Entry: Sendable {
        let route: IngressRoute
        let deployment: Orrery_Orchestrator_V1_Deployment
    }

    let domain: String
    private let lookup: @Sendable (String) async throws -> Orrery_Orchestrator_V1_Deployment?
    /// How long a read is used.
    static let freshness = Duration.seconds(1)
    static let maximumRemembered = 10_000
    static let maximumLookups = 32
    private let memory = RecentReads<String, Entry>(freshness: freshness, capacity: maximumRemembered)
    private let lookups = Mutex(0)

    init(domain: String, lookup: @escaping @Sendable (String) async throws -> Orrery_Orchestrator_V1_Deployment?) {
        self.domain = domain
        self.lookup = lookup
    }

    /// The label a Host header value names under this ingress's domain (its port, if any, ignored), or nil.
    func label(ofHost host: String) -> String? {
        var name = host.lowercased()
        if let colon = name.lastIndex(of: ":"), !name.hasPrefix("[") { name = String(name[..<colon]) }
        if name.hasSuffix(".") { name.removeLast() }
        guard name.hasSuffix("." + domain) else { return nil }
        let label = name.dropLast(domain.count + 1)
        guard !label.isEmpty, !label.contains(".") else { return nil }
        return String(label)
    }

    /// The route and deployment `label` leads to.
    func entry(forLabel label: String) async throws -> Entry? {
        if let recalled = memory.recall(label) { return recalled.value }
        guard let id = IngressRoute.deploymentID(ofLabel: label) else { return nil }
        let admitted = lookups.withLock { count -> Bool in
            guard count < Self.maximumLookups else { return false }
            count += 1
            return true
        }
        guard admitted else { throw IngressDirectoryBusy() }
        defer { lookups.withLock { $0 -= 1 } }
        // An ended deployment serves nothing: its host names lead nowhere.
        let deployment = try await lookup(id).flatMap { $0.state.isTerminal ? nil : $0 }
        let entry = deployment.flatMap { deployment in
            IngressRoute.routes(of: deployment).first { $0.label == label }.map {
                Entry(route: $0, deployment: deployment)
            }
        }
        memory.remember(entry, for: label)
        return entry
    }
}

/// More lookups at once than the directory runs.
struct IngressDirectoryBusy: Error {}
