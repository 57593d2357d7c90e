import ArgumentParser
import Crypto
import Foundation
import OrreryCardano
import OrreryEthereum

/// `orrery-bench chain-signing`: how fast the gateway signs what chains take — channel vouchers (EIP-712 digest +
/// secp256k1 with recovery id), EIP-1559 ERC-20 transfers (ABI + RLP + keccak + secp256k1), Cardano transactions
/// (CBOR body + BLAKE2b-256 + Ed25519) and CIP-8 COSE_Sign1 messages — on one core.
struct ChainSigningBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chain-signing", abstract: "Voucher and transaction signing rates (one core).")

    @Option(help: "Signatures per measurement.") var count = 5000
    @Option(help: "Append the results (markdown) to this file.") var out: String?

    func run() throws {
        let ethereumKey = Secp256k1PrivateKey.generate()
        let contract = Secp256k1PrivateKey.generate().address
        let cardanoKey = Curve25519.Signing.PrivateKey()
        let address = CardanoAddress(paymentKey: cardanoKey.publicKey, network: .testnet)
        let asset = CardanoAsset(policyID: [UInt8](repeating: 0xA1, count: 28), name: Array("NTX".utf8))
        var sink = 0

        func rate(_ body: (Int) throws -> Int) rethrows -> Double {
            let start = ContinuousClock.now
            for index in 0..<count { sink &+= try body(index) }
            let elapsed = ContinuousClock.now - start
            return Double(count) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
        }
        let vouchers = rate { index in
            ChannelVoucher(
                chainID: 1, contract: contract, channel: Keccak256.hash("ctr_\(index)"),
                amount: UInt256(UInt64(index + 1))
            ).sign(with: ethereumKey).count
        }
        let transfers = rate { index in
            EIP1559Transaction(
                chainID: 1, nonce: UInt64(index), maxPriorityFeePerGas: UInt256(1_000_000_000),
                maxFeePerGas: UInt256(30_000_000_000), gasLimit: 120_000, to: contract,
                data: ABI.call("transfer(address,uint256)", [.address(contract), .uint(UInt256(UInt64(index)))])
            ).signed(by: ethereumKey).raw.count
        }
        let cardanoTransactions = try rate { index in
            try CardanoTransactionBody(
                inputs: [CardanoInput(transactionID: Blake2b.hash256([UInt8(index & 0xFF)]), index: 0)],
                outputs: [CardanoOutput(address: address, lovelace: 2_000_000, asset: (asset, UInt64(index + 1)))],
                fee: 180_000, ttl: 90_000_000
            ).signed(by: [cardanoKey]).count
        }
        let coseMessages = try rate { index in
            try COSESign1.sign(payload: Array("binding \(index)".utf8), address: address, signingKey: cardanoKey)
                .signature.count
        }
        let ethereumVerify = try rate { index in
            let voucher = ChannelVoucher(
                chainID: 1, contract: contract, channel: Keccak256.hash("v"), amount: UInt256(1))
            return try voucher.signer(of: voucher.sign(with: ethereumKey)).bytes.count + index * 0
        }
        precondition(sink != 0)
        let report = """

            ## Chain signing (one core)

            | measurement | result |
            |---|---|
            | channel vouchers signed (EIP-712 digest, secp256k1 with recovery id, libsecp256k1) | **\(Int(vouchers)) /s** |
            | channel vouchers signed and recovered (sign + ecrecover) | \(Int(ethereumVerify)) /s |
            | EIP-1559 ERC-20 transfers signed (ABI, RLP, keccak-256, secp256k1) | **\(Int(transfers)) /s** |
            | Cardano NTX transactions signed (CBOR body, BLAKE2b-256, Ed25519 witness) | **\(Int(cardanoTransactions)) /s** |
            | CIP-8 COSE_Sign1 messages signed | \(Int(coseMessages)) /s |

            """
        print(report)
        if let out {
            let handle =
                FileHandle(forWritingAtPath: out)
                ?? {
                    _ = FileManager.default.createFile(atPath: out, contents: nil)
                    return FileHandle(forWritingAtPath: out)
                }()
            handle?.seekToEndOfFile()
            handle?.write(Data(report.utf8))
            try? handle?.close()
        }
    }
}
