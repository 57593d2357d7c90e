internal import Foundation
public import OrreryProto
internal import SwiftProtobuf
internal import Yams

/// A workload spec as people write it: YAML or JSON, field names in snake_case (or the proto3 JSON camelCase),
/// enum values either in full (`EXECUTOR_PROCESS`) or short (`process`, `across_devices`).
public enum WorkloadSpecFile {
    public struct ParseError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Reads a spec from a file (`-` for standard input).
    public static func read(_ path: String) throws -> Orrery_Orchestrator_V1_WorkloadSpec {
        let data: Data
        do {
            data =
                path == "-"
                ? FileHandle.standardInput.readDataToEndOfFile() : try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ParseError(description: "cannot read \(path): \(error.localizedDescription)")
        }
        return try parse(String(decoding: data, as: UTF8.self), source: path)
    }

    /// Parses YAML (JSON is YAML too).
    public static func parse(_ text: String, source: String = "spec") throws -> Orrery_Orchestrator_V1_WorkloadSpec {
        let document: Any?
        do {
            // Every mistake at once, each with its line and column, before the spec is decoded.
            if let node = try Yams.compose(yaml: text), let schema = WorkloadSpecSchema.compiled {
                let problems = schema.problems(in: node)
                if !problems.isEmpty {
                    throw ParseError(
                        description: "\(source) is not a workload spec:\n"
                            + problems.map { "  \(source):\($0)" }.joined(separator: "\n"))
                }
            }
            document = try Yams.load(yaml: text)
        } catch let error as ParseError {
            throw error
        } catch {
            throw ParseError(description: "\(source) is not valid YAML: \(error)")
        }
        guard let object = document as? [String: Any] else {
            throw ParseError(description: "\(source): the spec must be a mapping with name, allocations, …")
        }
        let normalised = normalise(object, key: nil)
        let json: Data
        do {
            json = try JSONSerialization.data(withJSONObject: normalised, options: [.sortedKeys])
        } catch {
            throw ParseError(description: "\(source): \(error.localizedDescription)")
        }
        do {
            return try Orrery_Orchestrator_V1_WorkloadSpec(jsonUTF8Data: json)
        } catch {
            throw ParseError(description: "\(source) is not a workload spec: \(error)")
        }
    }

    /// Expands short enum values and turns YAML's dates or other scalars into what the JSON mapping expects.
    private static func normalise(_ value: Any, key: String?) -> Any {
        switch value {
        case let object as [String: Any]:
            return Dictionary(uniqueKeysWithValues: object.map { ($0.key, normalise($0.value, key: $0.key)) })
        case let array as [Any]:
            return array.map { normalise($0, key: key) }
        case let text as String:
            switch key {
            case "executor" where !text.uppercased().hasPrefix("EXECUTOR_"): return "EXECUTOR_" + text.uppercased()
            case "spread" where !text.uppercased().hasPrefix("SPREAD_"): return "SPREAD_" + text.uppercased()
            case "protocol" where !text.uppercased().hasPrefix("PROTOCOL_"): return "PROTOCOL_" + text.uppercased()
            case "expose" where !text.uppercased().hasPrefix("EXPOSE_"): return "EXPOSE_" + text.uppercased()
            default: return text
            }
        default:
            return value
        }
    }
}
