import Foundation
import OrreryEthereum
import OrreryIdentity
import OrreryTestSupport

/// An offline Ethereum chain for a test: `Tests/python/eth_chain.py` (eth-tester + py-evm behind loopback JSON-RPC),
/// with the NTX token and the channel contract compiled by vyper and deployed.
struct EthereumTestChain {
    let child: ChildProcess
    let rpc: EthereumRPC
    let chainID: UInt64
    let token: EthereumAddress
    let channels: EthereumAddress

    /// Starts the chain, funding each address with `wei` ETH and minting it `ntx` base units.
    static func start(funding: [(EthereumAddress, wei: String, ntx: String)], directory: URL) async throws
        -> EthereumTestChain
    {
        let script = TestEnvironment.repositoryRoot.appendingPathComponent("Tests/python/eth_chain.py").path
        let child = try ChildProcess(
            TestEnvironment.python,
            arguments: [script] + funding.map { "\($0.0.checksummed)=\($0.wei):\($0.ntx)" },
            outputDirectory: directory)
        do {
            let info = try await child.firstLine(timeout: .seconds(180)) { line in
                line.hasPrefix("{\"rpc\"") ? try JSONValue.parse(String(line)) : nil
            }
            guard let rpc = info["rpc"]?.stringValue.flatMap(URL.init(string:)),
                case .number(let chain)? = info["chainId"], let chainID = UInt64(chain),
                let token = info["token"]?.stringValue.flatMap(EthereumAddress.init),
                let channels = info["channels"]?.stringValue.flatMap(EthereumAddress.init)
            else { throw ChildProcessError.exitedEarly(name: "eth_chain.py", status: 0, output: child.output) }
            return EthereumTestChain(
                child: child, rpc: EthereumRPC(endpoint: rpc), chainID: chainID, token: token, channels: channels)
        } catch {
            await child.stop()
            throw error
        }
    }

    /// Signs and sends a call from `key` (EIP-1559, fees from the node) and returns its receipt once mined.
    @discardableResult
    func send(from key: Secp256k1PrivateKey, to: EthereumAddress, data: [UInt8], gas: UInt64 = 300_000)
        async throws -> EthereumReceipt
    {
        let nonce = try await rpc.transactionCount(key.address, pending: true)
        let head = try await rpc.head()
        let tip = try await rpc.maxPriorityFeePerGas()
        let transaction = EIP1559Transaction(
            chainID: chainID, nonce: nonce, maxPriorityFeePerGas: tip,
            maxFeePerGas: head.baseFeePerGas.multiplied(by: 2).adding(tip), gasLimit: gas, to: to, data: data
        ).signed(by: key)
        let hash = try await rpc.sendRawTransaction(transaction.raw)
        for _ in 0..<100 {
            if let receipt = try await rpc.receipt(hash) { return receipt }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw CheckFailure(text: "transaction \(Hex.prefixed(hash)) was not mined")
    }

    /// NTX `balanceOf(address)` by `eth_call`.
    func balance(of address: EthereumAddress) async throws -> UInt256 {
        let answer = try await rpc.call(to: token, data: ABI.call("balanceOf(address)", [.address(address)]))
        guard let value = ABI.decodeUInt(answer) else { throw CheckFailure(text: "balanceOf answered \(answer)") }
        return value
    }

    func timeTravel(to timestamp: UInt64) async throws {
        _ = try await rpc.call("test_timeTravel", [.number(String(timestamp))])
    }

    func setAutoMine(_ on: Bool) async throws { _ = try await rpc.call("test_setAutoMine", [.bool(on)]) }

    func mine(_ blocks: Int = 1) async throws { _ = try await rpc.call("test_mine", [.number(String(blocks))]) }
}

struct CheckFailure: Error, CustomStringConvertible {
    let text: String
    var description: String { text }
}

/// Polls `condition` every 100 ms until it holds or `timeout` passes; returns whether it held.
func eventually(timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(100))
    }
    return try await condition()
}
