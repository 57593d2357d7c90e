import ArgumentParser
import Crypto
import Foundation
import OrreryCardano
import OrreryEthereum
import OrreryIdentity
import OrreryRuntime
import SettlementService

/// `settlement-gateway`: Orrery settlement gateway: NTX escrow in a double-entry ledger and chain adapters.
@main
struct SettlementServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "settlement-gateway",
        abstract: "Orrery settlement gateway: NTX escrow in a double-entry ledger and chain adapters.",
        discussion:
            "Settings: command-line options override ORRERY_* environment variables, which override the JSON config file, which overrides the defaults. The Ethereum adapter's options (--eth-*) also read ORRERY_ETH_* variables. Without --eth-rpc the ledger alone settles."
    )

    @OptionGroup(title: "Settings of every service") var runtime: RuntimeOptions
    @OptionGroup(title: "Settings of the settlement gateway") var own: SettlementSettings.Options

    @Option(help: "Ethereum JSON-RPC endpoint (http or https); turns the Ethereum adapter on (env ORRERY_ETH_RPC).")
    var ethRpc: String?

    @Option(help: "The gateway's Ethereum key file: hex secp256k1 key, mode 0600 (env ORRERY_ETH_KEY).")
    var ethKey: String?

    @Option(help: "The NTX ERC-20 token contract address (env ORRERY_ETH_TOKEN).")
    var ethToken: String?

    @Option(help: "The payment-channel contract address; channel escrows need it (env ORRERY_ETH_CHANNELS).")
    var ethChannels: String?

    @Option(
        help: "Blocks a transaction or deposit must be buried under before it counts (env ORRERY_ETH_CONFIRMATIONS).")
    var ethConfirmations: UInt64?

    @Option(help: "Milliseconds between polls of the node (env ORRERY_ETH_POLL_MS).")
    var ethPollMs: Int?

    @Option(
        help: "Seconds before a withdrawal not yet mined is replaced with higher fees (env ORRERY_ETH_REPLACE_AFTER).")
    var ethReplaceAfter: Int?

    @Option(help: "The first block the deposit watcher scans when it has no cursor (env ORRERY_ETH_START_BLOCK).")
    var ethStartBlock: UInt64?

    func run() async throws {
        let chains = try chainSettings()
        try await ServiceRunner.run(SettlementServer.description, options: runtime, own: own) {
            SettlementServer.service($0, chains: chains)
        }
    }

    private func chainSettings() throws -> ChainSettings {
        let environment = ProcessInfo.processInfo.environment
        func value(_ option: String?, _ name: String) -> String? {
            option ?? environment["ORRERY_\(name)"].flatMap { $0.isEmpty ? nil : $0 }
        }
        guard let rpcText = value(ethRpc, "ETH_RPC") else { return ChainSettings() }
        guard let rpc = URL(string: rpcText), ["http", "https"].contains(rpc.scheme ?? "") else {
            throw ValidationError("--eth-rpc: '\(rpcText)' is not an http(s) URL")
        }
        guard let keyPath = value(ethKey, "ETH_KEY") else {
            throw ValidationError("--eth-key: required with --eth-rpc")
        }
        let key: Secp256k1PrivateKey
        do { key = try Secp256k1PrivateKey(bytes: try KeyFile.readBytes(keyPath)) } catch {
            throw ValidationError("--eth-key: \(error)")
        }
        guard let tokenText = value(ethToken, "ETH_TOKEN"), let token = EthereumAddress(tokenText) else {
            throw ValidationError("--eth-token: the NTX token's address is required with --eth-rpc")
        }
        var channels: EthereumAddress?
        if let text = value(ethChannels, "ETH_CHANNELS") {
            guard let address = EthereumAddress(text) else { throw ValidationError("--eth-channels: not an address") }
            channels = address
        }
        let confirmations = try ethConfirmations ?? number(value(nil, "ETH_CONFIRMATIONS"), "ETH_CONFIRMATIONS") ?? 2
        let poll = try ethPollMs.map(UInt64.init) ?? number(value(nil, "ETH_POLL_MS"), "ETH_POLL_MS") ?? 2000
        let replace =
            try ethReplaceAfter.map(UInt64.init) ?? number(value(nil, "ETH_REPLACE_AFTER"), "ETH_REPLACE_AFTER") ?? 60
        let start = try ethStartBlock ?? number(value(nil, "ETH_START_BLOCK"), "ETH_START_BLOCK")
        return ChainSettings(
            ethereum: EthereumSettings(
                rpc: rpc, key: key, token: token, channels: channels, confirmations: confirmations,
                pollInterval: .milliseconds(Int64(poll)), replaceAfter: .seconds(Int64(replace)), startBlock: start))
    }

    private func number(_ text: String?, _ name: String) throws -> UInt64? {
        guard let text else { return nil }
        guard let number = UInt64(text) else { throw ValidationError("ORRERY_\(name): '\(text)' is not a number") }
        return number
    }
}
