internal import GRPCCore
internal import OrreryHTTPClient
internal import OrreryOCI
internal import OrreryProto

/// Resolves the images of a spec's OCI allocations at submit: the digest a tag names now (what the contract and
/// the device then use, so that a tag moved later changes nothing), and the platforms the image offers (what
/// placement filters devices by). An index names its platforms; a single manifest's are in its configuration.
struct ImageResolver: Sendable {
    /// Registries' certificates: the system's roots, or a CA file the operator names.
    let trust: TLSTrust
    /// The platforms of manifests already read, by digest (content-addressed: they never change).
    private let known = PlatformCache()

    /// Where registries may be: public addresses only unless the operator allows any.
    let addresses: AddressPolicy

    init(trust: TLSTrust, addresses: AddressPolicy) {
        self.trust = trust
        self.addresses = addresses
    }

    /// `spec` with every OCI allocation's `image_digest` and `image_platforms` set.
    /// - Throws: `RPCError` naming the allocation: INVALID_ARGUMENT when the image is not there or not an image,
    ///   FAILED_PRECONDITION when the registry refuses to show it, UNAVAILABLE when the registry cannot be reached.
    /// `tokens`: private images' pull tokens by allocation (see `DeploymentSecrets`).
    func resolve(_ spec: Orrery_Orchestrator_V1_WorkloadSpec, tokens: [String: String] = [:]) async throws
        -> Orrery_Orchestrator_V1_WorkloadSpec
    {
        var resolved = spec
        for (index, allocation) in spec.allocations.enumerated() where allocation.executor == .oci {
            let path = "spec.allocations[\(index)].image"
            do {
                let reference = try ImageReference(parsing: allocation.image)
                var client = RegistryClient(
                    host: reference.apiHost, trust: trust,
                    credentials: tokens[allocation.name].map { .bearer($0) } ?? .anonymous)
                client.addresses = addresses
                let manifest = try await client.manifest(
                    repository: reference.repository, reference: reference.manifestReference)
                let platforms: [String]
                if let cached = await known.platforms(of: manifest.digest) {
                    platforms = cached
                } else {
                    platforms = try await Self.platforms(of: manifest, reference: reference, client: client)
                    await known.remember(platforms, for: manifest.digest)
                }
                guard !platforms.isEmpty else {
                    throw RPCError(code: .invalidArgument, message: "\(path): \(reference) names no platform")
                }
                resolved.allocations[index].imageDigest = manifest.digest.description
                resolved.allocations[index].imagePlatforms = platforms
            } catch let error as RPCError {
                throw error
            } catch let error as OCIError {
                switch error {
                case .notFound, .invalidReference, .invalidDigest, .invalidManifest, .digestMismatch:
                    throw RPCError(code: .invalidArgument, message: "\(path): \(error)")
                case .unauthorized:
                    throw RPCError(code: .failedPrecondition, message: "\(path): the registry refuses it: \(error)")
                case .forbiddenAddress:
                    throw RPCError(code: .failedPrecondition, message: "\(path): \(error)")
                default:
                    throw RPCError(code: .unavailable, message: "\(path): the registry cannot be asked: \(error)")
                }
            } catch {
                throw RPCError(code: .unavailable, message: "\(path): the registry cannot be reached: \(error)")
            }
        }
        return resolved
    }

    /// The platforms an index names, or the one in an image's configuration; sorted, without duplicates.
    private static func platforms(
        of manifest: RegistryClient.Manifest, reference: ImageReference, client: RegistryClient
    ) async throws -> [String] {
        switch manifest.content {
        case .index(let index):
            // Attestation manifests in an index carry the platform unknown/unknown: not a platform.
            return Array(Set(index.manifests.compactMap(\.platform).filter { $0.os != "unknown" }.map(\.description)))
                .sorted()
        case .image(let image):
            let configuration = try ImageConfiguration.decode(
                try await client.smallBlob(repository: reference.repository, image.config))
            return [
                Platform(os: configuration.os, architecture: configuration.architecture, variant: configuration.variant)
                    .description
            ]
        }
    }

    /// A spec without what resolution adds: what a retried submission is compared by.
    static func unresolved(_ spec: Orrery_Orchestrator_V1_WorkloadSpec) -> Orrery_Orchestrator_V1_WorkloadSpec {
        var copy = spec
        for index in copy.allocations.indices where copy.allocations[index].executor == .oci {
            copy.allocations[index].imageDigest = ""
            copy.allocations[index].imagePlatforms = []
        }
        return copy
    }
}

/// Platforms by manifest digest, at most 4,096 (then forgotten all at once: a cache, not a record).
private actor PlatformCache {
    private var platforms: [OCIDigest: [String]] = [:]

    func platforms(of digest: OCIDigest) -> [String]? { platforms[digest] }

    func remember(_ list: [String], for digest: OCIDigest) {
        if platforms.count >= 4096 { platforms.removeAll() }
        platforms[digest] = list
    }
}
