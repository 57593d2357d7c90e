public import Configuration
#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif

/// A JSON configuration file as flat settings: `{"grpc": {"port": 7402}}` is the key `grpc.port`. Read with
/// Foundation's essentials (swift-configuration's own JSON provider needs all of Foundation, ICU included).
/// Scalars and arrays of scalars become settings; keys a process does not read are ignored, so one file can hold
/// other things too (the device agent's owner policy).
public enum JSONConfigFile {
    /// The file's settings, or nil when `allowMissing` and there is no file at `path`.
    /// - Throws: `ConfigurationError` for `config` when the file cannot be read or is not a JSON object.
    public static func values(path: String, allowMissing: Bool, secrets: Set<String> = [])
        throws -> [AbsoluteConfigKey: ConfigValue]?
    {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            if allowMissing && !FileManager.default.fileExists(atPath: path) { return nil }
            throw ConfigurationError(key: "config", reason: "cannot read \(path): \(oneLine(error))")
        }
        let root: JSONValue
        do {
            root = try JSONDecoder().decode(JSONValue.self, from: data)
        } catch {
            throw ConfigurationError(key: "config", reason: "cannot read \(path): not valid JSON (\(oneLine(error)))")
        }
        guard case .object(let members) = root else {
            throw ConfigurationError(key: "config", reason: "cannot read \(path): not a JSON object")
        }
        var values: [AbsoluteConfigKey: ConfigValue] = [:]
        flatten(members, under: [], into: &values, secrets: secrets)
        return values
    }

    private static func oneLine(_ error: any Error) -> String {
        "\(error)".replacing("\n", with: " ")
    }

    private static func flatten(
        _ members: [String: JSONValue], under prefix: [String], into values: inout [AbsoluteConfigKey: ConfigValue],
        secrets: Set<String>
    ) {
        for (name, member) in members {
            let components = prefix + [name]
            let isSecret = secrets.contains(components.joined(separator: "."))
            let content: ConfigContent?
            switch member {
            case .object(let inner):
                flatten(inner, under: components, into: &values, secrets: secrets)
                content = nil
            case .string(let text): content = .string(text)
            case .integer(let number): content = .int(number)
            case .double(let number): content = .double(number)
            case .bool(let flag): content = .bool(flag)
            case .array(let items): content = array(items)
            case .null: content = nil
            }
            if let content { values[AbsoluteConfigKey(components)] = ConfigValue(content, isSecret: isSecret) }
        }
    }

    /// An array of one scalar kind as a setting; nil for anything else (not a setting this file gives).
    private static func array(_ items: [JSONValue]) -> ConfigContent? {
        let strings = items.compactMap { if case .string(let text) = $0 { text } else { nil } }
        if strings.count == items.count { return .stringArray(strings) }
        let integers = items.compactMap { if case .integer(let number) = $0 { number } else { nil } }
        if integers.count == items.count { return .intArray(integers) }
        return nil
    }
}

/// Any JSON value.
enum JSONValue: Decodable {
    case object([String: JSONValue])
    case array([JSONValue])
    case string(String)
    case integer(Int)
    case double(Double)
    case bool(Bool)
    case null

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let flag = try? container.decode(Bool.self) {
            self = .bool(flag)
        } else if let number = try? container.decode(Int.self) {
            self = .integer(number)
        } else if let number = try? container.decode(Double.self) {
            self = .double(number)
        } else if let text = try? container.decode(String.self) {
            self = .string(text)
        } else if let items = try? container.decode([JSONValue].self) {
            self = .array(items)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }
}
