public import ArgumentParser
public import Configuration
public import OrreryRuntime
public import OrreryRuntimeCore

/// What only the settlement gateway reads (its chain adapters' options are `ChainSettings`).
public struct SettlementSettings: ServiceSettings {
    /// The contract notary where refunded contracts are recorded as settled; nil records none.
    public var notaryAddress: String?
    /// The notary's DID, whose signed tree heads releases are proven against; nil proves none.
    public var notaryDID: String?

    public struct Options: ParsableArguments {
        @Option(
            help:
                "The contract notary's gRPC address, host:port, where refunded contracts are recorded as settled (env ORRERY_NOTARY_ADDRESS, file notary.address)."
        )
        public var notaryAddress: String?

        @Option(
            help:
                "The contract notary's DID, whose signed tree heads releases are proven against (env ORRERY_NOTARY_DID, file notary.did)."
        )
        public var notaryDid: String?

        public init() {}
    }

    public static var defaults: [AbsoluteConfigKey: ConfigValue] { ["notary.address": "", "notary.did": ""] }

    public static func flags(_ options: Options) -> [AbsoluteConfigKey: ConfigValue] {
        var flags: [AbsoluteConfigKey: ConfigValue] = [:]
        flags.flag("notary.address", options.notaryAddress)
        flags.flag("notary.did", options.notaryDid)
        return flags
    }

    public init(reading reader: SettingsReader) throws {
        notaryAddress = try reader.address("notary.address")
        notaryDID = try reader.optionalDID("notary.did")
    }

    public init(notaryAddress: String? = nil, notaryDID: String? = nil) {
        self.notaryAddress = notaryAddress
        self.notaryDID = notaryDID
    }
}
