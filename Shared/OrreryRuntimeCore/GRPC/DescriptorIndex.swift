#if canImport(FoundationEssentials)
    public import FoundationEssentials
#else
    public import Foundation
#endif
internal import OrreryBasics
internal import SwiftProtobuf

/// An index over a `FileDescriptorSet`: files by name, the file defining each symbol, extensions by the type
/// they extend. Server reflection answers from it.
public struct DescriptorIndex: Sendable {
    private let files: [String: Google_Protobuf_FileDescriptorProto]
    private let serializedFiles: [String: Data]
    private let fileBySymbol: [String: String]
    private let extensions: [String: [Int32: String]]

    /// - Throws: when `descriptorSet` is not a serialized `FileDescriptorSet`.
    public init(descriptorSet: Data) throws {
        let set = try Google_Protobuf_FileDescriptorSet(serializedBytes: descriptorSet)
        var files: [String: Google_Protobuf_FileDescriptorProto] = [:]
        var serialized: [String: Data] = [:]
        var symbols: [String: String] = [:]
        var extensions: [String: [Int32: String]] = [:]
        for file in set.file {
            files[file.name] = file
            serialized[file.name] = try file.serializedData()
            let prefix = file.package.isEmpty ? "" : file.package + "."
            for message in file.messageType {
                Self.index(message: message, prefix: prefix, file: file.name, into: &symbols, extensions: &extensions)
            }
            for enumType in file.enumType {
                symbols[prefix + enumType.name] = file.name
            }
            for service in file.service {
                let name = prefix + service.name
                symbols[name] = file.name
                for method in service.method {
                    symbols[name + "." + method.name] = file.name
                }
            }
            for field in file.extension {
                symbols[prefix + field.name] = file.name
                extensions[Self.trimDot(field.extendee), default: [:]][field.number] = file.name
            }
        }
        self.files = files
        self.serializedFiles = serialized
        self.fileBySymbol = symbols
        self.extensions = extensions
    }

    private static func index(
        message: Google_Protobuf_DescriptorProto,
        prefix: String,
        file: String,
        into symbols: inout [String: String],
        extensions: inout [String: [Int32: String]]
    ) {
        let name = prefix + message.name
        symbols[name] = file
        for field in message.field {
            symbols[name + "." + field.name] = file
        }
        for nested in message.nestedType {
            index(message: nested, prefix: name + ".", file: file, into: &symbols, extensions: &extensions)
        }
        for enumType in message.enumType {
            symbols[name + "." + enumType.name] = file
        }
        for field in message.extension {
            symbols[name + "." + field.name] = file
            extensions[trimDot(field.extendee), default: [:]][field.number] = file
        }
    }

    private static func trimDot(_ name: String) -> String {
        name.hasPrefix(".") ? String(name.dropFirst()) : name
    }

    /// The file named `name` and every file it depends on, transitively: the requested file first.
    public func fileWithDependencies(named name: String) -> [Data]? {
        guard files[name] != nil else { return nil }
        var ordered: [String] = []
        var seen: Set<String> = []
        var pending = [name]
        while let next = pending.popLast() {
            guard seen.insert(next).inserted, let file = files[next] else { continue }
            ordered.append(next)
            pending.append(contentsOf: file.dependency.reversed())
        }
        return ordered.compactMap { serializedFiles[$0] }
    }

    /// The name of the file defining the fully qualified `symbol` (a leading dot is ignored).
    public func fileName(containingSymbol symbol: String) -> String? {
        fileBySymbol[Self.trimDot(symbol)]
    }

    /// The name of the file defining extension `number` of `type`.
    public func fileName(containingExtension number: Int32, of type: String) -> String? {
        extensions[Self.trimDot(type)]?[number]
    }

    /// The extension numbers of `type` known here, or nil when the type is unknown.
    public func extensionNumbers(of type: String) -> [Int32]? {
        let type = Self.trimDot(type)
        guard fileBySymbol[type] != nil else { return nil }
        return (extensions[type].map { Array($0.keys) } ?? []).sorted()
    }
}
