#if canImport(FoundationEssentials)
    public import FoundationEssentials
#else
    public import Foundation
#endif
internal import OrreryBasics
internal import OrreryProto

/// How an allocation ended: its status, why, what it used, and its declared outputs.
public struct AllocationOutcome: Sendable, Codable, Equatable {
    public struct Output: Sendable, Codable, Equatable {
        public var path: String
        public var sha256: String
        public var size: Int
        /// Where it was uploaded (s3://BUCKET/KEY), or `store` (the orchestrator's content store, in chunks); nil: it
        /// travels to the orchestrator in one message.
        public var location: String?

        /// The location of an output bound for the orchestrator's content store.
        public static let store = "store"
    }

    public var exitCode: Int32
    public var reason: String
    public var usage: MeteredUsage
    public var wallSeconds: Double
    public var outputs: [Output]
    /// Declared outputs that could not be returned, with why.
    public var missingOutputs: [String]
}

/// Follows a started allocation: its logs as they grow, the max duration, its end.
public struct AllocationMonitor: Sendable {
    public let runner: AllocationRunner
    public var pollInterval: Duration = .milliseconds(100)
    /// Opens a box sealed to this device (an output's presigned URL); nil: outputs to S3 cannot be uploaded.
    public var openSealed: (@Sendable (Data) throws -> String)?

    public init(runner: AllocationRunner) {
        self.runner = runner
    }

    /// Why an allocation ended when one file it wrote reached its disk size.
    static func fileTooLarge(_ diskMiB: UInt64) -> String {
        "killed: a file it wrote (its output, or in /work) grew past its disk of \(diskMiB) MiB"
    }

    /// Streams new log bytes to `onLog` ("stdout" / "stderr", resuming after `offsets`) until the allocation
    /// ends; stops it when it outlives `maxDuration`.
    public func follow(
        _ id: String, startedAt: Date, maxDuration: Duration?, offsets: [String: UInt64] = [:],
        onLog: @Sendable (_ stream: String, _ offset: UInt64, _ data: Data) async throws -> Void
    ) async throws -> AllocationOutcome {
        var offsets = offsets
        func drain() async throws {
            for stream in ["stdout", "stderr"] {
                while true {
                    let offset = offsets[stream] ?? 0
                    let chunk = runner.log(id, stream: stream, from: offset)
                    if chunk.isEmpty { break }
                    offsets[stream] = offset + UInt64(chunk.count)
                    try await onLog(stream, offset, chunk)
                }
            }
        }
        var status = runner.status(id)
        let disk = (try? runner.spec(id))?.resources.diskMib ?? 0
        var polls = 0
        while status == .running {
            try await drain()
            // Every file is bounded by the disk size as it is written (RLIMIT_FSIZE); all of them together are
            // measured every couple of seconds.
            polls += 1
            if disk > 0, polls % 20 == 0, runner.stopReason(id) == nil {
                let usage = runner.diskUsage(id, limit: disk << 20)
                // A file at the bound by itself is what stopped it (its writer met RLIMIT_FSIZE, and is being killed
                // by SIGXFSZ unless it ignores that): said so whether this pass or that signal comes first.
                if usage.bytes > disk << 20 {
                    runner.stop(
                        id,
                        reason: usage.fileAtLimit
                            ? Self.fileTooLarge(disk)
                            : "stopped: its files (in /work and its output) took more than its disk of \(disk) MiB")
                }
            }
            if let maxDuration, runner.stopReason(id) == nil,
                Date().timeIntervalSince(startedAt) > Double(maxDuration.components.seconds)
            {
                runner.stop(
                    id, reason: "stopped: the maximum duration of \(maxDuration.components.seconds) s was reached")
            }
            try await Task.sleep(for: pollInterval)
            status = runner.status(id)
        }
        try await drain()
        let usage = runner.usage(id)
        let spec = try runner.spec(id)
        let code: Int32
        var reason: String
        switch status {
        case .exited(let value):
            code = value
            if let stopped = runner.stopReason(id) {
                reason = stopped
            } else if value == 0 {
                reason = "exited 0"
            } else if value == 128 + SIGXFSZ, spec.resources.diskMib > 0 {
                reason = Self.fileTooLarge(spec.resources.diskMib)
            } else if value > 128, usage.oomKilled {
                reason = "killed: the memory limit of \(spec.resources.ramMib) MiB was exceeded"
            } else if value > 128 {
                reason = "killed by signal \(value - 128)"
            } else if value == 125 {
                reason = "the sandbox could not join its cgroup"
            } else {
                reason = "exited with status \(value)"
            }
        default:
            code = 137
            reason = runner.stopReason(id) ?? "the allocation's process vanished (did the host restart?)"
        }
        if usage.pidsLimitHit { reason += "; the process limit (\(runner.pidsLimit)) refused some forks" }
        // Its time ends here: uploading its outputs afterwards is not billed as its run.
        let wallSeconds = Date().timeIntervalSince(startedAt)
        var outputs: [AllocationOutcome.Output] = []
        var missing: [String] = []
        let destinations = spec.outputsTo.isEmpty ? nil : runner.outputDestinations(id)
        for path in spec.outputs {
            do {
                if let destinations {
                    if let output = try await upload(id, path: path, to: destinations[path]) {
                        outputs.append(output)
                    } else {
                        missing.append("\(path): not written")
                    }
                } else if let output = try storedOrInline(id, path: path) {
                    outputs.append(output)
                } else {
                    missing.append("\(path): not written")
                }
            } catch {
                missing.append("\(path): \(error)")
            }
        }
        await runner.release(id)
        return AllocationOutcome(
            exitCode: code, reason: reason, usage: usage, wallSeconds: wallSeconds,
            outputs: outputs, missingOutputs: missing)
    }

    /// A declared output returned to the orchestrator: its bytes when they fit in a message (3 MiB), otherwise its
    /// sha256 and size for the content store (sent in chunks once reported); nil when it was not written.
    private func storedOrInline(_ id: String, path: String) throws -> AllocationOutcome.Output? {
        guard let file = try runner.outputFile(id, path: path), let status = FileStatus(path: file) else { return nil }
        if status.size <= UInt64(AllocationRunner.outputLimit) {
            return try runner.output(id, path: path).map { .init(path: path, sha256: $0.sha256, size: $0.data.count) }
        }
        let (sha256, size) = try StoreUpload.digest(of: file)
        return .init(path: path, sha256: sha256, size: Int(size), location: AllocationOutcome.Output.store)
    }

    /// Uploads a declared output to where its consumer's presigned URL points; nil when it was not written.
    private func upload(
        _ id: String, path: String, to destination: AllocationRunner.OutputDestination?
    ) async throws -> AllocationOutcome.Output? {
        guard let file = try runner.outputFile(id, path: path) else { return nil }
        guard let destination, let openSealed, let uploader = runner.uploader else {
            throw RunnerError(message: "no upload URL came for it")
        }
        guard let url = URL(string: try openSealed(destination.sealedURL)) else {
            throw RunnerError(message: "its upload URL is not a URL")
        }
        let uploaded = try await uploader.upload(file, to: url)
        return .init(
            path: path, sha256: uploaded.sha256, size: Int(uploaded.size), location: destination.location)
    }
}
