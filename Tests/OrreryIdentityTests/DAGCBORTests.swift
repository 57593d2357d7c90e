import OrreryIdentity
import Testing

@Suite("Deterministic DAG-CBOR")
struct DAGCBORTests {
    @Test("values round-trip and maps encode in DAG-CBOR key order (length, then bytes)")
    func roundTrip() throws {
        let cid = CID.dagCBOR(of: [1, 2, 3])
        let value = IPLD.map([
            "bb": .integer(-500), "a": .list([.null, .bool(true), .float(1.5), .bytes([0, 255])]),
            "ccc": .map(["z": .string("ünïcode"), "y": .integer(Int64.max)]), "d": .link(cid), "b": .integer(23),
        ])
        let encoded = DAGCBOR.encode(value)
        #expect(try DAGCBOR.decode(encoded) == value)
        #expect(DAGCBOR.encode(try DAGCBOR.decode(encoded)) == encoded)
        let keys = DAGCBOR.encode(.map(["aa": .null, "b": .null, "a": .null]))
        #expect(keys == [0xA3, 0x61, 0x61, 0xF6, 0x61, 0x62, 0xF6, 0x62, 0x61, 0x61, 0xF6])
        #expect(DAGCBOR.encode(.integer(24)) == [0x18, 24])
        #expect(DAGCBOR.encode(.integer(-1)) == [0x20])
        #expect(DAGCBOR.encode(.float(1.0)) == [0xFB, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0])
    }

    @Test("non-canonical or non-DAG-CBOR input is refused")
    func strictness() {
        let cases: [[UInt8]] = [
            [0x18, 0x05],  // 5 in two bytes
            [0xA2, 0x61, 0x62, 0xF6, 0x61, 0x61, 0xF6],  // keys out of order
            [0xA2, 0x61, 0x61, 0xF6, 0x61, 0x61, 0xF6],  // repeated key
            [0x9F, 0xFF],  // indefinite list
            [0xF9, 0x3C, 0x00],  // half float
            [0xC1, 0x00],  // tag 1
            [0xA1, 0x01, 0xF6],  // integer key
            [0x62, 0xC3, 0x28],  // invalid UTF-8
            [0xF6, 0xF6],  // trailing bytes
            [0x5A, 0xFF, 0xFF, 0xFF, 0xFF],  // length beyond input
        ]
        for bytes in cases {
            #expect(throws: DAGCBORError.self, "\(bytes)") { try DAGCBOR.decode(bytes) }
        }
    }

    @Test("integers across the whole 64-bit range of DAG-CBOR round-trip exactly; policies compare them exactly")
    func wideIntegers() throws {
        let top = IPLD.exact(UInt64.max)
        #expect(DAGCBOR.encode(top) == [0x1B] + [UInt8](repeating: 0xFF, count: 8))
        #expect(try DAGCBOR.decode([0x1B] + [UInt8](repeating: 0xFF, count: 8)) == top)
        let bottom = IPLD.exact(try #require(ExactInteger(decimal: "-18446744073709551616")))
        #expect(DAGCBOR.encode(bottom) == [0x3B] + [UInt8](repeating: 0xFF, count: 8))
        #expect(try DAGCBOR.decode([0x3B] + [UInt8](repeating: 0xFF, count: 8)) == bottom)
        let justPast = IPLD.exact(UInt64(Int64.max) + 1)
        #expect(try DAGCBOR.decode(DAGCBOR.encode(justPast)) == justPast)
        #expect(IPLD.exact(UInt64(5)) == .integer(5))
        #expect(try IPLDJSON.parse("18446744073709551615") == top)

        func holds(_ policy: String, _ value: IPLD) throws -> Bool {
            try Policy(try IPLDJSON.parse(policy)).matches(.map(["n": value]))
        }
        #expect(try !holds(#"[["<=", ".n", 100]]"#, justPast))
        #expect(try holds(#"[[">", ".n", 9223372036854775807]]"#, justPast))
        #expect(try holds(#"[["==", ".n", 18446744073709551615]]"#, top))
        #expect(try holds(#"[["<", ".n", -18446744073709551615]]"#, bottom))
        // 2^53 + 1 is not the double 2^53: compared exactly, not through a rounding double.
        #expect(try holds(#"[[">", ".n", 9007199254740992.0]]"#, .integer(9_007_199_254_740_993)))
        #expect(try !holds(#"[["==", ".n", 9007199254740992.0]]"#, .integer(9_007_199_254_740_993)))
        #expect(try holds(#"[["<", ".n", 1.5]]"#, .integer(1)))
        #expect(try !holds(#"[["<", ".n", 1.5]]"#, .integer(2)))
        #expect(try holds(#"[["<=", ".n", 1e300]]"#, top))
        let uint256 = try #require(
            ExactInteger(decimal: "115792089237316195423570985008687907853269984665640564039457584007913129639935"))
        #expect(try holds(#"[[">", ".n", 18446744073709551615]]"#, .exact(uint256)))
        #expect(ExactInteger(decimal: "-0") == nil && ExactInteger(decimal: "01") == nil && ExactInteger(decimal: "+1") == nil)
    }

    @Test("CIDs print as base32 'bafy…' and parse from base32 and base58btc")
    func cids() throws {
        let cid = CID.dagCBOR(of: DAGCBOR.encode(.map([:])))
        #expect(cid.string.hasPrefix("bafyrei"))
        #expect(try CID(cid.string) == cid)
        #expect(try CID("z" + Base58.encode(cid.bytes)) == cid)
        #expect(throws: DAGCBORError.self) { try CID("xyz") }
    }
}
