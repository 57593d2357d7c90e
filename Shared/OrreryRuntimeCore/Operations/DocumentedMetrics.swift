public import CoreMetrics
public import Prometheus

/// Every series Orrery exports, with its help text: what `/metrics` prints as `# HELP`, and what the Grafana
/// dashboard (`Deploy/grafana/orrery.json`) may query. A series not listed here is exported without help.
public enum MetricCatalog {
    public static let help: [String: String] = [
        // Every service.
        "grpc_server_handled_total": "gRPC calls answered, by method and status code",
        "grpc_server_handling_seconds": "Time to answer a gRPC call, by method",
        "orrery_connections_open": "Open client connections on the gRPC listener",
        "orrery_connections_refused_total": "Connections refused over the connection budget",
        "orrery_connections_paused_total": "Connections paused by the failed-authentication tarpit",
        // Orchestrator.
        "orrery_deployment_transitions_total": "Deployment transitions, by the state entered",
        "orrery_placement_seconds": "Time the solver took to place an ensemble, by outcome (placed, infeasible)",
        "orrery_offers_refused_total": "Offers a device declined or let expire, by how (declined, expired)",
        "orrery_settlement_incidents_total": "Settlement steps held because the gateway refused their proofs",
        "orrery_tunnels_opened_total":
            "Tunnels into sandboxes opened, by how (standby: handed to a device's standby call; line: asked on its line; relay: through another replica)",
        // Registry.
        "orrery_heartbeats_total": "Heartbeats received from devices",
        "orrery_device_status_changes_total": "Devices that changed liveness status, by the status entered",
        // Contract notary.
        "orrery_notary_tree_size": "Entries in the notary's log (its latest signed tree head)",
        "orrery_notary_append_seconds": "Time to append a batch to the log and sign its tree head",
        // Settlement gateway.
        "settlement_operations_total": "Settlement operations (escrow, release, refund, deposit), by method and status",
        "settlement_operation_seconds": "Time to carry out a settlement operation, by method",
        "orrery_settlement_ntx_total":
            "NTX (base units) moved by new journal entries, by kind (escrow, release, refund, deposit, …)",
        "orrery_settlement_escrow_held_ntx": "NTX (base units) held in escrow accounts now, as the ledger says",
        // Device agent.
        "orrery_agent_allocations_running": "Allocations this agent runs now",
        "orrery_agent_allocation_cpu_seconds": "CPU time a running allocation used so far, by offer and allocation",
        "orrery_agent_allocation_memory_bytes": "Memory a running allocation uses now, by offer and allocation",
        "orrery_sandbox_start_seconds": "Time from a Deploy to its workload running in its sandbox",
        "orrery_agent_sandbox_connections":
            "Connections into this device's sandboxes carried now (ingress, port-forwards, ensemble partners; at most the owner's max_connections)",
        "orrery_agent_partner_connections_total":
            "Sandbox connections to ensemble partners, by how (warm: on a call kept open ahead of need; own_call: on a call opened for it)",
        "orrery_agent_partner_first_bytes_total":
            "Sandbox connections to ensemble partners, by what became of their first bytes (early: they rode with the connection's open; late: waited for 2 ms in vain; not_waited: the port's connections do not speak first)",
    ]
}

