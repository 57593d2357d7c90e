import Foundation
import OrreryEthereum
import OrreryIdentity
import OrreryTestSupport
import Testing

/// Runs `Tests/python/eth_check.py` (eth-account) on a job and returns its answer.
func ethAccountCheck(_ job: JSONValue) async throws -> JSONValue {
    return try await TestEnvironment.withTemporaryDirectory("eth-check") { directory in
        let file = directory.appendingPathComponent("job.json")
        try Data(job.serialized.utf8).write(to: file)
        let script = TestEnvironment.repositoryRoot.appendingPathComponent("Tests/python/eth_check.py").path
        let (status, output) = try await ChildProcess.run(TestEnvironment.python, arguments: [script, file.path])
        guard status == 0, let line = output.split(separator: "\n").last else {
            throw CheckFailure(text: "eth_check.py failed (\(status)): \(output)")
        }
        return try JSONValue.parse(String(line))
    }
}

struct CheckFailure: Error, CustomStringConvertible {
    let text: String
    var description: String { text }
}

@Suite("Ethereum artifacts checked by eth-account")
struct EthereumInteropTests {
    let gateway = Secp256k1PrivateKey.generate()
    let contract = EthereumAddress("0x5FbDB2315678afecb367f032d93F642f64180aa3")!

    func voucher(_ amount: String, channel: String = "contract-1") -> ChannelVoucher {
        ChannelVoucher(
            chainID: 1337, contract: contract, channel: ChannelVoucher.channelID(forContract: channel),
            amount: UInt256(decimal: amount)!)
    }

    @Test("eth-account recovers the gateway from our vouchers; tampered vouchers and signatures do not")
    func vouchersRecoveredByEthAccount() async throws {
        let genuine = voucher("1250000000000000000")
        let signature = genuine.sign(with: gateway)
        var flipped = signature
        flipped[10] ^= 0x01
        let tamperedAmount = voucher("1250000000000000001")
        let items: [JSONValue] = [
            .object([("data", try JSONValue.parse(genuine.json)), ("signature", .string(Hex.prefixed(signature)))]),
            .object([
                ("data", try JSONValue.parse(tamperedAmount.json)), ("signature", .string(Hex.prefixed(signature))),
            ]),
            .object([("data", try JSONValue.parse(genuine.json)), ("signature", .string(Hex.prefixed(flipped)))]),
        ]
        let answer = try await ethAccountCheck(.object([("typed", .array(items))]))
        let typed = answer["typed"]?.arrayValue ?? []
        try #require(typed.count == 3)
        #expect(typed[0]["signer"]?.stringValue == gateway.address.checksummed)
        #expect(typed[0]["digest"]?.stringValue == Hex.prefixed(genuine.digest()))
        #expect(typed[1]["signer"]?.stringValue != gateway.address.checksummed)
        #expect(typed[2]["signer"]?.stringValue != gateway.address.checksummed)
    }

    @Test("vouchers signed by eth-account verify in Swift; a tampered one names another signer or fails")
    func vouchersFromEthAccount() async throws {
        let signer = Secp256k1PrivateKey.generate()
        let genuine = voucher("42")
        let answer = try await ethAccountCheck(
            .object([
                (
                    "sign",
                    .array([
                        .object([
                            ("data", try JSONValue.parse(genuine.json)),
                            ("key", .string(Hex.prefixed(signer.rawRepresentation))),
                        ])
                    ])
                ),
                ("addresses", .array([.string(Hex.prefixed(signer.rawRepresentation))])),
            ]))
        let signature = try #require(Hex.decode(answer["sign"]?.arrayValue?.first?.stringValue ?? ""))
        #expect(answer["addresses"]?.arrayValue?.first?.stringValue == signer.address.checksummed)
        #expect(try genuine.signer(of: signature) == signer.address)
        #expect(genuine.sign(with: signer) == signature)  // RFC 6979: both sides sign identically
        #expect(try voucher("43").signer(of: signature) != signer.address)
        var broken = signature
        broken[40] ^= 0x80
        let brokenSigner = try? genuine.signer(of: broken)
        #expect(brokenSigner != signer.address)
    }

    @Test("eth-account decodes our EIP-1559 transactions field by field and recovers their sender")
    func transactionsDecodedByEthAccount() async throws {
        let sender = Secp256k1PrivateKey.generate()
        let recipient = Secp256k1PrivateKey.generate().address
        let transfer = EIP1559Transaction(
            chainID: 1337, nonce: 7, maxPriorityFeePerGas: UInt256(1_000_000_000),
            maxFeePerGas: UInt256(decimal: "30000000000")!, gasLimit: 90_000, to: contract,
            data: ABI.call(
                "transfer(address,uint256)", [.address(recipient), .uint(UInt256(decimal: "5000000000000000000")!)]))
        let creation = EIP1559Transaction(
            chainID: 1, nonce: 0, maxPriorityFeePerGas: .zero, maxFeePerGas: UInt256(1), gasLimit: 3_000_000,
            to: nil, value: UInt256(decimal: "1")!, data: [UInt8](repeating: 0xAB, count: 300))
        let signed = [transfer.signed(by: sender), creation.signed(by: sender)]
        var tampered = signed[0].raw
        tampered[tampered.count - 40] ^= 0x01
        let answer = try await ethAccountCheck(
            .object([("transactions", .array((signed.map(\.raw) + [tampered]).map { .string(Hex.prefixed($0)) }))]))
        let decoded = answer["transactions"]?.arrayValue ?? []
        try #require(decoded.count == 3)
        #expect(decoded[0]["sender"]?.stringValue == sender.address.checksummed)
        #expect(decoded[0]["type"] == .number("2"))
        #expect(decoded[0]["chainId"] == .number("1337"))
        #expect(decoded[0]["nonce"] == .number("7"))
        #expect(decoded[0]["maxFeePerGas"]?.stringValue == "30000000000")
        #expect(decoded[0]["maxPriorityFeePerGas"]?.stringValue == "1000000000")
        #expect(decoded[0]["gas"] == .number("90000"))
        #expect(decoded[0]["to"]?.stringValue?.lowercased() == Hex.encode(contract.bytes))
        #expect(decoded[0]["data"]?.stringValue == Hex.prefixed(transfer.data))
        #expect(decoded[0]["hash"]?.stringValue == Hex.prefixed(signed[0].hash))
        #expect(decoded[1]["sender"]?.stringValue == sender.address.checksummed)
        #expect(decoded[1]["value"]?.stringValue == "1")
        #expect(decoded[2]["sender"]?.stringValue != sender.address.checksummed)
    }
}
