import Foundation
import OrreryIdentity
import OrreryProto
import OrreryTestSupport
import Testing

@Suite("Key files and the Signed envelope")
struct KeyAndSignatureTests {
    @Test("a key file is written 0600, read back, never overwritten, and refused when others can read it")
    func keyFiles() throws {
        try TestEnvironment.withTemporaryDirectory("orrery-keys") { directory in
            let path = directory.appendingPathComponent("key").path
            let key = SigningKey()
            try KeyFile.write(key, to: path)
            let mode = try #require(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int)
            #expect(mode == 0o600)
            #expect(try KeyFile.read(path).did == key.did)
            #expect(throws: KeyFileError.self) { try KeyFile.write(SigningKey(), to: path) }
            chmod(path, 0o644)
            #expect(throws: KeyFileError.tooOpen(path, mode: 0o644)) { try KeyFile.read(path) }
            #expect("\(KeyFileError.tooOpen(path, mode: 0o644))".contains("chmod 600"))
            let created = directory.appendingPathComponent("new").path
            let first = try KeyFile.readOrCreate(created)
            #expect(try KeyFile.readOrCreate(created).did == first.did)
        }
    }

    @Test("Signed: signatures cover type and payload; tampering, a wrong type or a missing signer is refused")
    func signedEnvelope() throws {
        let consumer = SigningKey()
        let device = SigningKey()
        var signed = SignedMessage.make(type: "orrery.test.v1.Bid", payload: Data([1, 2, 3]), signers: [consumer])
        #expect(
            try SignedMessage.verify(signed, type: "orrery.test.v1.Bid", requiring: [consumer.did]) == [consumer.did])
        #expect(throws: SignedMessageError.missingSignature(device.did.string)) {
            try SignedMessage.verify(signed, requiring: [device.did])
        }
        SignedMessage.countersign(&signed, with: device)
        #expect(try SignedMessage.verify(signed, requiring: [consumer.did, device.did]) == [consumer.did, device.did])

        var tampered = signed
        tampered.payload = Data([1, 2, 4])
        #expect(throws: SignedMessageError.invalidSignature(consumer.did.string)) { try SignedMessage.verify(tampered) }
        var retyped = signed
        retyped.type = "orrery.test.v1.Contract"
        #expect(throws: SignedMessageError.invalidSignature(consumer.did.string)) { try SignedMessage.verify(retyped) }
        #expect(throws: SignedMessageError.wrongType(expected: "orrery.test.v1.Contract", found: "orrery.test.v1.Bid"))
        {
            try SignedMessage.verify(signed, type: "orrery.test.v1.Contract")
        }
        #expect(throws: SignedMessageError.unsigned) { try SignedMessage.verify(Orrery_Common_V1_Signed()) }
    }

    @Test("PyNaCl verifies our Signed envelopes over the domain-separated input, and refuses a tampered one")
    func pyNaClChecksSignedEnvelope() async throws {
        let key = SigningKey()
        let signed = SignedMessage.make(
            type: "orrery.registry.v1.JoinChallenge", payload: Data("challenge bytes".utf8), signers: [key])
        let script = """
            import sys, base58, nacl.signing, nacl.exceptions
            did, kind, payload, signature = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3]), bytes.fromhex(sys.argv[4])
            raw = base58.b58decode(did[len("did:key:z"):])
            assert raw[:2] == b"\\xed\\x01", raw[:2]
            key = nacl.signing.VerifyKey(raw[2:])
            message = b"orrery-sig-v1\\x00" + kind.encode() + b"\\x00" + payload
            try:
                key.verify(message, signature)
                print("valid")
            except nacl.exceptions.BadSignatureError:
                print("invalid")
            """
        func check(_ payload: Data) async throws -> String {
            let (status, output) = try await ChildProcess.run(
                TestEnvironment.python,
                arguments: [
                    "-c", script, key.did.string, signed.type, Hex.encode(payload),
                    Hex.encode(signed.signatures[0].sig),
                ])
            #expect(status == 0, "\(output)")
            return output.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        #expect(try await check(signed.payload) == "valid")
        #expect(try await check(Data("challenge bytez".utf8)) == "invalid")
    }
}
