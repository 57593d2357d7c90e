#if canImport(FoundationEssentials)
    public import FoundationEssentials
#else
    public import Foundation
#endif
public import OrreryOCI

/// Why a data source or an input is refused, in words for the person who wrote it.
public enum DataSourceError: Error, CustomStringConvertible, Equatable {
    case invalid(String)

    public var description: String {
        switch self {
        case .invalid(let why): why
        }
    }
}

/// Where an input's bytes come from.
public enum DataSource: Sendable, Equatable {
    /// An http(s) URL anyone may read.
    case web(URL)
    /// An object in the consumer's S3-compatible store, read by the device through a URL the consumer presigned.
    case s3(S3Location)
    /// An OCI artifact (one layer: the file) pinned by its manifest's digest.
    case oci(ImageReference)

    /// Parses `https://…`, `http://…`, `s3://BUCKET/KEY` or `oci://REGISTRY/NAME@sha256:DIGEST`.
    public init(parsing text: String) throws(DataSourceError) {
        guard text.utf8.count <= 4096 else { throw .invalid("a source is at most 4096 bytes") }
        if text.hasPrefix("s3://") {
            self = .s3(try S3Location(parsing: text))
        } else if text.hasPrefix("oci://") {
            let reference: ImageReference
            do { reference = try ImageReference(parsing: String(text.dropFirst(6))) } catch {
                throw .invalid("'\(text.prefix(200))': \(error)")
            }
            guard reference.digest != nil, reference.tag == nil else {
                throw .invalid("'\(text.prefix(200))' must be pinned: oci://REGISTRY/NAME@sha256:DIGEST, without a tag")
            }
            self = .oci(reference)
        } else if let url = URL(string: text), let scheme = url.scheme?.lowercased(),
            scheme == "https" || scheme == "http", url.host?.isEmpty == false
        {
            self = .web(url)
        } else {
            throw .invalid(
                "'\(text.prefix(200))' is not https://…, http://…, s3://BUCKET/KEY or oci://REGISTRY/NAME@sha256:…")
        }
    }
}

/// The rules an allocation's inputs follow, checked by the orchestrator at submit and again by the device.
public enum InputRules {
    /// Where inputs appear inside the sandbox (read-only).
    public static let root = "/inputs"
    /// The most inputs an allocation has.
    public static let maximumInputs = 32

    /// Whether `name` is 1…63 of lowercase letters, digits, '-', '_' and '.', not starting with '.' or '-'.
    public static func isName(_ name: String) -> Bool {
        guard (1...63).contains(name.count), let first = name.first, first != ".", first != "-" else { return false }
        return name.allSatisfy {
            ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" || $0 == "_" || $0 == "."
        }
    }

    /// The path inside the sandbox an input appears at: `mount` when given (it must be under /inputs/, normalised:
    /// no empty, `.` or `..` component), otherwise /inputs/NAME.
    public static func mountPath(name: String, mount: String) throws(DataSourceError) -> String {
        guard !mount.isEmpty else { return root + "/" + name }
        let components = mount.split(separator: "/", omittingEmptySubsequences: false)
        guard mount.hasPrefix(root + "/"), mount.utf8.count <= 1024,
            !components.dropFirst().contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }),
            !mount.unicodeScalars.contains(where: { $0.value < 32 })
        else { throw .invalid("'\(mount.prefix(200))' is not a normalised path under \(root)/") }
        return mount
    }

    /// The mount paths of a list of inputs, refusing one path twice or a path inside another input's file.
    public static func mountPaths(_ inputs: [(name: String, mount: String)]) throws(DataSourceError) -> [String] {
        var paths: [String] = []
        for input in inputs {
            let path = try mountPath(name: input.name, mount: input.mount)
            if let clash = paths.first(where: { $0 == path || path.hasPrefix($0 + "/") || $0.hasPrefix(path + "/") }) {
                throw .invalid("'\(input.name)' would appear at \(path), which clashes with another input at \(clash)")
            }
            paths.append(path)
        }
        return paths
    }
}
