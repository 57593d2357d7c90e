import OrreryActors
import OrreryIdentity
import Testing

@Suite("Sealed boxes to a DID")
struct SealedBoxTests {
    @Test("only the recipient's key opens a box; a changed byte or another key fails")
    func sealAndOpen() throws {
        let device = SigningKey()
        let other = SigningKey()
        let token = Array("eyJhbGciOiJFUzI1NiJ9.pull-token".utf8)
        let sealed = try SealedBox.seal(token, to: device.did)
        #expect(sealed.count == token.count + 48)
        #expect(try SealedBox.open(sealed, with: device) == token)
        #expect(throws: SealedBox.Failure.self) { try SealedBox.open(sealed, with: other) }
        var altered = sealed
        altered[altered.count - 1] ^= 1
        #expect(throws: SealedBox.Failure.self) { try SealedBox.open(altered, with: device) }
        #expect(throws: SealedBox.Failure.self) { try SealedBox.open([1, 2, 3], with: device) }
        // Two seals of the same bytes differ (an ephemeral sender key each time).
        #expect(try SealedBox.seal(token, to: device.did) != sealed)
    }
}
