import ArgumentParser
import Foundation
import OrreryIdentity

/// `orrery ucan delegate|invoke|inspect|verify`.
struct UCANCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ucan", abstract: "UCAN 1.0 capability tokens.",
        subcommands: [Delegate.self, Invoke.self, Inspect.self, Verify.self])

    struct Delegate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delegate a command to a DID; prints a container holding the new delegation and its proofs.")

        @Option(help: "The issuer's key file.") var key: String
        @Option(help: "The audience's DID.") var to: String
        @Option(help: "The command, e.g. /orrery/orchestrator.") var cmd: String
        @Option(help: "A policy as JSON, e.g. '[[\"<=\", \".budget\", 500]]'.") var pol: String = "[]"
        @Option(help: "Lifetime, e.g. 24h (or 'never').") var exp: String = "24h"
        @Option(help: "The subject (default: the root of --proof, or the issuer). 'null' for a powerline.") var subject:
            String?
        @Option(help: "A file with the issuer's own chain (repeatable).") var proof: [String] = []

        func run() throws {
            let issuer = try Inputs.key(key)
            let chain = try Inputs.chain(proof)
            let audience: DID
            do { audience = try DID(to) } catch { throw ValidationError("--to: \(error)") }
            let subjectDID: DID?
            switch subject {
            case "null"?: subjectDID = nil
            case let text?:
                do { subjectDID = try DID(text) } catch { throw ValidationError("--subject: \(error)") }
            case nil: subjectDID = chain.first?.subject ?? issuer.did
            }
            let policy: Policy
            do { policy = try Policy(try Inputs.json(pol, what: "--pol")) } catch {
                throw ValidationError("--pol: \(error)")
            }
            let command: Command
            do { command = try Command(cmd) } catch { throw ValidationError("--cmd: \(error)") }
            let expiration = exp == "never" ? nil : Inputs.now + (try Inputs.seconds(exp))
            let delegation = Delegation.issue(
                by: issuer, to: audience, subject: subjectDID, command: command, policy: policy, expiration: expiration)
            print(try DelegationChain.write(chain + [delegation]))
        }
    }

    struct Invoke: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Sign an invocation; prints the container for 'Authorization: Bearer …' (curl, grpc metadata).")

        @Option(help: "The invoker's key file.") var key: String
        @Option(help: "The executor's DID (the service's, from `orrery info`).") var aud: String
        @Option(help: "The command, e.g. /orrery/identity/list-revocations.") var cmd: String
        @Option(help: "Arguments as a JSON object (the request's fields a policy constrains; the idempotency_key).")
        var args: String = "{}"
        @Option(help: "The subject (default: the root of --proof, or the invoker).") var sub: String?
        @Option(help: "Lifetime (at most 5m is accepted by services).") var exp: String = "2m"
        @Option(help: "A file with the invoker's chain (repeatable).") var proof: [String] = []

        func run() throws {
            let invoker = try Inputs.key(key)
            let chain = try Inputs.chain(proof)
            guard case .map(let arguments) = try Inputs.json(args, what: "--args") else {
                throw ValidationError("--args must be a JSON object")
            }
            let audience: DID
            do { audience = try DID(aud) } catch { throw ValidationError("--aud: \(error)") }
            let subject: DID
            do { subject = try sub.map(DID.init) ?? chain.first?.subject ?? invoker.did } catch {
                throw ValidationError("--sub: \(error)")
            }
            let command: Command
            do { command = try Command(cmd) } catch { throw ValidationError("--cmd: \(error)") }
            let now = Inputs.now
            let invocation = Invocation.issue(
                by: invoker, subject: subject, audience: audience, command: command, arguments: arguments,
                proofs: chain.map(\.cid), expiration: now + (try Inputs.seconds(exp)), issuedAt: now)
            print(try UCANContainer.encodeText([invocation.envelope.bytes] + chain.map(\.envelope.bytes)))
        }
    }

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show what a token or container says.")

        @Argument(help: "A file, or the token/container text itself.") var token: String
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            let tokens: [[UInt8]]
            if FileManager.default.fileExists(atPath: token) {
                tokens = try Inputs.tokens(inFile: token)
            } else if let decoded = try? UCANContainer.decode(token) {
                tokens = decoded
            } else if let raw = Base64.decode(token) {
                tokens = [raw]
            } else {
                throw ValidationError("not a token, a container or a file")
            }
            var described: [IPLD] = []
            for bytes in tokens {
                let envelope: UCANEnvelope
                do { envelope = try UCANEnvelope(bytes: bytes) } catch { throw ValidationError("\(error)") }
                let issuer =
                    (try? DID(envelope.payload["iss"]?.stringValue ?? "")).map { envelope.signatureIsValid(issuer: $0) }
                    ?? false
                described.append(
                    .map([
                        "type": .string(envelope.tag), "cid": .string(envelope.cid.string),
                        "signature": .string(issuer ? "valid" : "INVALID"), "payload": .map(envelope.payload),
                    ]))
            }
            if json {
                print(IPLDJSON.render(.list(described)))
                return
            }
            for item in described {
                let payload = item["payload"]?.mapValue ?? [:]
                print(
                    "\(item["type"]?.stringValue ?? "") \(item["cid"]?.stringValue ?? "") (signature \(item["signature"]?.stringValue ?? ""))"
                )
                for key in ["iss", "aud", "sub", "cmd", "pol", "args", "prf", "nbf", "exp", "iat"] {
                    guard let value = payload[key] else { continue }
                    var text = IPLDJSON.render(value).replacingOccurrences(of: "\n", with: " ")
                    while text.contains("  ") { text = text.replacingOccurrences(of: "  ", with: " ") }
                    if (key == "exp" || key == "nbf" || key == "iat"), case .integer(let seconds) = value {
                        text += " (\(Date(timeIntervalSince1970: TimeInterval(seconds)).formatted(.iso8601)))"
                    }
                    print("  \(key.padding(toLength: 4, withPad: " ", startingAt: 0)) \(text)")
                }
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate an invocation and its chain; exit 0 when valid, else the spec's error name on stderr.")

        @Argument(
            help: "A file with the invocation (raw DAG-CBOR or base64; a container's delegations count as proofs).")
        var invocation: String
        @Option(help: "A file with a delegation (repeatable).") var proof: [String] = []
        @Option(help: "Validate at this Unix time instead of now.") var at: Int64?
        @Flag(
            help:
                "Print one JSON object: valid, and issuer, command and subject when valid, or error (the spec's name) and reason; the exit status is the same."
        )
        var json = false

        func run() throws {
            var invocations: [Invocation] = []
            var proofs: [CID: Delegation] = [:]
            do {
                for bytes in try Inputs.tokens(inFile: invocation) + proof.flatMap({ try Inputs.tokens(inFile: $0) }) {
                    let envelope = try UCANEnvelope(bytes: bytes)
                    if envelope.tag == UCANEnvelope.invocationTag {
                        invocations.append(try Invocation(envelope: envelope))
                    } else {
                        let delegation = try Delegation(envelope: envelope)
                        proofs[delegation.cid] = delegation
                    }
                }
                guard invocations.count == 1, let target = invocations.first else {
                    throw UCANError(.malformedToken, "expected one invocation, found \(invocations.count)")
                }
                try ChainValidator().validate(target, proofs: proofs, now: at ?? Inputs.now)
                if json {
                    print(
                        try UCANVerification(
                            valid: true, issuer: "\(target.issuer)", command: "\(target.command)",
                            subject: "\(target.subject)"
                        ).snakeCaseJSON())
                } else {
                    print("valid: \(target.issuer) may invoke \(target.command) on \(target.subject)")
                }
            } catch let error as UCANError {
                if json {
                    print(
                        try UCANVerification(valid: false, error: error.name.rawValue, reason: error.reason)
                            .snakeCaseJSON())
                } else {
                    FileHandle.standardError.write(Data("\(error.name.rawValue)\n\(error.reason)\n".utf8))
                }
                throw ExitCode.failure
            }
        }
    }
}

/// What `orrery ucan verify --json` prints: one stable shape, keys in snake_case.
struct UCANVerification: Encodable {
    let valid: Bool
    var issuer: String?
    var command: String?
    var subject: String?
    /// The UCAN spec's name of the error (`InvalidSignature`, `Expired`, …) when not valid.
    var error: String?
    var reason: String?
}
