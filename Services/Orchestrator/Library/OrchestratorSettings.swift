public import ArgumentParser
public import Configuration
public import OrreryRuntime
public import OrreryHTTPClient
public import OrreryRuntimeCore

/// What only the orchestrator reads.
public struct OrchestratorSettings: ServiceSettings {
    /// The registry devices and RTT samples are followed from; nil places nothing.
    public var registryAddress: String?
    /// How long a device has to bid for or decline an offer.
    public var offerTimeout: Duration
    /// The contract notary contracts and receipts are recorded with; nil contracts nothing.
    public var notaryAddress: String?
    /// The settlement gateway contracts are escrowed and paid through; nil holds no escrow.
    public var settlementAddress: String?
    /// How much better (percent) another feasible device must be before a running stateful replica moves there; 0
    /// never moves one for a better place.
    public var relocationMarginPercent: Int
    /// A PEM file of CA certificates trusted for image registries besides the system's; nil: the system's only.
    public var registryCA: String?
    /// Where the image registries the orchestrator asks at submit may be: public addresses only (a consumer names
    /// them), or any.
    public var registryAddresses: AddressPolicy
    /// Bytes of outputs one consumer may keep in the content store at once (over 3 MiB each, without outputs_to).
    public var outputStoreBytesPerConsumer: Int64
    /// How long the content store keeps an output.
    public var outputRetention: Duration
    /// The ingress's own listener and domain; nil runs none (EXPOSE_PUBLIC and EXPOSE_PRIVATE ports are refused).
    public var ingress: IngressSettings?
    /// This replica's gRPC address as the other replicas reach it; nil: its gRPC host and port, when the host is an
    /// address of its own (not a wildcard).
    public var advertiseAddress: String?

    public struct Options: ParsableArguments {
        @Option(
            help:
                "The registry's gRPC address, host:port, to follow devices and RTT samples from (env ORRERY_REGISTRY_ADDRESS, file registry.address)."
        )
        public var registryAddress: String?

        @Option(
            help:
                "Milliseconds a device has to bid for or decline an offer before the next candidate gets it (env ORRERY_OFFER_TIMEOUT_MS, file offer.timeout_ms; default 10000)."
        )
        public var offerTimeoutMs: Int?

        @Option(
            help:
                "The contract notary's gRPC address, host:port: deployments are contracted only with a contract it recorded (env ORRERY_NOTARY_ADDRESS, file notary.address)."
        )
        public var notaryAddress: String?

        @Option(
            help:
                "The settlement gateway's gRPC address, host:port; with it each contract's maximum cost is held in escrow before its allocation starts, and receipts release payment (env ORRERY_SETTLEMENT_ADDRESS, file settlement.address)."
        )
        public var settlementAddress: String?

        @Option(
            help:
                "A running stateful replica moves (checkpoint, resume) to another feasible device at least this many percent cheaper, or at no higher price with this many percent less estimated RTT to its latency targets; 0 turns it off (env ORRERY_RELOCATION_MARGIN_PERCENT, file relocation.margin_percent; default 30)."
        )
        public var relocationMarginPercent: Int?

        @Option(
            help:
                "PEM file of CA certificates trusted for image registries besides the system's, when images are resolved at submit (env ORRERY_IMAGES_REGISTRY_CA, file images.registry_ca)."
        )
        public var imagesRegistryCa: String?

        @Option(
            help:
                "Which addresses the image registries a consumer names may be at when they are resolved at submit: public (not loopback, private, link-local) or any (env ORRERY_IMAGES_REGISTRY_ADDRESSES, file images.registry_addresses; default public)."
        )
        public var imagesRegistryAddresses: String?

        @Option(
            help:
                "MiB of outputs one consumer may keep in the orchestrator's content store at once (outputs over 3 MiB without outputs_to); 0 refuses them (env ORRERY_OUTPUTS_STORE_MIB_PER_CONSUMER, file outputs.store_mib_per_consumer; default 10240)."
        )
        public var outputsStoreMibPerConsumer: Int?

