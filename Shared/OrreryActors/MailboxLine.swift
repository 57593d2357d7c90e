#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics

/// The protocol between a workload and its agent over the Unix socket in its sandbox: one JSON object per line.
///
/// Workload → agent: `{"op": "send", "id": "…", "to": "actor://…", "behavior": "…", "payload": "<base64>",
/// "reply_to": "actor://…"}` (`reply_to` optional), `{"op": "reply", "id": "…", "to_message": "<message id>",
/// "payload": "<base64>"}`, `{"op": "receive"}` (answered by the next message, refusal or checkpoint request, waiting
/// for one) and `{"op": "checkpointed", "id": "<request id>"}` (the state is in `ORRERY_CHECKPOINT_DIR`).
/// Agent → workload: `{"op": "message", "id": "<envelope id>", "from": "actor://…", "behavior": "…",
/// "payload": "<base64>", "reply_to": "…"}`, `{"op": "sent", "id": "…"}` (sealed and on its way; delivery is
/// retried until the receiver takes it or it expires), `{"op": "refused", "id": "…", "reason": "…"}` (to a request,
/// or later through `receive` for a send the receiver refused), `{"op": "checkpoint", "id": "…"}` and
/// `{"op": "ok", "id": "…"}` (a `checkpointed` acknowledged).
public struct MailboxLine: Codable, Sendable, Equatable {
    public var op: String
    public var id: String?
    public var to: String?
    public var toMessage: String?
    public var from: String?
    public var behavior: String?
    public var payload: String?
    public var replyTo: String?
    public var reason: String?

    enum CodingKeys: String, CodingKey {
        case op, id, to, from, behavior, payload, reason
        case toMessage = "to_message"
        case replyTo = "reply_to"
    }

    public init(
        op: String, id: String? = nil, to: String? = nil, toMessage: String? = nil, from: String? = nil,
        behavior: String? = nil, payload: [UInt8]? = nil, replyTo: String? = nil, reason: String? = nil
    ) {
        self.op = op
        self.id = id
        self.to = to
        self.toMessage = toMessage
        self.from = from
        self.behavior = behavior
        self.payload = payload.map { Data($0).base64EncodedString() }
        self.replyTo = replyTo
        self.reason = reason
    }

    /// The longest line read (a 1 MiB payload in base64 and its fields).
    public static let maximumLength = (ActorEnvelopes.maximumPayload / 3 + 1) * 4 + 4096

    /// Why a line from a workload is refused.
    public struct Invalid: Error, Equatable, CustomStringConvertible {
        public let reason: String
        public var description: String { reason }
    }

    /// A request from a workload, checked: the op is known, and what it needs is there and well formed.
    public static func request(_ line: some StringProtocol) throws(Invalid) -> MailboxLine {
        guard line.utf8.count <= maximumLength else {
            throw Invalid(reason: "the line is longer than \(maximumLength) bytes")
        }
        let parsed: MailboxLine
        do {
            parsed = try JSONDecoder().decode(MailboxLine.self, from: Data(line.utf8))
        } catch {
            throw Invalid(reason: "not a JSON object with a string \"op\"")
        }
        switch parsed.op {
        case "receive":
            return parsed
        case "checkpointed":
            guard let id = parsed.id, !id.isEmpty else { throw Invalid(reason: "checkpointed: \"id\" is required") }
            return parsed
        case "send":
            guard let id = parsed.id, !id.isEmpty, id.count <= 128 else {
                throw Invalid(reason: "send: \"id\" (1…128 characters) is required")
            }
            guard parsed.to.flatMap(ActorAddress.init) != nil else {
                throw Invalid(reason: "send: \"to\" must be an actor address")
            }
            guard let behavior = parsed.behavior, (try? ActorEnvelopes.command(for: behavior)) != nil else {
                throw Invalid(reason: "send: \"behavior\" must be 1…64 of a-z, 0-9, -")
            }
            if let replyTo = parsed.replyTo, ActorAddress(replyTo) == nil {
                throw Invalid(reason: "send: \"reply_to\" must be an actor address")
            }
            guard parsed.payloadBytes != nil else { throw Invalid(reason: "send: \"payload\" must be base64") }
            return parsed
        case "reply":
            guard let id = parsed.id, !id.isEmpty, id.count <= 128 else {
                throw Invalid(reason: "reply: \"id\" is required")
            }
            guard let message = parsed.toMessage, !message.isEmpty else {
                throw Invalid(reason: "reply: \"to_message\" (the id of the message answered) is required")
            }
            guard parsed.payloadBytes != nil else { throw Invalid(reason: "reply: \"payload\" must be base64") }
            return parsed
        default:
            throw Invalid(reason: "unknown op '\(parsed.op)': send, reply, receive or checkpointed")
        }
    }

    /// The payload's bytes (empty when absent), or nil when it is not base64.
    public var payloadBytes: [UInt8]? {
        guard let payload else { return [] }
        return Data(base64Encoded: payload).map { [UInt8]($0) }
    }

    /// The line to write: compact JSON and a newline.
    public var encoded: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(self)) ?? Data("{}".utf8), as: UTF8.self) + "\n"
    }
}
