/// An image as a spec names it: `[REGISTRY/]NAME[:TAG][@sha256:DIGEST]`, read with the grammar of the distribution
/// project's reference package. A name without a registry is on Docker Hub (`busybox` is
/// `docker.io/library/busybox`); without a tag or digest it is `:latest`.
public struct ImageReference: Hashable, Sendable, CustomStringConvertible {
    /// The registry as written (`docker.io`, `127.0.0.1:5000`, `ghcr.io`).
    public var registry: String
    /// The repository inside it (`library/busybox`).
    public var repository: String
    public var tag: String?
    public var digest: OCIDigest?

    /// The host and port whose `/v2/` API serves the repository (Docker Hub's API lives elsewhere than its name).
    public var apiHost: String { registry == "docker.io" ? "registry-1.docker.io" : registry }

    /// What to ask the registry for: the digest when pinned, otherwise the tag.
    public var manifestReference: String { digest?.description ?? tag ?? "latest" }

    /// The canonical text: registry, repository, tag when given, digest when pinned.
    public var description: String {
        var text = registry + "/" + repository
        if let tag { text += ":" + tag }
        if let digest { text += "@" + digest.description }
        return text
    }

    /// The same image pinned to `digest` (the tag kept for people reading it).
    public func pinned(to digest: OCIDigest) -> ImageReference {
        var copy = self
        copy.digest = digest
        return copy
    }

    /// The longest name the grammar allows (registry and repository together).
    public static let maximumNameLength = 255

    public init(registry: String, repository: String, tag: String? = nil, digest: OCIDigest? = nil) {
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest
    }

    public init(parsing text: String) throws(OCIError) {
        guard !text.isEmpty, text.utf8.count <= 512 else {
            throw .invalidReference("an image reference is 1…512 characters")
        }
        var rest = Substring(text)
        if let at = rest.firstIndex(of: "@") {
            digest = try OCIDigest(parsing: String(rest[rest.index(after: at)...]))
            rest = rest[..<at]
        } else {
            digest = nil
        }
        // A tag follows the last ':' after the last '/' (a ':' before it is a registry's port).
        let lastSlash = rest.lastIndex(of: "/")
        let tagSearchStart = lastSlash.map { rest.index(after: $0) } ?? rest.startIndex
        if let colon = rest[tagSearchStart...].firstIndex(of: ":") {
            let tagText = rest[rest.index(after: colon)...]
            guard Self.isValidTag(tagText) else {
                throw .invalidReference(
                    "\(String(tagText.prefix(130))) is not a valid tag (letters, digits, '_', '.', '-'; 1…128, not starting with '.' or '-')"
                )
            }
            tag = String(tagText)
            rest = rest[..<colon]
        } else {
            tag = nil
        }
        var components = rest.split(separator: "/", omittingEmptySubsequences: false)
        guard let first = components.first, !first.isEmpty else {
            throw .invalidReference("\(text.prefix(80)) has no image name")
        }
        if components.count > 1, first.contains(".") || first.contains(":") || first == "localhost" {
            guard Self.isValidRegistry(first) else {
                throw .invalidReference("\(first.prefix(80)) is not a valid registry host[:port]")
            }
            registry = String(first)
            components.removeFirst()
        } else {
            registry = "docker.io"
        }
        for component in components where !Self.isValidPathComponent(component) {
            throw .invalidReference(
                "\(String(component.prefix(80))) is not a valid repository path component (lowercase letters and digits, joined by '.', '_', '__' or '-')"
            )
        }
        if registry == "docker.io", components.count == 1 { components.insert("library", at: 0) }
        repository = components.joined(separator: "/")
        guard registry.utf8.count + 1 + repository.utf8.count <= Self.maximumNameLength else {
            throw .invalidReference("the image name is longer than \(Self.maximumNameLength) characters")
        }
        if tag == nil, digest == nil { tag = "latest" }
    }

    static func isValidTag(_ tag: Substring) -> Bool {
        guard let first = tag.utf8.first, tag.utf8.count <= 128 else { return false }
        func word(_ byte: UInt8) -> Bool {
            (48...57).contains(byte) || (65...90).contains(byte) || (97...122).contains(byte) || byte == 95
        }
        return word(first) && tag.utf8.allSatisfy { word($0) || $0 == 46 || $0 == 45 }
    }

    /// `host[:port]`: DNS labels of letters, digits and inner '-', or a bracketed IPv6 address.
    static func isValidRegistry(_ text: Substring) -> Bool {
        var host = text
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return false }
            let inside = text[text.index(after: text.startIndex)..<close]
            guard !inside.isEmpty, inside.utf8.allSatisfy({ isHexDigit($0) || $0 == 58 || $0 == 46 }) else {
                return false
            }
            let after = text[text.index(after: close)...]
            return after.isEmpty || (after.hasPrefix(":") && isPort(after.dropFirst()))
        }
        if let colon = text.lastIndex(of: ":") {
            guard isPort(text[text.index(after: colon)...]) else { return false }
            host = text[..<colon]
        }
        let labels = host.split(separator: ".", omittingEmptySubsequences: false)
        return !labels.isEmpty
            && labels.allSatisfy { label in
                guard let first = label.utf8.first, let last = label.utf8.last, label.utf8.count <= 63 else {
                    return false
                }
                return isAlphanumeric(first) && isAlphanumeric(last)
                    && label.utf8.allSatisfy { isAlphanumeric($0) || $0 == 45 }
            }
    }

    /// Lowercase letters and digits, separated by one of `.`, `_`, `__` or a run of `-`.
    static func isValidPathComponent(_ component: Substring) -> Bool {
        let bytes = Array(component.utf8)
        guard let first = bytes.first, let last = bytes.last, isLowerAlphanumeric(first), isLowerAlphanumeric(last)
        else { return false }
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if isLowerAlphanumeric(byte) {
                index += 1
                continue
            }
            // A separator: '.', '_', '__' or '-'+, followed by an alphanumeric.
            var end = index + 1
            if byte == 95, end < bytes.count, bytes[end] == 95 {
                end += 1
            } else if byte == 45 {
                while end < bytes.count, bytes[end] == 45 { end += 1 }
            } else if byte != 46, byte != 95 {
                return false
            }
            guard end < bytes.count, isLowerAlphanumeric(bytes[end]) else { return false }
            index = end
        }
        return true
    }

    private static func isPort(_ text: Substring) -> Bool {
        guard !text.isEmpty, text.utf8.count <= 5, text.utf8.allSatisfy({ (48...57).contains($0) }),
            let port = Int(text)
        else { return false }
        return port <= 65535
    }

    private static func isLowerAlphanumeric(_ byte: UInt8) -> Bool {
        (48...57).contains(byte) || (97...122).contains(byte)
    }

    private static func isAlphanumeric(_ byte: UInt8) -> Bool {
        isLowerAlphanumeric(byte) || (65...90).contains(byte)
    }

    private static func isHexDigit(_ byte: UInt8) -> Bool {
        (48...57).contains(byte) || (97...102).contains(byte) || (65...70).contains(byte)
    }
}
