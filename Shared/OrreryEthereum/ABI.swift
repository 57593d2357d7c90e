/// Solidity ABI encoding of call data for the few types Orrery's contracts use.
public enum ABIValue: Sendable, Hashable {
    case address(EthereumAddress)
    case uint(UInt256)
    case bool(Bool)
    case bytes32([UInt8])
    /// Dynamic `bytes`.
    case bytes([UInt8])

    var isDynamic: Bool {
        if case .bytes = self { return true }
        return false
    }

    /// The head word of a static value.
    var staticWord: [UInt8] {
        switch self {
        case .address(let address): [UInt8](repeating: 0, count: 12) + address.bytes
        case .uint(let value): value.word
        case .bool(let flag): UInt256(flag ? 1 : 0).word
        case .bytes32(let bytes): bytes + [UInt8](repeating: 0, count: max(0, 32 - bytes.count))
        case .bytes: []
        }
    }
}

public enum ABI {
    /// The 4-byte selector of a canonical signature such as `transfer(address,uint256)`.
    public static func selector(_ signature: String) -> [UInt8] { Array(Keccak256.hash(signature).prefix(4)) }

    /// Heads then tails: static values in place, dynamic ones by offset.
    public static func encode(_ values: [ABIValue]) -> [UInt8] {
        var head: [UInt8] = []
        var tail: [UInt8] = []
        let headSize = values.count * 32
        for value in values {
            if case .bytes(let bytes) = value {
                head += UInt256(UInt64(headSize + tail.count)).word
                tail += UInt256(UInt64(bytes.count)).word + bytes
                tail += [UInt8](repeating: 0, count: (32 - bytes.count % 32) % 32)
            } else {
                head += value.staticWord
            }
        }
        return head + tail
    }

    /// Call data: selector ‖ encoded arguments.
    public static func call(_ signature: String, _ values: [ABIValue]) -> [UInt8] {
        selector(signature) + encode(values)
    }

    /// The `index`-th 32-byte word of return data as an unsigned integer.
    public static func decodeUInt(_ data: [UInt8], word index: Int = 0) -> UInt256? {
        guard data.count >= (index + 1) * 32 else { return nil }
        return UInt256(bigEndian: data[(index * 32)..<((index + 1) * 32)])
    }
}
