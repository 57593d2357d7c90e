import Crypto
import Foundation
import OrreryCardano
import OrreryEthereum
import OrreryIdentity
import OrreryTestSupport
import Testing

@Suite("orrery eth / orrery cardano offline tools")
struct ChainToolTests {
    func orrery(_ arguments: [String]) async throws -> (Int32, String) {
        try await ChildProcess.run(TestEnvironment.executable("orrery"), arguments: arguments)
    }

    @Test("hash-typed-data and sign-typed-data reproduce the EIP-712 Mail vector; address names the key")
    func ethereumTools() async throws {
        let vector = try MailVector()
        try await TestEnvironment.withTemporaryDirectory("eth-tools") { directory in
            let typedFile = directory.appendingPathComponent("mail.json").path
            try Data(vector.typedDataText.utf8).write(to: URL(fileURLWithPath: typedFile))
            let keyFile = directory.appendingPathComponent("cow.key").path
            try KeyFile.writeBytes(vector.privateKey, to: keyFile)

            let (hashStatus, digest) = try await orrery(["eth", "hash-typed-data", typedFile])
            #expect(hashStatus == 0)
            #expect(
                digest.trimmingCharacters(in: .whitespacesAndNewlines)
                    == "0xbe609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2")
            let (signStatus, signature) = try await orrery(["eth", "sign-typed-data", typedFile, "--key", keyFile])
            #expect(signStatus == 0)
            #expect(signature.trimmingCharacters(in: .whitespacesAndNewlines) == vector.json["signature"]?.stringValue)
            let (_, address) = try await orrery(["eth", "address", "--key", keyFile])
            #expect(
                address.trimmingCharacters(in: .whitespacesAndNewlines) == vector.json["signerAddress"]?.stringValue)

            chmod(keyFile, 0o644)
            let (openStatus, complaint) = try await orrery(["eth", "sign-typed-data", typedFile, "--key", keyFile])
            #expect(openStatus != 0)
            #expect(complaint.contains("chmod 600"))
            let (badStatus, _) = try await orrery(["eth", "hash-typed-data", keyFile])
            #expect(badStatus != 0)
        }
    }

    @Test("cardano address prints the CIP-19 enterprise address of a key file on either network")
    func cardanoTools() async throws {
        try await TestEnvironment.withTemporaryDirectory("cardano-tools") { directory in
            let key = Curve25519.Signing.PrivateKey()
            let keyFile = directory.appendingPathComponent("payment.key").path
            try KeyFile.writeBytes(Array(key.rawRepresentation), to: keyFile)
            let (status, testnet) = try await orrery(["cardano", "address", "--key", keyFile, "--testnet"])
            #expect(status == 0)
            #expect(
                testnet.trimmingCharacters(in: .whitespacesAndNewlines)
                    == CardanoAddress(paymentKey: key.publicKey, network: .testnet).bech32)
            let (_, mainnet) = try await orrery(["cardano", "address", "--key", keyFile])
            #expect(mainnet.trimmingCharacters(in: .whitespacesAndNewlines).hasPrefix("addr1"))
        }
    }
}
