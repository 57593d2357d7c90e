#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif

/// The media types an image is made of, OCI's and Docker's schema 2 (which registries still serve for most images).
public enum MediaType {
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    public static let ociConfig = "application/vnd.oci.image.config.v1+json"
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    public static let dockerConfig = "application/vnd.docker.container.image.v1+json"

    /// What a manifest request accepts, most preferred first.
    public static let acceptedManifests = [ociIndex, ociManifest, dockerManifestList, dockerManifest]

    /// How a layer's bytes are compressed, from its media type; nil for a type that is not a layer we can unpack
    /// (a non-distributable "foreign" layer, an artifact's blob).
    public static func layerCompression(_ mediaType: String) -> LayerCompression? {
        switch mediaType {
        case "application/vnd.oci.image.layer.v1.tar": .uncompressed
        case "application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip": .gzip
        case "application/vnd.oci.image.layer.v1.tar+zstd": .zstd
        default: nil
        }
    }
}

/// How a layer's tar stream is compressed.
public enum LayerCompression: String, Sendable {
    case uncompressed, gzip, zstd
}

/// A pointer to content: its media type, digest and size (OCI image-spec `descriptor.md`).
public struct Descriptor: Codable, Hashable, Sendable {
    public var mediaType: String
    public var digest: OCIDigest
    public var size: Int64
    public var platform: Platform?
    public var annotations: [String: String]?

    public init(mediaType: String, digest: OCIDigest, size: Int64, platform: Platform? = nil) {
        self.mediaType = mediaType
        self.digest = digest
        self.size = size
        self.platform = platform
    }
}

/// An image manifest: one platform's configuration and ordered layers.
public struct ImageManifest: Codable, Sendable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var config: Descriptor
    public var layers: [Descriptor]
}

/// An image index (or Docker manifest list): one manifest per platform.
public struct ImageIndex: Codable, Sendable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var manifests: [Descriptor]
}

/// The image configuration: what to run and the digests of the uncompressed layers.
public struct ImageConfiguration: Codable, Sendable {
    /// What to run: the fields of the configuration's `config` object that a runtime honours.
    public struct RunConfig: Codable, Sendable {
        public var user: String?
        public var env: [String]?
        public var entrypoint: [String]?
        public var cmd: [String]?
        public var workingDir: String?

        enum CodingKeys: String, CodingKey {
            case user = "User", env = "Env", entrypoint = "Entrypoint", cmd = "Cmd", workingDir = "WorkingDir"
        }
    }
    /// The layers' uncompressed digests, in order.
    public struct RootFS: Codable, Sendable {
        public var type: String
        public var diffIDs: [OCIDigest]

        enum CodingKeys: String, CodingKey {
            case type, diffIDs = "diff_ids"
        }
    }
    public var architecture: String
    public var os: String
    public var variant: String?
    public var config: RunConfig?
    public var rootfs: RootFS
}

/// A manifest as fetched: either an index to choose from or one image's manifest, with the bytes and digest that
/// name it.
public enum FetchedManifest: Sendable {
    case index(ImageIndex)
    case image(ImageManifest)

    /// Reads a manifest of `mediaType` (the response's Content-Type; the document's own `mediaType` when that is
    /// missing or generic).
    public static func decode(_ bytes: [UInt8], mediaType: String?) throws(OCIError) -> FetchedManifest {
        struct Probe: Decodable {
            var schemaVersion: Int?
            var mediaType: String?
            var manifests: [Descriptor]?
            var layers: [Descriptor]?
        }
        let data = Data(bytes)
        let probe: Probe
        do { probe = try JSONDecoder().decode(Probe.self, from: data) } catch {
            throw .invalidManifest("the manifest is not JSON: \(error)")
        }
        guard probe.schemaVersion == 2 else {
            throw .invalidManifest(
                "the manifest's schemaVersion is \(probe.schemaVersion.map(String.init) ?? "missing"), not 2 (Docker schema 1 is not supported)"
            )
        }
        let type = [mediaType, probe.mediaType].compactMap { $0 }.first {
            MediaType.acceptedManifests.contains($0)
        }
        let isIndex =
            type.map { $0 == MediaType.ociIndex || $0 == MediaType.dockerManifestList } ?? (probe.manifests != nil)
        do {
            if isIndex { return .index(try JSONDecoder().decode(ImageIndex.self, from: data)) }
            let manifest = try JSONDecoder().decode(ImageManifest.self, from: data)
            guard !manifest.layers.isEmpty else { throw OCIError.invalidManifest("the image manifest has no layers") }
            return .image(manifest)
        } catch let error as OCIError {
            throw error
        } catch {
            throw .invalidManifest("the manifest does not match its media type \(type ?? "(none)"): \(error)")
        }
    }
}

extension ImageConfiguration {
    /// Reads and checks a configuration blob.
    public static func decode(_ bytes: [UInt8]) throws(OCIError) -> ImageConfiguration {
        do { return try JSONDecoder().decode(ImageConfiguration.self, from: Data(bytes)) } catch {
            throw .invalidManifest("the image configuration is not valid: \(error)")
        }
    }
}