        @Option(
            help:
                "Hours the content store keeps an output before it expires (env ORRERY_OUTPUTS_RETENTION_HOURS, file outputs.retention_hours; default 168)."
        )
        public var outputsRetentionHours: Int?

        @Option(
            help:
                "This replica's gRPC address, host:port, as the other orchestrator replicas reach it: they relay tunnels to devices whose line it holds through it (env ORRERY_ADVERTISE_ADDRESS, file cluster.advertise_address; default: the gRPC host and port, unless the host is a wildcard)."
        )
        public var advertiseAddress: String?

        @Option(
            help:
                "Address the ingress listens on for HTTP to services' public and private ports; unset runs no ingress (env ORRERY_INGRESS_HOST, file ingress.host)."
        )
        public var ingressHost: String?

        @Option(
            help:
                "The ingress's port, never the API's (env ORRERY_INGRESS_PORT, file ingress.port; default 8480)."
        )
        public var ingressPort: Int?

        @Option(
            help:
                "The domain under which each exposed port gets its own host name, <label>.<domain>; point a wildcard DNS record *.<domain> at the ingress (env ORRERY_INGRESS_DOMAIN, file ingress.domain; required with ingress.host)."
        )
        public var ingressDomain: String?

        @Option(
            help:
                "PEM certificate chain the ingress serves HTTPS with, a wildcard certificate for *.<domain> (env ORRERY_INGRESS_TLS_CERT, file ingress.tls_cert; unset: plain HTTP)."
        )
        public var ingressTlsCert: String?

        @Option(help: "PEM private key of --ingress-tls-cert (env ORRERY_INGRESS_TLS_KEY, file ingress.tls_key).")
        public var ingressTlsKey: String?

        @Option(
            help:
                "The port clients reach the ingress on, when a load balancer in front of it listens on another one; it goes into the URLs `orrery status` shows (env ORRERY_INGRESS_PUBLIC_PORT, file ingress.public_port; default: --ingress-port)."
        )
        public var ingressPublicPort: Int?

        @Option(
            help:
                "MiB a request body may have through the ingress (env ORRERY_INGRESS_MAX_BODY_MIB, file ingress.max_body_mib; default 64)."
        )
        public var ingressMaxBodyMib: Int?

        @Option(
            help:
                "Seconds an ingress connection may carry no byte either way before it is closed (env ORRERY_INGRESS_IDLE_SECONDS, file ingress.idle_seconds; default 120)."
        )
        public var ingressIdleSeconds: Int?

        @Option(
            help:
                "Connections one deployment may have open through this orchestrator's ingress (env ORRERY_INGRESS_CONNECTIONS_PER_DEPLOYMENT, file ingress.connections_per_deployment; default 512)."
        )
        public var ingressConnectionsPerDeployment: Int?

        @Option(
            help:
                "Connections one client address may have open through this orchestrator's ingress (env ORRERY_INGRESS_CONNECTIONS_PER_CLIENT, file ingress.connections_per_client; default 256)."
        )
        public var ingressConnectionsPerClient: Int?

        @Option(
            help:
                "Requests per second one deployment may get through this orchestrator's ingress, in bursts of twice that (env ORRERY_INGRESS_REQUESTS_PER_SECOND, file ingress.requests_per_second; default 500)."
        )
        public var ingressRequestsPerSecond: Int?

        public init() {}
    }

    public static var defaults: [AbsoluteConfigKey: ConfigValue] {
        [
            "registry.address": "", "offer.timeout_ms": 10000, "notary.address": "", "settlement.address": "",
            "relocation.margin_percent": 30, "images.registry_ca": "",
            "images.registry_addresses": "public", "outputs.store_mib_per_consumer": 10240,
            "outputs.retention_hours": 168, "cluster.advertise_address": "", "ingress.host": "", "ingress.port": 8480,
            "ingress.domain": "",
            "ingress.tls_cert": "", "ingress.tls_key": "", "ingress.public_port": 0, "ingress.max_body_mib": 64,
            "ingress.idle_seconds": 120, "ingress.connections_per_deployment": 512,
            "ingress.connections_per_client": 256,
            "ingress.requests_per_second": 500,
        ]
    }

