public import ArgumentParser
public import Configuration
public import OrreryRuntime
public import OrreryRuntimeCore

/// What only the contract notary reads.
public struct NotarySettings: ServiceSettings {
    /// The registry whose availability records contracts' availability terms are checked against; nil checks none.
    public var registryAddress: String?
    /// The settlement gateway's DID, the only signer of a contract's `settled` transition; nil accepts none.
    public var settlementDID: String?

    public struct Options: ParsableArguments {
        @Option(
            help:
                "The registry's gRPC address, host:port, to check contracts' availability terms against (env ORRERY_REGISTRY_ADDRESS, file registry.address)."
        )
        public var registryAddress: String?

        @Option(
            help:
                "The settlement gateway's DID, the only signer of a contract's settled transition (env ORRERY_SETTLEMENT_DID, file settlement.did)."
        )
        public var settlementDid: String?

        public init() {}
    }

    public static var defaults: [AbsoluteConfigKey: ConfigValue] { ["registry.address": "", "settlement.did": ""] }

    public static func flags(_ options: Options) -> [AbsoluteConfigKey: ConfigValue] {
        var flags: [AbsoluteConfigKey: ConfigValue] = [:]
        flags.flag("registry.address", options.registryAddress)
        flags.flag("settlement.did", options.settlementDid)
        return flags
    }

    public init(reading reader: SettingsReader) throws {
        registryAddress = try reader.address("registry.address")
        settlementDID = try reader.optionalDID("settlement.did")
    }

    public init(registryAddress: String? = nil, settlementDID: String? = nil) {
        self.registryAddress = registryAddress
        self.settlementDID = settlementDID
    }
}
