internal import OrreryProto

/// The rules for an allocation's ports and health check.
extension WorkloadSpecValidator {
    /// Ports of one allocation.
    public static let maximumPorts = 16

    /// Exposed ports whose ingress labels would be the same (allocations alike in their first 20 characters, with
    /// ports of one name): each must have its own host name.
    static func checkRouteLabels(
        _ allocations: [Orrery_Orchestrator_V1_AllocationSpec], _ problem: (String, String) -> Void
    ) {
        var seen: [String: String] = [:]
        for (index, allocation) in allocations.enumerated() {
            for port in allocation.ports where port.expose == .public || port.expose == .private {
                let label = IngressRoute.label(deployment: "dep_", allocation: allocation.name, portName: port.name)
                if let other = seen[label] {
                    problem(
                        "allocations[\(index)].ports",
                        "port \(port.name) of \(allocation.name) would have the same host name as \(other)'s: "
                            + "host names take an allocation's first 20 characters, so rename one")
                } else {
                    seen[label] = "port \(port.name) of \(allocation.name)"
                }
            }
        }
    }

    /// Partners of other deployments one allocation reaches.
    public static let maximumReaches = 16

    /// Its partners in other deployments: each a name of its own (a DNS label no allocation of the spec and no other
    /// reach has), a deployment id, an allocation name and 1…16 ports.
    static func checkReaches(
        _ allocation: Orrery_Orchestrator_V1_AllocationSpec, allocationNames: Set<String>, path: String,
        _ problem: (String, String) -> Void
    ) {
        if allocation.reaches.count > maximumReaches { problem("\(path).reaches", "at most \(maximumReaches)") }
        var seen: [String: Int] = [:]
        for (index, partner) in allocation.reaches.enumerated().prefix(maximumReaches) {
            let field = "\(path).reaches[\(index)]"
            if !isAllocationName(partner.name) {
                problem(
                    "\(field).name",
                    "lowercase letters, digits and '-', 1…63 characters, got '\(partner.name.prefix(64))'")
            } else if allocationNames.contains(partner.name) {
                problem("\(field).name", "'\(partner.name)' is the name of an allocation of this spec")
            } else if let other = seen[partner.name] {
                problem("\(field).name", "'\(partner.name)' is already the name of reaches[\(other)]")
            } else {
                seen[partner.name] = index
            }
            if !isDeploymentID(partner.deploymentID) {
                problem(
                    "\(field).deployment_id",
                    "a deployment id (dep_ and 26 of a-z, 2-7), got '\(partner.deploymentID.prefix(64))'")
            }
            if !isAllocationName(partner.allocation) {
                problem("\(field).allocation", "an allocation name, got '\(partner.allocation.prefix(64))'")
            }
            if partner.ports.isEmpty || partner.ports.count > maximumPorts {
                problem("\(field).ports", "1…\(maximumPorts) ports")
            } else if let bad = partner.ports.first(where: { !(1...65535).contains($0) }) {
                problem("\(field).ports", "each 1…65535, got \(bad)")
            } else if Set(partner.ports).count != partner.ports.count {
                problem("\(field).ports", "each port once")
            }
        }
    }

    /// Whether `id` is a deployment id: `dep_` and 26 characters of base32 (a-z, 2-7).
    static func isDeploymentID(_ id: String) -> Bool {
        id.hasPrefix("dep_") && id.count == 30
            && id.dropFirst(4).allSatisfy { ("a"..."z").contains($0) || ("2"..."7").contains($0) }
    }

