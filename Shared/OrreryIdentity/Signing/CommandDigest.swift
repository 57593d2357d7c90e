internal import Crypto

/// How an exec session's command is named in the notary's public log: the SHA-256 of its words, each followed by one
/// NUL byte (as /proc/PID/cmdline holds them), in lowercase hex — never the words themselves.
public enum CommandDigest {
    public static func of(_ command: [String]) -> String {
        var bytes: [UInt8] = []
        for word in command { bytes += Array(word.utf8) + [0] }
        return Hex.encode(Array(SHA256.hash(data: bytes)))
    }
}
