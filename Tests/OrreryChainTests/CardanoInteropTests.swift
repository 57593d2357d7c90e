import Crypto
import Foundation
import OrreryCardano
import OrreryEthereum
import OrreryIdentity
import OrreryTestSupport
import Testing

/// Runs `Tests/python/cardano_check.py` (pycardano, PyNaCl, hashlib) on a job and returns its answer.
func cardanoCheck(_ job: JSONValue) async throws -> JSONValue {
    return try await TestEnvironment.withTemporaryDirectory("cardano-check") { directory in
        let file = directory.appendingPathComponent("job.json")
        try Data(job.serialized.utf8).write(to: file)
        let script = TestEnvironment.repositoryRoot.appendingPathComponent("Tests/python/cardano_check.py").path
        let (status, output) = try await ChildProcess.run(TestEnvironment.python, arguments: [script, file.path])
        guard status == 0, let line = output.split(separator: "\n").last else {
            throw CheckFailure(text: "cardano_check.py failed (\(status)): \(output)")
        }
        return try JSONValue.parse(String(line))
    }
}

@Suite("Cardano artifacts checked by pycardano and PyNaCl")
struct CardanoInteropTests {
    let key = Curve25519.Signing.PrivateKey()

    @Test("CIP-19 enterprise addresses match pycardano's on both networks and round-trip through bech32")
    func addresses() async throws {
        let seed = Hex.encode(key.rawRepresentation)
        let answer = try await cardanoCheck(
            .object([
                (
                    "addresses",
                    .array([
                        .object([("seed", .string(seed)), ("testnet", .bool(true))]),
                        .object([("seed", .string(seed)), ("testnet", .bool(false))]),
                    ])
                )
            ]))
        let testnet = CardanoAddress(paymentKey: key.publicKey, network: .testnet)
        let mainnet = CardanoAddress(paymentKey: key.publicKey, network: .mainnet)
        #expect(answer["addresses"]?.arrayValue == [.string(testnet.bech32), .string(mainnet.bech32)])
        #expect(testnet.bech32.hasPrefix("addr_test1") && mainnet.bech32.hasPrefix("addr1"))
        #expect(CardanoAddress(testnet.bech32) == testnet)
        var corrupted = Array(mainnet.bech32)
        corrupted[10] = corrupted[10] == "q" ? "p" : "q"
        #expect(CardanoAddress(String(corrupted)) == nil)
    }

    @Test("pycardano's cip8.verify accepts our COSE_Sign1 and refuses tampered payloads, keys and signatures")
    func cip8Signatures() async throws {
        let address = CardanoAddress(paymentKey: key.publicKey, network: .testnet)
        let message = "bind did:key:z6MkExample to \(address.bech32) challenge 1f2e"
        let signed = try COSESign1.sign(payload: Array(message.utf8), address: address, signingKey: key)
        #expect(try signed.verify().address == address)
        var tamperedMessage = signed.signature
        if let index = tamperedMessage.lastIndex(of: UInt8(ascii: "1")) { tamperedMessage[index] = UInt8(ascii: "2") }
        var tamperedSignature = signed.signature
        tamperedSignature[tamperedSignature.count - 5] ^= 0x01
        let otherKey = try COSESign1.sign(
            payload: [], address: address, signingKey: Curve25519.Signing.PrivateKey()
        ).key
        let items: [(signature: [UInt8], key: [UInt8])] = [
            (signed.signature, signed.key), (tamperedMessage, signed.key), (tamperedSignature, signed.key),
            (signed.signature, otherKey),
        ]
        let answer = try await cardanoCheck(
            .object([
                (
                    "cose",
                    .array(
                        items.map {
                            .object([
                                ("signature", .string(Hex.encode($0.signature))),
                                ("key", .string(Hex.encode($0.key))),
                            ])
                        })
                )
            ]))
        let results = answer["cose"]?.arrayValue ?? []
        try #require(results.count == 4)
        #expect(results[0]["verified"] == .bool(true))
        #expect(results[0]["message"]?.stringValue == message)
        #expect(results[0]["address"]?.stringValue == address.bech32)
        for (index, result) in results.enumerated().dropFirst() {
            #expect(result["verified"] == .bool(false), "case \(index) verified")
        }
        #expect(throws: COSEError.self) { try COSESign1(signature: tamperedSignature, key: signed.key).verify() }
        #expect(throws: (any Error).self) { try COSESign1(signature: signed.signature, key: otherKey).verify() }
    }

