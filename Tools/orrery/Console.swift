import Foundation
import OrreryProto
import SwiftProtobuf

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The CLI's output for commands that stream or take long: data to standard output, progress to standard error,
/// each line written at once (nothing waits in a buffer when the command is interrupted, output redirected or not).
/// A closed standard output — the reader went away, as `orrery logs -f | head` does — ends the command quietly with
/// status 0: that is a normal end for a command-line tool, not an error.
enum Console {
    /// A line of data on standard output.
    static func out(_ line: String) { write(Array((line + "\n").utf8), to: STDOUT_FILENO) }

    /// A line of progress on standard error.
    static func progress(_ line: String) { write(Array((line + "\n").utf8), to: STDERR_FILENO) }

    /// Raw bytes on standard output, or standard error.
    static func write(_ data: Data, errorStream: Bool = false) {
        write(Array(data), to: errorStream ? STDERR_FILENO : STDOUT_FILENO)
    }

    /// A write to a closed pipe answers EPIPE instead of killing the process.
    private static let brokenPipeIgnored: Void = { _ = signal(SIGPIPE, SIG_IGN) }()

    private static func write(_ bytes: [UInt8], to descriptor: Int32) {
        _ = brokenPipeIgnored
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { buffer in
                #if canImport(Glibc)
                    Glibc.write(descriptor, buffer.baseAddress, buffer.count)
                #else
                    Darwin.write(descriptor, buffer.baseAddress, buffer.count)
                #endif
            }
            if written > 0 {
                offset += written
                continue
            }
            if written < 0, errno == EINTR || errno == EAGAIN { continue }
            // The reader closed the pipe (EPIPE: SIGPIPE is ignored in this process) or the output is gone: nothing
            // more can be shown. Standard error failing is no reason to stop the work.
            if descriptor == STDOUT_FILENO { exit(0) }
            return
        }
    }
}

/// A server's timestamp as `format` writes it (RFC 3339 by default), or "(invalid time)" when it is outside
/// protobuf's range: reading such a value as a date would trap, and a misbehaving server must not crash the CLI.
func timeText(
    _ timestamp: Google_Protobuf_Timestamp, _ format: (Date) -> String = { Date.ISO8601FormatStyle().format($0) }
) -> String {
    guard let date = timestamp.validDate else { return "(invalid time)" }
    return format(date)
}

extension Encodable {
    /// One line of JSON with snake_case keys, sorted: the shape of the CLI's own `--json` verdicts.
    func snakeCaseJSON() throws -> String {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }
}