    public static func flags(_ options: Options) -> [AbsoluteConfigKey: ConfigValue] {
        var flags: [AbsoluteConfigKey: ConfigValue] = [:]
        flags.flag("registry.address", options.registryAddress)
        flags.flag("offer.timeout_ms", options.offerTimeoutMs)
        flags.flag("notary.address", options.notaryAddress)
        flags.flag("settlement.address", options.settlementAddress)
        flags.flag("relocation.margin_percent", options.relocationMarginPercent)
        flags.flag("images.registry_ca", options.imagesRegistryCa)
        flags.flag("images.registry_addresses", options.imagesRegistryAddresses)
        flags.flag("outputs.store_mib_per_consumer", options.outputsStoreMibPerConsumer)
        flags.flag("outputs.retention_hours", options.outputsRetentionHours)
        flags.flag("cluster.advertise_address", options.advertiseAddress)
        flags.flag("ingress.host", options.ingressHost)
        flags.flag("ingress.port", options.ingressPort)
        flags.flag("ingress.domain", options.ingressDomain)
        flags.flag("ingress.tls_cert", options.ingressTlsCert)
        flags.flag("ingress.tls_key", options.ingressTlsKey)
        flags.flag("ingress.public_port", options.ingressPublicPort)
        flags.flag("ingress.max_body_mib", options.ingressMaxBodyMib)
        flags.flag("ingress.idle_seconds", options.ingressIdleSeconds)
        flags.flag("ingress.connections_per_deployment", options.ingressConnectionsPerDeployment)
        flags.flag("ingress.connections_per_client", options.ingressConnectionsPerClient)
        flags.flag("ingress.requests_per_second", options.ingressRequestsPerSecond)
        return flags
    }

    public init(reading reader: SettingsReader) throws {
        registryAddress = try reader.address("registry.address")
        offerTimeout = .milliseconds(try reader.integer("offer.timeout_ms", in: 100...600_000))
        notaryAddress = try reader.address("notary.address")
        settlementAddress = try reader.address("settlement.address")
        relocationMarginPercent = try reader.integer("relocation.margin_percent", in: 0...90)
        registryCA = try reader.optionalString("images.registry_ca")
        registryAddresses = try reader.choice("images.registry_addresses", AddressPolicy.allCases)
        outputStoreBytesPerConsumer =
            Int64(try reader.integer("outputs.store_mib_per_consumer", in: 0...(1 << 30))) << 20
        outputRetention = .seconds(3600 * (try reader.integer("outputs.retention_hours", in: 1...(24 * 365))))
        ingress = try IngressSettings(reading: reader)
        advertiseAddress = try reader.address("cluster.advertise_address")
    }

    public init(
        registryAddress: String? = nil, offerTimeout: Duration = .seconds(10), notaryAddress: String? = nil,
        settlementAddress: String? = nil, relocationMarginPercent: Int = 30, registryCA: String? = nil,
        registryAddresses: AddressPolicy = .publicOnly, outputStoreBytesPerConsumer: Int64 = 10 << 30,
        outputRetention: Duration = .seconds(7 * 24 * 3600), ingress: IngressSettings? = nil
    ) {
        self.ingress = ingress
        self.outputStoreBytesPerConsumer = outputStoreBytesPerConsumer
        self.outputRetention = outputRetention
        self.registryAddresses = registryAddresses
        self.registryCA = registryCA
        self.registryAddress = registryAddress
        self.offerTimeout = offerTimeout
        self.notaryAddress = notaryAddress
        self.settlementAddress = settlementAddress
        self.relocationMarginPercent = relocationMarginPercent
    }
}
