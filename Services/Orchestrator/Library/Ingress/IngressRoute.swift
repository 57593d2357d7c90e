internal import OrreryProto
internal import SwiftProtobuf

/// A port reachable through the ingress: its DNS label and where it leads.
struct IngressRoute: Sendable, Equatable {
    let deploymentID: String
    let consumer: String
    let allocation: String
    let portName: String
    let port: UInt32
    let isPrivate: Bool
    let label: String

    /// The one DNS label of a deployment's exposed port: `<allocation, first 20>-<port name>-<deployment id without
    /// dep_>`, runs of '-' made one — at most 63 lower-case characters, the same for the deployment's whole life, and
    /// its deployment readable from its last 26 characters.
    static func label(deployment: String, allocation: String, portName: String) -> String {
        let raw = "\(allocation.prefix(20))-\(portName)-\(deployment.dropFirst(4))"
        var label = ""
        for character in raw where !(character == "-" && label.last == "-") { label.append(character) }
        return label
    }

    /// The deployment a label names (nil when it cannot be one of ours): its last 26 characters.
    static func deploymentID(ofLabel label: String) -> String? {
        let suffix = label.suffix(27)
        guard label.utf8.count <= 63, suffix.count == 27, suffix.first == "-" else { return nil }
        let id = suffix.dropFirst()
        guard
            id.utf8.allSatisfy({
                (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0)
                    || (UInt8(ascii: "2")...UInt8(ascii: "7")).contains($0)
            })
        else { return nil }
        return "dep_" + id
    }

    /// Every route of a deployment, in spec order.
    static func routes(of deployment: Orrery_Orchestrator_V1_Deployment) -> [IngressRoute] {
        deployment.spec.allocations.flatMap { allocation in
            allocation.ports.filter { $0.expose == .public || $0.expose == .private }.map { port in
                IngressRoute(
                    deploymentID: deployment.id, consumer: deployment.consumerDid, allocation: allocation.name,
                    portName: port.name, port: port.port, isPrivate: port.expose == .private,
                    label: label(deployment: deployment.id, allocation: allocation.name, portName: port.name))
            }
        }
    }

    /// The routes as the deployment's status shows them.
    static func status(
        of deployment: Orrery_Orchestrator_V1_Deployment, ingress: IngressSettings?, boundPort: Int?
    ) -> [Orrery_Orchestrator_V1_IngressRoute] {
        routes(of: deployment).map { route in
            .with {
                $0.allocation = route.allocation
                $0.portName = route.portName
                $0.port = route.port
                $0.expose = route.isPrivate ? .private : .public
                $0.label = route.label
                if let ingress {
                    $0.host = "\(route.label).\(ingress.domain)"
                    $0.url = ingress.url(host: $0.host, boundPort: boundPort ?? ingress.port)
                }
            }
        }
    }
}
