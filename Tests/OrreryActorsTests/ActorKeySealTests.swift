import OrreryActors
import OrreryIdentity
import Testing

@Suite("An actor key sealed to a did:key")
struct ActorKeySealTests {
    @Test("opens only with the recipient's key, to the actor's own key; an altered byte or another DID is refused")
    func sealAndOpen() throws {
        let actor = SigningKey()
        let recipient = SigningKey()
        let sealed = try ActorKeySeal.seal(actor, to: recipient.did)
        #expect(sealed.count == 32 + 48)
        let opened = try ActorKeySeal.open(sealed, with: recipient, expecting: actor.did)
        #expect(opened.did == actor.did && opened.seed == actor.seed)
        // Sealing is randomised (an ephemeral sender key): the same key seals differently each time.
        #expect(try ActorKeySeal.seal(actor, to: recipient.did) != sealed)
        #expect(throws: ActorKeySeal.Failure.self) {
            try ActorKeySeal.open(sealed, with: SigningKey(), expecting: actor.did)
        }
        var altered = sealed
        altered[40] ^= 1
        #expect(throws: ActorKeySeal.Failure.self) {
            try ActorKeySeal.open(altered, with: recipient, expecting: actor.did)
        }
        #expect(throws: ActorKeySeal.Failure.self) {
            try ActorKeySeal.open(sealed, with: recipient, expecting: SigningKey().did)
        }
        #expect(throws: ActorKeySeal.Failure.self) {
            try ActorKeySeal.open(Array(sealed.dropLast()), with: recipient, expecting: actor.did)
        }
    }
}
