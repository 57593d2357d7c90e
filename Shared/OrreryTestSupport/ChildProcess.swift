public import Foundation
public import OrreryRuntime

/// A real child process for a test: an Orrery executable or a Python checker, its output kept in files.
public final class ChildProcess: @unchecked Sendable {
    // @unchecked: `Process` is not Sendable; every use goes through its own thread-safe API.
    public let process: Process
    public let name: String
    public let outputFile: URL

    /// Starts `executable` with `arguments`; `environment` is added to this process's own. In `networkNamespace`
    /// when given: a named one (`ip netns exec`) or a namespace file such as /proc/PID/ns/net (`nsenter`); both exec
    /// the program, so the process is the program's own.
    public init(
        _ executable: URL,
        arguments: [String],
        environment: [String: String] = [:],
        outputDirectory: URL,
        networkNamespace: String? = nil
    ) throws {
        name = executable.lastPathComponent
        outputFile = outputDirectory.appendingPathComponent("\(name)-\(UUID().uuidString.prefix(6)).log")
        _ = FileManager.default.createFile(atPath: outputFile.path, contents: nil)
        let output = try FileHandle(forWritingTo: outputFile)
        process = Process()
        if let networkNamespace, networkNamespace.hasPrefix("/") {
            // A namespace file (/proc/PID/ns/net): entered with nsenter, which execs the program too.
            process.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
            process.arguments = ["--net=\(networkNamespace)", "--", executable.path] + arguments
        } else if let networkNamespace {
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            process.arguments = ["netns", "exec", networkNamespace, executable.path] + arguments
        } else {
            process.executableURL = executable
            process.arguments = arguments
        }
        var merged = ProcessInfo.processInfo.environment
        for key in merged.keys
        where key.hasPrefix("ORRERY_") && !key.hasPrefix("ORRERY_TEST") && key != "ORRERY_BIN_DIR" {
            merged.removeValue(forKey: key)
        }
        merged.merge(environment) { _, new in new }
        process.environment = merged
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    public var pid: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }

    /// Everything the process printed so far.
    public var output: String {
        (try? String(contentsOf: outputFile, encoding: .utf8)) ?? ""
    }

    /// Waits for the first line of output that `accept` turns into a value, and returns it. Throws if the process
    /// exits first or nothing acceptable is printed within `timeout` (generous: a Python checker's first import on
    /// a fresh virtual environment compiles its modules, which takes many seconds on a loaded 2-core machine).
    public func firstLine<Value>(
        timeout: Duration = .seconds(120), _ accept: (Substring) throws -> Value?
    ) async throws -> Value {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            for line in output.split(separator: "\n") {
                if let value = try accept(line) { return value }
            }
            if !process.isRunning {
                // One more read: the line may have been written just before the exit.
                for line in output.split(separator: "\n") {
                    if let value = try accept(line) { return value }
                }
                throw ChildProcessError.exitedEarly(name: name, status: process.terminationStatus, output: output)
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ChildProcessError.timedOut(name: name, output: output)
    }

    /// Waits for the port number the process prints on a line of its own (see `firstLine`).
    public func printedPort(timeout: Duration = .seconds(120)) async throws -> Int {
        try await firstLine(timeout: timeout) { Int($0.trimmingCharacters(in: .whitespaces)) }
    }

    /// Sends `signal` (SIGTERM by default).
    public func signal(_ signal: Int32 = SIGTERM) {
        kill(process.processIdentifier, signal)
    }

    /// Waits until the process exits and returns its exit status (the signal's number when a signal ended it), or nil
    /// after `timeout`. The kernel is asked too: Foundation's `Process` learns of an exit through a descriptor that
    /// other children may hold open, so `isRunning` can stay true long after the child ended.
    public func waitForExit(timeout: Duration = .seconds(20)) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if let status = ended { return status }
            if ContinuousClock.now > deadline { return nil }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return process.terminationStatus
    }

