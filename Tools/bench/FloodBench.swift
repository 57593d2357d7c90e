import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryAuth
import OrreryIdentity
import OrreryProto
import OrreryRuntime
import SwiftProtobuf
import Synchronization

/// `orrery-bench flood`: a live service under attack from outside — valid calls' rate alone and while forged
/// invocations arrive at a fixed rate, and the service's resident memory before and after floods of forged calls and
/// of idle connections.
struct FloodBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flood", abstract: "Valid traffic under a forged-invocation flood; memory after attacks.")

    @Option(help: "The identity service's gRPC address (host:port).") var identity: String
    @Option(help: "The operator's key file (valid calls are the operator's own).") var operatorKey: String
    @Option(help: "The service's process id, for its resident memory.") var pid: Int32
    @Option(help: "Forged calls per second offered.") var forgedRate = 5000
    @Option(help: "Seconds per measurement.") var seconds: Double = 10
    @Option(help: "Idle connections opened in the connection attack.") var idleConnections = 3000
    @Option(help: "Seconds to wait after the valid calls before the attacks' own memory is measured.")
    var settle: Double = 75
    @Option(help: "Where to append the results (Markdown).") var out = "bench-results/abuse.md"

    /// A resident-memory figure of `/proc/PID/status` (`VmRSS:` all of it, `RssAnon:` the heap and stacks only,
    /// without the executable's pages, which the kernel can drop and read again).
    static func residentMiB(_ pid: Int32, field: String = "VmRSS:") -> Double {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix(field) } ?? ""
        let kilobytes = Double(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
        return kilobytes / 1024
    }

    func run() async throws {
        guard let target = ServiceAddress(identity) else { throw ValidationError("\(identity) is not host:port") }
        let key = try KeyFile.read(operatorKey)
        let audience = try await ServiceProbe.withClient(target) { try DID(try await ServiceProbe.info($0).did) }
        let catalog = try MethodCatalog(descriptorSet: Data(base64Encoded: OrreryDescriptorSet.base64) ?? Data())
        let signer = InvocationSigner(key: key, subject: key.did, audience: audience, proofs: [], catalog: catalog)
        guard let list = catalog["orrery.identity.v1.Identity/ListRevocations"] else {
            throw ValidationError("ListRevocations is not in the catalog")
        }
        // Forgeries: the operator's invocations re-signed by other keys (a pool, reused: they never pass the check).
        let now = Int64(Date().timeIntervalSince1970)
        let forgeries: [String] = try (0..<256).map { _ in
            let invocation = Invocation.issue(
                by: key, subject: key.did, audience: audience, command: list.command,
                arguments: ["page_size": .integer(10)], expiration: now + 280, issuedAt: now)
            let forged = UCANEnvelope(
                signing: invocation.envelope.payload, tag: UCANEnvelope.invocationTag, with: SigningKey())
            return "Bearer " + (try UCANContainer.encodeText([forged.bytes]))
        }

        let idleRSS = Self.residentMiB(pid)
        let idleAnonymous = Self.residentMiB(pid, field: "RssAnon:")
        let refused = Tally()
        let throttled = Tally()
        // The valid callers keep one connection, as working clients do: it has authenticated before the flood.
        let (alone, underFlood, forgedPerSecond, throttledPerSecond, newcomer) = try await withGRPCClient(
            transport: try .http2NIOPosix(target: target.target, transportSecurity: .plaintext), interceptors: [signer]
        ) { validClient in
            let valid = Orrery_Identity_V1_Identity.Client(wrapping: validClient)
            let alone = try await validRate(valid, for: seconds)
            let flood = forgedFlood(target, forgeries: forgeries, refused: refused, throttled: throttled)
            try await Task.sleep(for: .seconds(1))
            let refusedBefore = refused.count
            let throttledBefore = throttled.count
            let underFlood = try await validRate(valid, for: seconds)
            let forgedPerSecond = Double(refused.count - refusedBefore) / seconds
            let throttledPerSecond = Double(throttled.count - throttledBefore) / seconds
            // A caller that connects during the flood, from the flood's address.
            let newcomer: String = try await withGRPCClient(
                transport: try .http2NIOPosix(target: target.target, transportSecurity: .plaintext),
                interceptors: [signer]
            ) { fresh in
                do {
                    _ = try await Orrery_Identity_V1_Identity.Client(wrapping: fresh).listRevocations(
                        .with { $0.pageSize = 10 })
                    return "served"
                } catch let error as RPCError {
                    return "\(error.code)"
                }
            }
            flood.cancel()
            _ = try? await flood.value
            return (alone, underFlood, forgedPerSecond, throttledPerSecond, newcomer)
        }
        try await Task.sleep(for: .seconds(5))
        let afterMixed = Self.residentMiB(pid)
        let afterMixedAnonymous = Self.residentMiB(pid, field: "RssAnon:")

        // The attacks' own memory, measured from the service's idle figure after it served: the database pool's
        // timers of the valid calls above (one per call, kept by the Swift runtime until its deadline, 60 s at most)
        // have fired by then.
        try await Task.sleep(for: .seconds(settle))
        let servedIdle = Self.residentMiB(pid)
        let servedIdleAnonymous = Self.residentMiB(pid, field: "RssAnon:")
        let forgedOnly = forgedFlood(target, forgeries: forgeries, refused: refused, throttled: throttled)
        try await Task.sleep(for: .seconds(seconds))
        let duringForged = Self.residentMiB(pid)
        forgedOnly.cancel()
        _ = try? await forgedOnly.value
        try await Task.sleep(for: .seconds(10))
        let afterForged = Self.residentMiB(pid)
        let afterForgedAnonymous = Self.residentMiB(pid, field: "RssAnon:")

        // Idle connections: opened, held, closed; memory read at the peak and once they are gone.
        var sockets: [Int32] = []
        for _ in 0..<idleConnections {
            let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(target.port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            if connected == 0 { sockets.append(descriptor) } else { close(descriptor) }
        }
        try await Task.sleep(for: .seconds(3))
        let peakIdle = Self.residentMiB(pid)
        for descriptor in sockets { close(descriptor) }
        try await Task.sleep(for: .seconds(10))
        let afterIdle = Self.residentMiB(pid)
        let afterIdleAnonymous = Self.residentMiB(pid, field: "RssAnon:")

        func f(_ value: Double) -> String { String(format: "%.1f", value) }
        func versus(_ value: Double) -> String {
            let change = 100 * (value - servedIdle) / servedIdle
            return "\(change >= 0 ? "+" : "")\(f(change)) % (goal: within 10 %)"
        }
        let lines = [
            "", "## A live identity service under attack", "",
            "Measured \(ISO8601DateFormatter().string(from: Date())): a release identity service (default settings: \(Int(FailedAuthenticationThrottle.Limits.standard.rate * 60)) failed signature checks per minute per source, bursts of \(FailedAuthenticationThrottle.Limits.standard.burst)) and this load generator on the same \(ProcessInfo.processInfo.activeProcessorCount) cores, over loopback gRPC; valid calls are signed `ListRevocations` by 8 sequential callers on one connection that authenticated before the flood, forged ones (a valid invocation re-signed by another key) paced by 50 callers on another connection from the same address.",
            "",
            "| measurement | result |", "|---|---|",
            "| valid calls alone | \(f(alone))/s |",
            "| valid calls while \(forgedRate) forged calls/s are offered (\(f(forgedPerSecond))/s verified and refused UNAUTHENTICATED, \(f(throttledPerSecond))/s refused RESOURCE_EXHAUSTED unverified) | \(f(underFlood))/s (\(f(100 * underFlood / max(alone, 1))) % of alone; goal ≥ 50 %) |",
            "| a valid call on a new connection from the flood's address, during the flood | \(newcomer) |",
            "",
            "Resident memory (RSS; in brackets the anonymous part: heap and stacks, without the executable's pages):",
            "",
            "| moment | RSS | vs idle after serving |", "|---|---|---|",
            "| idle, just started | \(f(idleRSS)) MiB (\(f(idleAnonymous))) | |",
            "| 5 s after the valid calls and the flood above | \(f(afterMixed)) MiB (\(f(afterMixedAnonymous))) | |",
            "| idle after serving (\(Int(settle)) s later) | \(f(servedIdle)) MiB (\(f(servedIdleAnonymous))) | |",
            "| during \(Int(seconds)) s of \(forgedRate) forged calls/s alone | \(f(duringForged)) MiB | |",
            "| 10 s after that flood | \(f(afterForged)) MiB (\(f(afterForgedAnonymous))) | \(versus(afterForged)) |",
            "| \(sockets.count) idle connections held | \(f(peakIdle)) MiB | |",
            "| 10 s after they closed | \(f(afterIdle)) MiB (\(f(afterIdleAnonymous))) | \(versus(afterIdle)) |",
        ]
        for line in lines { print(line) }
        let existing = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        try (existing + lines.joined(separator: "\n") + "\n").write(toFile: out, atomically: true, encoding: .utf8)
    }

    /// Forged calls at `forgedRate` from 50 paced callers on one connection of their own, until cancelled.
    func forgedFlood(
        _ target: ServiceAddress, forgeries: [String], refused: Tally, throttled: Tally
    ) -> Task<Void, any Error> {
        let rate = forgedRate
        return Task {
            try await withGRPCClient(
                transport: try .http2NIOPosix(target: target.target, transportSecurity: .plaintext)
            ) { client in
                let revocations = Orrery_Identity_V1_Identity.Client(wrapping: client)
                let workers = 50
                let interval = Duration.seconds(Double(workers) / Double(rate))
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for worker in 0..<workers {
                        group.addTask {
                            var next = ContinuousClock.now
                            var index = worker
                            while !Task.isCancelled {
                                var metadata = Metadata()
                                metadata.addString(forgeries[index % forgeries.count], forKey: "authorization")
                                index += workers
                                do {
                                    _ = try await revocations.listRevocations(
                                        .with { $0.pageSize = 10 }, metadata: metadata)
                                } catch let error as RPCError where error.code == .resourceExhausted {
                                    throttled.add()
                                } catch {
                                    refused.add()
                                }
                                next += interval
                                try await Task.sleep(until: next, clock: .continuous)
                            }
                        }
                    }
                    try await group.waitForAll()
                }
            }
        }
    }

    /// Valid calls per second for `seconds`, from 8 sequential callers sharing `identity`'s connection.
    func validRate(
        _ identity: Orrery_Identity_V1_Identity.Client<HTTP2ClientTransport.Posix>, for seconds: Double
    ) async throws -> Double {
        let done = Tally()
        let deadline = ContinuousClock.now + .seconds(seconds)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    while ContinuousClock.now < deadline {
                        _ = try await identity.listRevocations(.with { $0.pageSize = 10 })
                        done.add()
                    }
                }
            }
            try await group.waitForAll()
        }
        return Double(done.count) / seconds
    }
}

/// A count shared by concurrent tasks.
final class Tally: Sendable {
    private let value = Atomic<Int>(0)
    func add() { value.add(1, ordering: .relaxed) }
    var count: Int { value.load(ordering: .relaxed) }
}
