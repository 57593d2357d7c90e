#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
internal import Logging

/// What an actor's agent must not forget when its process restarts while the actor runs: the envelopes the actor
/// sent that are not settled yet (resent after the restart), the send ids of those delivered (a workload that
/// resends after reconnecting is answered, not sent twice), and the envelopes handed to the workload (refused as
/// replays afterwards) with where a reply to each goes. One JSON line per event, appended to a file in the allocation's directory — no fsync: it
/// outlives the agent's process, and when the host itself dies the actor resumes elsewhere from its checkpoint —
/// and rewritten with only what is live once it has grown.
struct ActorJournal {
    /// An envelope on its way.
    struct Sent: Codable, Equatable {
        /// The envelope's CID.
        var id: String
        /// The workload's id for the send.
        var sendID: String
        /// The serialized `Orrery_Actors_V1_Mail`.
        var mail: Data
        var expiresAt: Int64
    }

    /// What the journal holds after a restart.
    struct State: Equatable {
        var outbound: [String: Sent] = [:]
        /// Delivered sends by the workload's id: the envelope's CID and until when the id stays taken.
        var delivered: [String: (id: String, until: Int64)] = [:]
        /// Envelopes handed to the workload, by CID, with their expiries.
        var received: [String: Int64] = [:]
        /// Where a reply to each of them goes (its reply_to, else its sender), by CID.
        var replyTargets: [String: String] = [:]

        static func == (a: State, b: State) -> Bool {
            a.outbound == b.outbound && a.received == b.received && a.replyTargets == b.replyTargets
                && a.delivered.mapValues { "\($0.id)@\($0.until)" } == b.delivered.mapValues { "\($0.id)@\($0.until)" }
        }
    }

    private struct Line: Codable {
        var sent: Sent?
        var settled: String?
        var delivered: Bool?
        var took: String?
        var expiresAt: Int64?
        var replyTo: String?
    }

    let path: String
    private let logger: Logger
    private(set) var state: State
    private var lines: Int
    private var file: AppendOnlyFile?

    /// Opens (or creates) the journal at `path` and reads what it holds, dropping what expired before `now`.
    init(
        path: String, logger: Logger = Logger(label: "orrery.actor-journal"),
        now: Int64 = Int64(Date().timeIntervalSince1970)
    ) {
        self.path = path
        self.logger = logger
        var state = State()
        var lines = 0
        if let data = FileManager.default.contents(atPath: path) {
            let decoder = JSONDecoder()
            for text in data.split(separator: UInt8(ascii: "\n")) {
                // A line cut short by a crash is the last one: it and anything unreadable are skipped.
                guard let line = try? decoder.decode(Line.self, from: Data(text)) else { continue }
                lines += 1
                Self.apply(line, to: &state)
            }
        }
        state.outbound = state.outbound.filter { $0.value.expiresAt > now }
        state.delivered = state.delivered.filter { $0.value.until > now }
        state.received = state.received.filter { $0.value > now }
        state.replyTargets = state.replyTargets.filter { state.received[$0.key] != nil }
        self.state = state
        self.lines = lines
        compact()
    }

    private static func apply(_ line: Line, to state: inout State) {
        if let sent = line.sent {
            state.outbound[sent.id] = sent
        } else if let id = line.settled, let sent = state.outbound.removeValue(forKey: id), line.delivered == true {
            state.delivered[sent.sendID] = (id, sent.expiresAt)
        } else if let cid = line.took, let expiresAt = line.expiresAt {
            state.received[cid] = expiresAt
            if let target = line.replyTo { state.replyTargets[cid] = target }
        }
    }

    /// An envelope was sealed and is about to go.
    mutating func sent(_ sent: Sent) { append(Line(sent: sent)) }

    /// An envelope was delivered, refused or expired: it is not resent again.
    mutating func settled(_ id: String, delivered: Bool) { append(Line(settled: id, delivered: delivered)) }

    /// An envelope was handed to the workload; a reply to it goes to `replyTo`.
    mutating func took(_ cid: String, expiresAt: Int64, replyTo: String?) {
        append(Line(took: cid, expiresAt: expiresAt, replyTo: replyTo))
    }

    private mutating func append(_ line: Line) {
        Self.apply(line, to: &state)
        guard var bytes = try? JSONEncoder().encode(line) else { return }
        bytes.append(UInt8(ascii: "\n"))
        do {
            if file == nil { file = try AppendOnlyFile(path: path) }
            try file?.append([UInt8](bytes))
        } catch {
            // Kept in memory all the same: only a restart of the agent would forget it.
            logger.warning("cannot write the actor's journal", metadata: ["path": "\(path)", "error": "\(error)"])
        }
        lines += 1
        if lines > 1024 && lines > 4 * (state.outbound.count + state.delivered.count + state.received.count) {
            compact()
        }
    }

    /// Rewrites the file with only what is live (atomically: a crash leaves the old file or the new one).
    private mutating func compact() {
        let now = Int64(Date().timeIntervalSince1970)
        state.delivered = state.delivered.filter { $0.value.until > now }
        state.received = state.received.filter { $0.value > now }
        state.replyTargets = state.replyTargets.filter { state.received[$0.key] != nil }
        var live: [Line] = []
        // Delivered sends are written as sent-then-settled, so that reading them back restores their ids.
        for (sendID, entry) in state.delivered {
            live.append(Line(sent: Sent(id: entry.id, sendID: sendID, mail: Data(), expiresAt: entry.until)))
            live.append(Line(settled: entry.id, delivered: true))
        }
        live += state.outbound.values.map { Line(sent: $0) }
        live += state.received.map { Line(took: $0.key, expiresAt: $0.value, replyTo: state.replyTargets[$0.key]) }
        let encoder = JSONEncoder()
        var data = Data()
        for line in live {
            guard let bytes = try? encoder.encode(line) else { continue }
            data.append(bytes)
            data.append(UInt8(ascii: "\n"))
        }
        file = nil
        do {
            try data.write(to: URL(fileURLWithPath: path), options: .atomic)
            lines = live.count
        } catch {
            logger.warning("cannot compact the actor's journal", metadata: ["path": "\(path)", "error": "\(error)"])
        }
    }
}
