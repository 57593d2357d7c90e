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

        public init() {}
    }

    public static var defaults: [AbsoluteConfigKey: ConfigValue] {
        [
            "registry.address": "", "offer.timeout_ms": 10000, "notary.address": "", "settlement.address": "",
            "relocation.margin_percent": 30, "images.registry_ca": "",
            "images.registry_addresses": "public", "outputs.store_mib_per_consumer": 10240,
            "outputs.retention_hours": 168,
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
    }

    public init(
        registryAddress: String? = nil, offerTimeout: Duration = .seconds(10), notaryAddress: String? = nil,
        settlementAddress: String? = nil, relocationMarginPercent: Int = 30, registryCA: String? = nil,
        registryAddresses: AddressPolicy = .publicOnly, outputStoreBytesPerConsumer: Int64 = 10 << 30,
        outputRetention: Duration = .seconds(7 * 24 * 3600)
    ) {
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
