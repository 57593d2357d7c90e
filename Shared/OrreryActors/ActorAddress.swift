/// A stable actor address, `actor://<deployment>/<allocation>/<replica>`: it names the replica of an allocation, not
/// the device running it, so it survives relocation.
public struct ActorAddress: Sendable, Hashable, CustomStringConvertible {
    public let deployment: String
    public let allocation: String
    public let replica: Int

    public init?(deployment: String, allocation: String, replica: Int) {
        guard deployment.hasPrefix("dep_"), deployment.count == 30,
            deployment.utf8.allSatisfy(Self.isIdentifierByte),
            (1...63).contains(allocation.utf8.count), allocation.utf8.allSatisfy(Self.isIdentifierByte),
            (0..<10_000).contains(replica)
        else { return nil }
        self.deployment = deployment
        self.allocation = allocation
        self.replica = replica
    }

    /// Parses the text form; nil for anything else.
    public init?(_ text: String) {
        guard text.hasPrefix("actor://") else { return nil }
        let parts = text.dropFirst("actor://".count).split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3, let replica = Int(parts[2]), String(replica) == parts[2] else { return nil }
        self.init(deployment: String(parts[0]), allocation: String(parts[1]), replica: replica)
    }

    public var description: String { "actor://\(deployment)/\(allocation)/\(replica)" }

    private static func isIdentifierByte(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
            || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
    }
}
