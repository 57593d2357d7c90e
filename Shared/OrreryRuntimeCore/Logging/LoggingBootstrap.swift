#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
public import Logging

/// How log lines are written.
public enum LogFormat: String, Sendable, CaseIterable {
    /// JSON lines unless standard output is a terminal.
    case auto
    case json
    case text
}

/// Sets up swift-log once per process: JSON lines when standard output is not a terminal (or when asked),
/// human-readable text otherwise.
public enum LoggingBootstrap {
    /// - Parameters:
    ///   - service: Written into every JSON line.
    ///   - format: `auto` picks JSON unless stdout is a terminal.
    ///   - level: The minimum level logged.
    public static func bootstrap(service: String, format: LogFormat, level: Logger.Level) {
        let useJSON: Bool
        switch format {
        case .json: useJSON = true
        case .text: useJSON = false
        case .auto: useJSON = isatty(STDOUT_FILENO) == 0
        }
        LoggingSystem.bootstrap { label in
            var handler: any LogHandler =
                useJSON ? JSONLogHandler(label: label, service: service) : StreamLogHandler.standardOutput(label: label)
            handler.logLevel = level
            return handler
        }
    }
}