extension MetricCatalog {
    /// The series a service exports from its start, at zero, so that dashboards and alerts see them before the
    /// first event: by service name, each with the label sets it is registered with.
    static let registeredAtStart: [String: [(label: String, kind: Kind, dimensions: [[(String, String)]])]] = [
        "orchestrator": [
            (
                "orrery_deployment_transitions_total", .counter,
                [
                    "matched", "offered", "contracted", "escrowed", "deploying", "running", "completed", "failed",
                    "cancelled",
                ].map { [("state", $0)] }
            ),
            ("orrery_placement_seconds", .timer, [[("outcome", "placed")], [("outcome", "infeasible")]]),
            ("orrery_offers_refused_total", .counter, [[("how", "declined")], [("how", "expired")]]),
            ("orrery_settlement_incidents_total", .counter, [[]]),
            ("orrery_tunnels_opened_total", .counter, ["standby", "line", "relay"].map { [("how", $0)] }),
        ],
        "registry": [
            ("orrery_heartbeats_total", .counter, [[]]),
            (
                "orrery_device_status_changes_total", .counter,
                ["online", "suspect", "offline"].map { [("status", $0)] }
            ),
        ],
        "contract-notary": [
            ("orrery_notary_tree_size", .gauge, [[]]),
            ("orrery_notary_append_seconds", .timer, [[]]),
        ],
        "settlement-gateway": [
            (
                "orrery_settlement_ntx_total", .floatCounter,
                ["escrow", "release", "refund"].map { [("kind", $0)] }
            ),
            ("orrery_settlement_escrow_held_ntx", .gauge, [[]]),
        ],
        "device-agent": [
            ("orrery_agent_allocations_running", .gauge, [[]]),
            ("orrery_agent_sandbox_connections", .gauge, [[]]),
            ("orrery_sandbox_start_seconds", .timer, [[]]),
            ("orrery_agent_partner_connections_total", .counter, ["warm", "own_call"].map { [("how", $0)] }),
            (
                "orrery_agent_partner_first_bytes_total", .counter,
                ["early", "late", "not_waited"].map { [("how", $0)] }
            ),
        ],
    ]

    enum Kind { case counter, floatCounter, gauge, timer }

    /// Registers `service`'s series at zero (see `registeredAtStart`).
    public static func registerAtStart(service: String) {
        for (label, kind, dimensionSets) in registeredAtStart[service] ?? [] {
            for dimensions in dimensionSets {
                switch kind {
                case .counter: CoreMetrics.Counter(label: label, dimensions: dimensions).increment(by: 0)
                case .floatCounter:
                    CoreMetrics.FloatingPointCounter(label: label, dimensions: dimensions).increment(by: 0.0)
                case .gauge: CoreMetrics.Recorder(label: label, dimensions: dimensions, aggregate: false).record(0)
                case .timer: _ = CoreMetrics.Timer(label: label, dimensions: dimensions)
                }
            }
        }
    }
}

/// A swift-metrics factory over a Prometheus registry that exports every series with its `MetricCatalog` help text
/// (the registry requires one help text per name; this factory always gives the same one).
public struct DocumentedMetricsFactory: MetricsFactory {
    let registry: PrometheusCollectorRegistry
    /// Seconds: from a millisecond to a minute.
    static let durationBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5),
        .seconds(10), .seconds(30), .seconds(60),
    ]
    static let valueBuckets: [Double] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000]

    public init(registry: PrometheusCollectorRegistry) { self.registry = registry }

    /// The series' name with its catalogued help text.
    static func named(_ label: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: label, unitName: "", helpText: MetricCatalog.help[label] ?? "")
    }

    public func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(descriptor: Self.named(label), labels: dimensions)
    }

    public func makeFloatingPointCounter(label: String, dimensions: [(String, String)])
        -> any FloatingPointCounterHandler
    {
        registry.makeCounter(descriptor: Self.named(label), labels: dimensions)
    }

    public func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        guard aggregate else { return registry.makeGauge(descriptor: Self.named(label), labels: dimensions) }
        return registry.makeValueHistogram(
            descriptor: Self.named(label), labels: dimensions, buckets: Self.valueBuckets)
    }

    public func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(descriptor: Self.named(label), labels: dimensions)
    }

    public func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        registry.makeDurationHistogram(descriptor: Self.named(label), labels: dimensions, buckets: Self.durationBuckets)
    }

    public func destroyCounter(_ handler: any CounterHandler) {
        if let counter = handler as? Prometheus.Counter { registry.unregisterCounter(counter) }
    }

    public func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        if let counter = handler as? Prometheus.Counter { registry.unregisterCounter(counter) }
    }

    public func destroyRecorder(_ handler: any RecorderHandler) {
        if let gauge = handler as? Prometheus.Gauge { registry.unregisterGauge(gauge) }
        if let histogram = handler as? ValueHistogram { registry.unregisterValueHistogram(histogram) }
    }

    public func destroyMeter(_ handler: any MeterHandler) {
        if let gauge = handler as? Prometheus.Gauge { registry.unregisterGauge(gauge) }
    }

    public func destroyTimer(_ handler: any TimerHandler) {
        if let histogram = handler as? DurationHistogram { registry.unregisterDurationHistogram(histogram) }
    }
}
