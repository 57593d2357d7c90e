#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
public import Logging

/// A swift-log handler writing one JSON object per line to standard output:
/// `{"ts":…,"level":…,"service":…,"label":…,"msg":…, metadata…}`.
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    private let label: String
    private let service: String

    public init(label: String, service: String) {
        self.label = label
        self.service = service
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields: [String: Logger.Metadata.Value] = [
            "ts": .string(Self.timestamp()),
            "level": .string(event.level.rawValue),
            "service": .string(service),
            "label": .string(label),
            "msg": .string("\(event.message)"),
        ]
        let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        for (key, value) in merged where fields[key] == nil {
            fields[key] = value
        }
        if event.level >= .error {
            fields["source"] = .string("\(event.file):\(event.line)")
        }
        var line = ""
        Self.append(.dictionary(fields), to: &line)
        line += "\n"
        // One write(2) per line, so that lines of concurrent tasks never interleave.
        var bytes = Array(line.utf8)[...]
        while !bytes.isEmpty {
            let written = systemWrite(STDOUT_FILENO, Array(bytes))
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { return }
            bytes = bytes.dropFirst(written)
        }
    }

    /// Appends `value` as JSON: strings, arrays, and objects with their keys sorted.
    static func append(_ value: Logger.Metadata.Value, to output: inout String) {
        switch value {
        case .string(let text): appendQuoted(text, to: &output)
        case .stringConvertible(let convertible): appendQuoted(convertible.description, to: &output)
        case .array(let items):
            output += "["
            for (index, item) in items.enumerated() {
                if index > 0 { output += "," }
                append(item, to: &output)
            }
            output += "]"
        case .dictionary(let dictionary):
            output += "{"
            for (index, key) in dictionary.keys.sorted().enumerated() {
                if index > 0 { output += "," }
                appendQuoted(key, to: &output)
                output += ":"
                append(dictionary[key] ?? .string(""), to: &output)
            }
            output += "}"
        }
    }

    /// A JSON string literal (RFC 8259): quote, backslash and control characters escaped.
    static func appendQuoted(_ text: String, to output: inout String) {
        output += "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": output += "\\\""
            case "\\": output += "\\\\"
            case "\n": output += "\\n"
            case "\r": output += "\\r"
            case "\t": output += "\\t"
            default:
                if scalar.value < 0x20 {
                    output += cFormat("\\u%04x", scalar.value)
                } else {
                    output.unicodeScalars.append(scalar)
                }
            }
        }
        output += "\""
    }

    /// RFC 3339 UTC with milliseconds, computed here (days to civil date, proleptic Gregorian): Foundation's date
    /// formatting would load ICU's data, too much for an agent on a small edge host.
    static func timestamp(unixMilliseconds: Int64 = Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)))
        -> String
    {
        let milliseconds = unixMilliseconds % 1000
        let seconds = unixMilliseconds / 1000
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondOfDay = seconds - days * 86_400
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        func pad(_ value: Int64, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        let date = "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))"
        let time = "\(pad(secondOfDay / 3600, 2)):\(pad(secondOfDay % 3600 / 60, 2)):\(pad(secondOfDay % 60, 2))"
        return "\(date)T\(time).\(pad(milliseconds, 3))Z"
    }
}