    /// The child's exit status when it has ended but is not reaped yet (left for Foundation to reap); nil otherwise.
    private var ended: Int32? {
        var info = siginfo_t()
        guard waitid(P_PID, id_t(process.processIdentifier), &info, WEXITED | WNOHANG | WNOWAIT) == 0,
            info._sifields._sigchld.si_pid == process.processIdentifier
        else { return nil }
        return info._sifields._sigchld.si_status
    }

    /// Kills the process if it still runs (for cleanup).
    public func stop() async {
        guard process.isRunning else { return }
        signal(SIGTERM)
        if await waitForExit(timeout: .seconds(10)) == nil {
            signal(SIGKILL)
            _ = await waitForExit(timeout: .seconds(5))
        }
    }

    /// Runs to completion and returns (exit status, output); a generous default timeout, as a loaded CI machine
    /// running every suite at once can take tens of seconds to start a Python checker. In `networkNamespace` when
    /// given.
    public static func run(
        _ executable: URL,
        arguments: [String],
        environment: [String: String] = [:],
        timeout: Duration = .seconds(180),
        networkNamespace: String? = nil
    ) async throws -> (status: Int32, output: String) {
        let directory = try TestEnvironment.temporaryDirectory("orrery-run")
        defer { try? FileManager.default.removeItem(at: directory) }
        let child = try ChildProcess(
            executable, arguments: arguments, environment: environment, outputDirectory: directory,
            networkNamespace: networkNamespace)
        guard let status = await child.waitForExit(timeout: timeout) else {
            await child.stop()
            throw ChildProcessError.timedOut(name: child.name, output: child.output)
        }
        return (status, child.output)
    }
}

/// A child process that did not do what the test waited for.
public enum ChildProcessError: Error, CustomStringConvertible {
    case timedOut(name: String, output: String)
    case exitedEarly(name: String, status: Int32, output: String)

    public var description: String {
        switch self {
        case .timedOut(let name, let output): return "\(name) timed out; its output:\n\(output)"
        case .exitedEarly(let name, let status, let output):
            return "\(name) exited with \(status); its output:\n\(output)"
        }
    }
}

/// A running Orrery service started by a test, with what its ready file says.
public struct RunningService: Sendable {
    public let child: ChildProcess
    public let ready: ReadyFile

    public var grpcAddress: ServiceAddress { ServiceAddress(host: "127.0.0.1", port: ready.grpcPort) }

    /// Starts the executable `name` — on port 0 for gRPC and HTTP unless `portZero` is false (then the arguments
    /// name the ports), in `networkNamespace` when given — and waits for its ready file.
    public static func start(
        _ name: String,
        extraArguments: [String] = [],
        environment: [String: String] = [:],
        directory: URL,
        configFile: String? = nil,
        portZero: Bool = true,
        timeout: Duration = .seconds(60),
        networkNamespace: String? = nil
    ) async throws -> RunningService {
        let readyPath = directory.appendingPathComponent("\(name)-\(UUID().uuidString.prefix(6)).ready.json").path
        // An empty config file of its own, so no /etc/orrery file of the machine leaks into a test.
        let configPath = configFile ?? directory.appendingPathComponent("\(name).json").path
        if !FileManager.default.fileExists(atPath: configPath) {
            _ = FileManager.default.createFile(atPath: configPath, contents: Data("{}".utf8))
        }
        let child = try ChildProcess(
            TestEnvironment.executable(name),
            arguments: (portZero ? ["--grpc-port", "0"] : []) + [
                "--http-port", "0", "--ready-file", readyPath, "--log-format", "json", "--config", configPath,
            ] + extraArguments,
            environment: environment,
            outputDirectory: directory,
            networkNamespace: networkNamespace
        )
        let deadline = ContinuousClock.now + timeout
        while true {
            if let ready = try? ReadyFile.read(from: readyPath) {
                return RunningService(child: child, ready: ready)
            }
            if !child.isRunning {
                throw ChildProcessError.exitedEarly(
                    name: name, status: child.process.terminationStatus, output: child.output)
            }
            if ContinuousClock.now > deadline {
                await child.stop()
                throw ChildProcessError.timedOut(name: name, output: child.output)
            }
            try await Task.sleep(for: .milliseconds(25))
        }
    }
}
