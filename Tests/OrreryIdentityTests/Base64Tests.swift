import Foundation
import OrreryIdentity
import Testing

/// The byte-level Base64 against Foundation's, for every length around the block size and both alphabets.
@Suite("Base64")
struct Base64Tests {
    @Test("standard and URL-safe forms match Foundation's; decoding takes either, padded or not; junk is refused")
    func againstFoundation() {
        var generator = SystemRandomNumberGenerator()
        for length in 0..<70 {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let foundation = Data(bytes).base64EncodedString()
            #expect(Base64.standard(bytes) == foundation)
            let url = foundation.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
                .replacingOccurrences(of: "=", with: "")
            #expect(Base64.url(bytes) == url)
            #expect(Base64.decode(foundation) == bytes)
            #expect(Base64.decode(url) == bytes)
            #expect(Base64.decode(" \(url)\n") == bytes)
        }
        #expect(Base64.decode("ab$d") == nil)
        #expect(Base64.decode("a") == nil)
        #expect(Base64.decode("abc===") == nil)
        #expect(Base64.decode("ab=c") == nil)
        // A byte outside both alphabets anywhere — in a whole block or in the tail — refuses the text.
        let text = Array("QUJDREVGR0hJSks".utf8)
        #expect(Base64.decode(String(decoding: text, as: UTF8.self)) == Array("ABCDEFGHIJK".utf8))
        for position in text.indices {
            var spoiled = text
            spoiled[position] = UInt8(ascii: "$")
            #expect(Base64.decode(String(decoding: spoiled, as: UTF8.self)) == nil, "junk at \(position)")
        }
    }
}