    /// Its ports (names, numbers, protocol, who may reach them) and its health check.
    static func checkService(
        _ allocation: Orrery_Orchestrator_V1_AllocationSpec, path: String, _ problem: (String, String) -> Void
    ) {
        if allocation.ports.count > maximumPorts { problem("\(path).ports", "at most \(maximumPorts)") }
        var names: [String: Int] = [:]
        var numbers: [UInt32: Int] = [:]
        for (index, port) in allocation.ports.enumerated().prefix(maximumPorts) {
            let field = "\(path).ports[\(index)]"
            if !isPortName(port.name) {
                problem(
                    "\(field).name",
                    "1…15 of a-z, 0-9 and '-', starting with a letter, got '\(port.name.prefix(64))'")
            } else if let other = names[port.name] {
                problem("\(field).name", "'\(port.name)' is already the name of ports[\(other)]")
            } else {
                names[port.name] = index
            }
            if !(1...65535).contains(port.port) {
                problem("\(field).port", "1…65535, got \(port.port)")
            } else if let other = numbers[port.port] {
                problem("\(field).port", "\(port.port) is already ports[\(other)]")
            } else {
                numbers[port.port] = index
            }
            if case .UNRECOGNIZED(let value) = port.protocol {
                problem("\(field).protocol", "PROTOCOL_HTTP or PROTOCOL_TCP, got \(value)")
            }
            switch port.expose {
            case .unspecified, .ensemble:
                break
            case .public, .private:
                if port.protocol == .tcp {
                    problem(
                        "\(field).expose",
                        "the ingress carries HTTP only: a PROTOCOL_TCP port is reached with `orrery port-forward` "
                            + "(keep it EXPOSE_ENSEMBLE)")
                }
            case .UNRECOGNIZED(let value):
                problem("\(field).expose", "EXPOSE_ENSEMBLE, EXPOSE_PUBLIC or EXPOSE_PRIVATE, got \(value)")
            }
        }
        if allocation.hasHealth { checkHealth(allocation.health, path: "\(path).health", problem) }
    }

    private static func checkHealth(
        _ health: Orrery_Orchestrator_V1_HealthCheck, path: String, _ problem: (String, String) -> Void
    ) {
        switch health.probe {
        case .http(let http):
            if !(1...65535).contains(http.port) { problem("\(path).http.port", "1…65535, got \(http.port)") }
            let valid =
                http.path.isEmpty
                || (http.path.hasPrefix("/") && http.path.utf8.count <= 1024
                    && http.path.utf8.allSatisfy { (0x21...0x7E).contains($0) })
            if !valid {
                problem(
                    "\(path).http.path",
                    "an absolute path (with a query, if any) of printable ASCII without spaces, at most 1024 bytes")
            }
        case .tcp(let tcp):
            if !(1...65535).contains(tcp.port) { problem("\(path).tcp.port", "1…65535, got \(tcp.port)") }
        case .exec(let exec):
            let words = exec.command
            if !(1...64).contains(words.count) || words.first?.isEmpty != false
                || words.first?.contains("=") == true || words.reduce(0, { $0 + $1.utf8.count + 1 }) > 4096
                || words.contains(where: { $0.utf8.contains(0) })
            {
                problem(
                    "\(path).exec.command",
                    "1…64 words, 4 KiB in all, no NUL byte, the program first (its name without '=')")
            }
        case nil:
            problem(path, "a probe is needed: http {path, port}, tcp {port} or exec {command}")
        }
        if health.intervalSeconds > 300 { problem("\(path).interval_seconds", "1…300 (0: 10)") }
        if health.timeoutSeconds > 60 { problem("\(path).timeout_seconds", "1…60 (0: 2)") }
        let interval = health.intervalSeconds == 0 ? 10 : health.intervalSeconds
        if health.timeoutSeconds > interval {
            problem("\(path).timeout_seconds", "at most the interval (\(interval) s), got \(health.timeoutSeconds)")
        }
        if health.healthyThreshold > 10 { problem("\(path).healthy_threshold", "1…10 (0: 1)") }
        if health.unhealthyThreshold > 10 { problem("\(path).unhealthy_threshold", "1…10 (0: 3)") }
        if health.startPeriodSeconds > 3600 { problem("\(path).start_period_seconds", "0…3600") }
        if health.hasMaxRestarts, health.maxRestarts > 100 { problem("\(path).max_restarts", "0…100") }
    }

    /// A port's name: 1…15 of a-z, 0-9 and '-', starting with a letter.
    static func isPortName(_ name: String) -> Bool {
        guard let first = name.utf8.first, (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(first),
            name.utf8.count <= 15
        else { return false }
        return name.utf8.allSatisfy {
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
                || $0 == UInt8(ascii: "-")
        }
    }
}
