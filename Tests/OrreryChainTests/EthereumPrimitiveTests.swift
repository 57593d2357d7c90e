import Foundation
import OrreryEthereum
import OrreryIdentity
import OrreryTestSupport
import Testing

/// Loads `Tests/Vectors/eip712-mail.json` (the EIP-712 specification's "Mail" example).
struct MailVector {
    let json: JSONValue
    let typedDataText: String

    init() throws {
        let url = TestEnvironment.repositoryRoot.appendingPathComponent("Tests/Vectors/eip712-mail.json")
        let text = try String(contentsOf: url, encoding: .utf8)
        json = try JSONValue.parse(text)
        typedDataText = json["typedData"]?.serialized ?? ""
    }

    var privateKey: [UInt8] { Keccak256.hash("cow") }
}

@Suite("Ethereum primitives")
struct EthereumPrimitiveTests {
    @Test("keccak-256 reproduces the vector's digests (Keccak padding, not SHA3) across block boundaries")
    func keccak() throws {
        let vector = try MailVector()
        guard case .object(let digests)? = vector.json["keccak256"] else { Issue.record("no digests"); return }
        for (input, expected) in digests {
            #expect(Hex.encode(Keccak256.hash(input)) == expected.stringValue)
        }
        #expect(vector.privateKey == Hex.decode("c85ef7d79691fe79573b1a7064c19c1a9819ebdbd1faaab1a8ec92344438aaf4"))
        // 135, 136 and 137 bytes straddle the 136-byte rate; each must differ and be stable.
        let lengths = [135, 136, 137, 272]
        let digests135 = Set(lengths.map { Hex.prefixed(Keccak256.hash([UInt8](repeating: 0x61, count: $0))) })
        #expect(digests135.count == lengths.count)
    }

    @Test("the EIP-712 Mail example hashes and signs byte for byte as the specification says")
    func eip712Mail() throws {
        let vector = try MailVector()
        let typed = try TypedData(json: vector.typedDataText)
        #expect(
            try typed.encodeType("Mail")
                == "Mail(Person from,Person to,string contents)Person(string name,address wallet)")
        #expect(
            Hex.prefixed(try typed.domainSeparator())
                == "0xf2cee375fa42b42143804025fc449deafd50cc031ca257e0b194a650a912090f")
        #expect(
            Hex.prefixed(try typed.hashStruct("Mail", typed.message))
                == "0xc52c0ee5d84264471806290a3f2c4cecfc5490626bf912d01f240d7a274b371e")
        #expect(
            Hex.prefixed(try typed.digest()) == "0xbe609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2")
        let key = try Secp256k1PrivateKey(bytes: vector.privateKey)
        #expect(key.address.checksummed == vector.json["signerAddress"]?.stringValue)
        let signature = key.sign(digest: try typed.digest())
        #expect(Hex.prefixed(signature.rsv) == vector.json["signature"]?.stringValue)
        #expect(try signature.recoverAddress(digest: try typed.digest()) == key.address)
    }

    @Test("EIP-55 checksums are produced and enforced")
    func checksums() throws {
        let text = "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"
        #expect(EthereumAddress(text)?.checksummed == text)
        #expect(EthereumAddress(text.lowercased()) != nil)
        #expect(EthereumAddress("0xcD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826") == nil)
        #expect(EthereumAddress("0x1234") == nil)
    }

    @Test("RLP encodes the specification's examples and refuses non-canonical input")
    func rlp() throws {
        #expect(RLP.bytes(Array("dog".utf8)).encoded == [0x83] + Array("dog".utf8))
        #expect(RLP.list([.bytes(Array("cat".utf8)), .bytes(Array("dog".utf8))]).encoded.first == 0xC8)
        #expect(RLP.bytes([]).encoded == [0x80])
        #expect(RLP.list([]).encoded == [0xC0])
        #expect(RLP.uint(UInt64(0)).encoded == [0x80])
        #expect(RLP.uint(UInt64(15)).encoded == [0x0F])
        #expect(RLP.uint(UInt64(1024)).encoded == [0x82, 0x04, 0x00])
        let lorem = Array("Lorem ipsum dolor sit amet, consectetur adipisicing elit".utf8)
        #expect(Array(RLP.bytes(lorem).encoded.prefix(2)) == [0xB8, 0x38])
        let nested = RLP.list([.list([]), .list([.list([])]), .list([.list([]), .list([.list([])])])])
        #expect(nested.encoded == [0xC7, 0xC0, 0xC1, 0xC0, 0xC3, 0xC0, 0xC1, 0xC0])
        #expect(try RLP.decode(nested.encoded) == nested)
        #expect(try RLP.decode(RLP.bytes(lorem).encoded) == .bytes(lorem))
        #expect(throws: RLPError.self) { try RLP.decode([0x81, 0x05]) }
        #expect(throws: RLPError.self) { try RLP.decode([0x83, 0x61]) }
    }

    @Test("256-bit integers convert between decimal, words and quantities; overflow is refused")
    func integers() throws {
        let max = String(repeating: "f", count: 64)
        let maxDecimal = "115792089237316195423570985008687907853269984665640564039457584007913129639935"
        #expect(UInt256(decimal: maxDecimal)?.quantity == "0x" + max)
        #expect(
            UInt256(decimal: "115792089237316195423570985008687907853269984665640564039457584007913129639936") == nil)
        #expect(UInt256(quantity: "0x" + max)?.decimal == maxDecimal)
        #expect(UInt256(decimal: "0")?.quantity == "0x0")
        #expect(UInt256(decimal: "1000000000000000000")?.quantity == "0xde0b6b3a7640000")
        #expect(UInt256(decimal: "-1") == nil && UInt256(decimal: "1e3") == nil && UInt256(decimal: "") == nil)
        #expect(ABI.selector("transfer(address,uint256)") == [0xA9, 0x05, 0x9C, 0xBB])
    }

    @Test("typed data with negative ints, fixed bytes and arrays is range-checked")
    func typedDataEdges() throws {
        func typed(_ type: String, _ value: String) -> String {
            """
            {"types":{"EIP712Domain":[{"name":"name","type":"string"}],"T":[{"name":"v","type":"\(type)"}]},
             "primaryType":"T","domain":{"name":"x"},"message":{"v":\(value)}}
            """
        }
        #expect(throws: Never.self) { try TypedData(json: typed("int8", "-128")).digest() }
        #expect(throws: EIP712Error.self) { try TypedData(json: typed("int8", "-129")).digest() }
        #expect(throws: EIP712Error.self) { try TypedData(json: typed("uint8", "256")).digest() }
        #expect(throws: EIP712Error.self) { try TypedData(json: typed("uint8", "-1")).digest() }
        #expect(throws: EIP712Error.self) { try TypedData(json: typed("bytes4", "\"0x0102\"")).digest() }
        #expect(throws: EIP712Error.self) { try TypedData(json: typed("uint256[2]", "[1]")).digest() }
        #expect(throws: Never.self) { try TypedData(json: typed("uint256[]", "[1, \"0x2\", \"3\"]")).digest() }
    }
}
