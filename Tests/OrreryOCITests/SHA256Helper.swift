import Crypto

enum SHA256Helper {
    static func hash(_ bytes: [UInt8]) -> SHA256.Digest { SHA256.hash(data: bytes) }
}
