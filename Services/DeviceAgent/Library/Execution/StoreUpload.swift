internal import Crypto
#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
internal import OrreryIdentity
internal import OrreryProto
internal import SwiftProtobuf

/// An output on its way to the orchestrator's content store over the agent's line: chunks of 1 MiB sent in order,
/// at most `window` bytes unanswered; each answer says how much the store holds. While answers match what was sent,
/// the window refills as they come; an answer that does not (a chunk the store did not take: resent after a
/// reconnect, or one it could not check) drains the window, then sending resumes from what the store holds. A state
/// machine: it reads nothing but the answers and returns the chunks to send.
struct StoreUpload: Sendable {
    let offerID: String
    let path: String
    /// The file on the host (resolved inside the work directory).
    let file: String
    let size: Int64
    let sha256: String
    /// Unanswered bytes at most.
    var window: Int64 = 16 << 20
    /// Non-zero: not an output but this checkpoint's archive (the store keeps it apart).
    var checkpointSequence: UInt64 = 0
    static let chunkSize = 1 << 20

    /// What the store holds, from its last answer.
    private(set) var stored: Int64 = 0
    /// Where the next chunk starts.
    private var next: Int64 = 0
    /// Chunks sent and not answered yet, oldest first.
    private var unanswered: [(offset: Int64, length: Int64)] = []
    private var draining = false

    init(offerID: String, path: String, file: String, size: Int64, sha256: String) {
        self.offerID = offerID
        self.path = path
        self.file = file
        self.size = size
        self.sha256 = sha256
    }

    /// A chunk to send: where and how long.
    struct Send: Equatable {
        var offset: Int64
        var length: Int64
    }

    /// Starts again from what the store was last known to hold (a new line: answers on the old one are lost).
    mutating func restart() -> [Send] {
        unanswered = []
        draining = false
        next = stored
        return refill()
    }

    /// Takes the store's answer to the oldest unanswered chunk; returns the chunks to send now.
    mutating func answered(stored held: Int64) -> [Send] {
        let answered = unanswered.isEmpty ? nil : unanswered.removeFirst()
        if let answered, held == answered.offset + answered.length {
            stored = max(stored, held)
        } else {
            stored = max(stored, held)
            draining = true
        }
        if draining {
            guard unanswered.isEmpty else { return [] }
            draining = false
            next = stored
        }
        next = max(next, stored)
        return refill()
    }

    /// Whether everything was sent and the store holds all of it.
    var isDone: Bool { stored >= size }

    private mutating func refill() -> [Send] {
        var sends: [Send] = []
        while next < size, next - stored < window {
            let length = min(Int64(Self.chunkSize), size - next)
            sends.append(Send(offset: next, length: length))
            unanswered.append((next, length))
            next += length
        }
        return sends
    }

    /// The message carrying `send`'s bytes, read from the file.
    func chunk(_ send: Send) throws -> Orrery_Orchestrator_V1_AgentMessage {
        let descriptor = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard descriptor >= 0 else { throw RunnerError(message: "cannot read \(file): \(systemErrorText())") }
        defer { close(descriptor) }
        var bytes = [UInt8](repeating: 0, count: Int(send.length))
        var filled = 0
        while filled < bytes.count {
            let count = bytes[filled...].withUnsafeMutableBytes {
                pread(descriptor, $0.baseAddress, $0.count, off_t(send.offset) + off_t(filled))
            }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { throw RunnerError(message: "\(file) ended before \(send.offset + send.length)") }
            filled += count
        }
        let data = Data(bytes)
        return .with {
            $0.outputChunk = .with {
                $0.offerID = offerID
                $0.path = path
                $0.offset = UInt64(send.offset)
                $0.data = data
                $0.chunkSha256 = Hex.sha256(data)
                $0.size = UInt64(size)
                $0.sha256 = sha256
                $0.checkpointSequence = checkpointSequence
            }
        }
    }

    /// The sha256 and size of a file, read in 1 MiB pieces.
    static func digest(of file: String) throws -> (sha256: String, size: Int64) {
        let descriptor = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard descriptor >= 0 else { throw RunnerError(message: "cannot read \(file): \(systemErrorText())") }
        defer { close(descriptor) }
        var hasher = SHA256()
        var size: Int64 = 0
        var buffer = [UInt8](repeating: 0, count: chunkSize)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count >= 0 else { throw RunnerError(message: "cannot read \(file): \(systemErrorText())") }
            guard count > 0 else { break }
            buffer.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
            size += Int64(count)
        }
        return (Hex.encode(hasher.finalize()), size)
    }
}