    @Test("pycardano decodes our NTX transfer; PyNaCl verifies its witness over blake2b-256 of the body")
    func transactions() async throws {
        let payer = CardanoAddress(paymentKey: key.publicKey, network: .testnet)
        let payee = CardanoAddress(paymentKey: Curve25519.Signing.PrivateKey().publicKey, network: .testnet)
        let ntx = CardanoAsset(policyID: [UInt8](repeating: 0xA1, count: 28), name: Array("NTX".utf8))
        let body = CardanoTransactionBody(
            inputs: [CardanoInput(transactionID: [UInt8](repeating: 0x3C, count: 32), index: 1)],
            outputs: [
                CardanoOutput(address: payee, lovelace: 1_500_000, asset: (ntx, 125_000)),
                CardanoOutput(address: payer, lovelace: 8_300_000),
            ],
            fee: 200_000, ttl: 90_000_000)
        let signed = try body.signed(by: [key])
        // The same witness on a body whose fee was raised by one: it no longer covers the body.
        guard case .array(var parts) = try CBOR.decode(signed) else { Issue.record("not a transaction"); return }
        parts[0] = CardanoTransactionBody(inputs: body.inputs, outputs: body.outputs, fee: 200_001, ttl: body.ttl).cbor
        let forged = CBOR.array(parts).encoded
        let answer = try await cardanoCheck(
            .object([("transactions", .array([signed, forged].map { .string(Hex.encode($0)) }))]))
        let decoded = answer["transactions"]?.arrayValue ?? []
        try #require(decoded.count == 2)
        let genuine = decoded[0]
        #expect(genuine["id"]?.stringValue == Hex.encode(body.id))
        #expect(genuine["blake2b"]?.stringValue == Hex.encode(body.id))
        #expect(genuine["fee"] == .number("200000"))
        #expect(genuine["ttl"] == .number("90000000"))
        #expect(genuine["inputs"]?.arrayValue == [.string(String(repeating: "3c", count: 32) + "#1")])
        let outputs = genuine["outputs"]?.arrayValue ?? []
        #expect(outputs.first?["address"]?.stringValue == payee.bech32)
        #expect(outputs.first?["lovelace"] == .number("1500000"))
        #expect(
            outputs.first?["assets"]?[String(repeating: "a1", count: 28) + "." + Hex.encode(ntx.name)]
                == .number("125000"))
        #expect(outputs.last?["address"]?.stringValue == payer.bech32)
        #expect(genuine["witnesses"]?.arrayValue == [.bool(true)])
        #expect(decoded[1]["fee"] == .number("200001"))
        #expect(decoded[1]["witnesses"]?.arrayValue == [.bool(false)])
    }
}

@Suite("Cardano submit client against a submit-api stand-in (pycardano + PyNaCl)")
struct CardanoSubmitTests {
    @Test("a signed transaction is accepted with its id; a forged witness is refused with the API's reason")
    func submit() async throws {
        try await TestEnvironment.withTemporaryDirectory("cardano-submit") { directory in
            let script = TestEnvironment.repositoryRoot.appendingPathComponent("Tests/python/cardano_submit_api.py")
                .path
            let api = try ChildProcess(TestEnvironment.python, arguments: [script], outputDirectory: directory)
            defer { api.signal(SIGKILL) }
            let port = try await api.printedPort()
            let client = CardanoSubmitClient(endpoint: URL(string: "http://127.0.0.1:\(port)")!)
            let key = Curve25519.Signing.PrivateKey()
            let body = CardanoTransactionBody(
                inputs: [CardanoInput(transactionID: [UInt8](repeating: 7, count: 32), index: 0)],
                outputs: [
                    CardanoOutput(
                        address: CardanoAddress(paymentKey: key.publicKey, network: .testnet), lovelace: 2_000_000,
                        asset: (CardanoAsset(policyID: [UInt8](repeating: 0xB2, count: 28), name: Array("NTX".utf8)), 5)
                    )
                ], fee: 180_000, ttl: 1_000)
            let id = try await client.submit(try body.signed(by: [key]), expectedID: body.id)
            #expect(id == Hex.encode(body.id))
            let forged = try body.signed(by: [Curve25519.Signing.PrivateKey()])
            guard case .array(var parts) = try CBOR.decode(forged), case .map(let witnesses) = parts[1],
                case .array(var list) = witnesses[0].value, case .array(var pair) = list[0]
            else { Issue.record("not a transaction"); return }
            pair[0] = .bytes(Array(key.publicKey.rawRepresentation))  // someone else's signature under this key
            list[0] = .array(pair)
            parts[1] = .map([CBORPair(.unsigned(0), .array(list))])
            await #expect(throws: CardanoSubmitClient.Failure.self) {
                _ = try await client.submit(CBOR.array(parts).encoded, expectedID: body.id)
            }
        }
    }
}
