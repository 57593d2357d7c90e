public import Foundation
public import OrreryRuntime
internal import ArgumentParser
internal import Logging
internal import Synchronization

/// A service built and run inside the test process, as Hummingbird's `app.test(.live)` runs an application: its
/// settings from the same command line and environment an executable reads, on port 0, stopped when the body ends.
/// For paths that need no process of their own (no kill -9, no restart, no sandbox).
public enum InProcessService {
    /// Builds `service` from `arguments` and `environment` (as its executable would, on ports 0, with its ready file
    /// in `directory`), runs `body` once it serves, then stops it: by cancelling every part at once, or, when
    /// `gracefully`, as SIGTERM stops a process (waiting until it stopped).
    public static func run<Result: Sendable>(
        _ service: OrreryService,
        arguments: [String] = [],
        environment: [String: String],
        directory: URL,
        gracefully: Bool = false,
        _ body: (ReadyFile) async throws -> Result
    ) async throws -> Result {
        let readyPath = directory.appendingPathComponent(
            "\(service.description.name)-\(UUID().uuidString.prefix(6)).ready.json"
        )
        .path
        // An empty configuration file of its own: nothing from the machine's /etc/orrery.
        let configPath = directory.appendingPathComponent("\(service.description.name)-in-process.json").path
        try Data("{}".utf8).write(to: URL(fileURLWithPath: configPath))
        // Its migrations wait for the database up to 5 minutes (an executable's default is 30 s): in the test process
        // the service shares the cooperative threads with every suite running at once, and a loaded 2-core machine
        // was seen to take longer than 30 s for them.
        let options = try RuntimeOptions.parse(
            [
                "--grpc-port", "0", "--http-port", "0", "--ready-file", readyPath, "--config", configPath,
                "--db-timeout", "300",
            ]
                + arguments)
        let settings = try await RuntimeSettings.load(
            for: service.description, options: options, environment: environment)
        var logger = Logger(label: "test.in-process.\(service.description.name)")
        logger.logLevel = .warning
        let ended = EndFlag()
        let stop = GracefulStop()
        let serving = Task {
            defer { ended.set() }
            try await ServiceRunner.runInProcess(service, settings: settings, logger: logger, stop: stop)
        }
        defer { serving.cancel() }
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline, !ended.isSet {
            if let ready = try? ReadyFile.read(from: readyPath) {
                let result = try await body(ready)
                if gracefully {
                    stop.request()
                    try await serving.value
                } else {
                    serving.cancel()
                    _ = await serving.result
                }
                return result
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        serving.cancel()
        if case .failure(let error) = await serving.result { throw error }
        throw InProcessServiceError(message: "\(service.description.name) ended or did not serve within 120 s")
    }
}

/// A service run in the test process that did not come up.
public struct InProcessServiceError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// Set once a task ended.
private final class EndFlag: Sendable {
    private let value = Mutex(false)
    var isSet: Bool { value.withLock { $0 } }
    func set() { value.withLock { $0 = true } }
}
