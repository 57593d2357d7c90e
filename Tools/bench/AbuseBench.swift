import ArgumentParser
import Foundation
import GRPCCore
import Logging
import OrreryAuth
import OrreryIdentity
import OrreryProto
import SwiftProtobuf

/// `orrery-bench abuse`: what a refusal costs the server before anyone is authenticated — CPU time per call of the
/// capability check (the same code every gRPC call and the JSON gateway go through) for each kind of bad token, next to
/// one Ed25519 verification.
struct AbuseBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "abuse",
        abstract: "CPU per refusal of malformed, oversized, misaddressed, expired and forged tokens.")

    @Option(help: "Where to write the results (Markdown).") var out = "bench-results/abuse.md"
    @Option(help: "Calls per measurement.") var calls = 20_000

    /// CPU time of this thread, in seconds.
    static func threadCPU() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    func run() async throws {
        let catalog = try MethodCatalog(descriptorSet: Data(base64Encoded: OrreryDescriptorSet.base64) ?? Data())
        let method = "orrery.registry.v1.Registry/QueryDevices"
        guard let entry = catalog[method] else { throw ValidationError("\(method) is not in the catalog") }
        let operatorKey = SigningKey()
        let serviceKey = SigningKey()
        let caller = SigningKey()
        let validator = ChainValidator()
        let interceptor = CapabilityInterceptor(
            serviceDID: serviceKey.did, trustedRoots: [operatorKey.did], catalog: catalog, validator: validator,
            revocations: RevocationBook(validator: validator), replayGuard: InMemoryReplayGuard(),
            logger: Logger(label: "bench"))
        let grant = Delegation.issue(
            by: operatorKey, to: caller.did, subject: operatorKey.did, command: try Command("/orrery"),
            expiration: 4_000_000_000)
        let now = Int64(Date().timeIntervalSince1970)
        func token(audience: DID, expiration: Int64, forged: Bool = false) throws -> String {
            let invocation = Invocation.issue(
                by: caller, subject: operatorKey.did, audience: audience, command: entry.command, proofs: [grant.cid],
                expiration: expiration, issuedAt: now)
            let bytes = forged ? Self.forgery(of: invocation) : invocation.envelope.bytes
            return "Bearer " + (try UCANContainer.encodeText([bytes, grant.envelope.bytes]))
        }
        let valid = try token(audience: serviceKey.did, expiration: now + 290)
        let forged = try token(audience: serviceKey.did, expiration: now + 290, forged: true)
        let longDID = "did:key:z" + String(repeating: "6", count: 11_000)
        let oversizedDID =
            "Bearer "
            + (try UCANContainer.encodeText([
                UCANEnvelope(
                    signing: [
                        "iss": .string(longDID), "aud": .string(serviceKey.did.string),
                        "sub": .string(operatorKey.did.string), "cmd": .string(entry.command.string),
                        "args": .map([:]), "prf": .list([]), "nonce": .bytes([1]), "exp": .integer(now + 60),
                    ], tag: UCANEnvelope.invocationTag, with: caller
                ).bytes
            ]))
        let cases: [(String, String?)] = [
            ("no authorization header", nil),
            ("not a Bearer header", "Basic dXNlcjpwYXNz"),
            ("malformed container", "Bearer C!!not-a-container"),
            ("header past 16 KiB", "Bearer " + String(repeating: "C", count: 20_000)),
            ("a DID of 11,000 characters in iss", oversizedDID),
            ("addressed to another service", try token(audience: SigningKey().did, expiration: now + 290)),
            ("expired", try token(audience: serviceKey.did, expiration: now - 600)),
            ("forged (signed by another key)", forged),
            ("valid (chain memoized)", valid),
        ]
        let request = Orrery_Registry_V1_QueryDevicesRequest()
        // Warm up: the valid chain is memoized, as a live service's would be.
        _ = try await interceptor.authorize(authorizationHeader: valid, method: method, request: request)

        let raw: Double = {
            let message = [UInt8](repeating: 7, count: 200)
            let signature = caller.sign(message)
            let started = Self.threadCPU()
            for _ in 0..<calls { _ = caller.publicKey.verify(signature: signature, message: message) }
            return (Self.threadCPU() - started) / Double(calls)
        }()
        var lines = [
            "# Abuse: what a refusal costs before authentication", "",
            "Measured \(ISO8601DateFormatter().string(from: Date())) on \(ProcessInfo.processInfo.activeProcessorCount) cores, release build: CPU time of one thread per call of the capability check (`CapabilityInterceptor.authorize`, the code every gRPC call and the JSON gateway run), \(calls) calls each.",
            "",
            "| token | CPU per call | code | vs one Ed25519 verification |",
            "|---|---|---|---|",
        ]
        for (name, header) in cases {
            var code = "OK"
            let started = Self.threadCPU()
            for _ in 0..<calls {
                do {
                    _ = try await interceptor.authorize(authorizationHeader: header, method: method, request: request)
                } catch let error as RPCError {
                    code = "\(error.code)"
                }
            }
            let perCall = (Self.threadCPU() - started) / Double(calls)
            let line =
                "| \(name) | \(String(format: "%.1f", perCall * 1e6)) µs | \(code) | \(String(format: "%.2f", perCall / raw)) |"
            print(line)
            lines.append(line)
        }
        lines += [
            "| (one Ed25519 verification) | \(String(format: "%.1f", raw * 1e6)) µs | | 1.00 |", "",
            "Goals (issue 15): a cheap refusal (malformed, oversized, wrong audience, expired) costs at most 20 µs of CPU before any signature check; a forgery at most one signature verification (plus decoding).",
        ]
        try FileManager.default.createDirectory(
            atPath: (out as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try (lines.joined(separator: "\n") + "\n").write(toFile: out, atomically: true, encoding: .utf8)
        print("wrote \(out)")
    }

    /// The invocation's payload, still claiming its issuer, signed by another key: a forgery.
    static func forgery(of invocation: Invocation) -> [UInt8] {
        UCANEnvelope(signing: invocation.envelope.payload, tag: UCANEnvelope.invocationTag, with: SigningKey()).bytes
    }
}
