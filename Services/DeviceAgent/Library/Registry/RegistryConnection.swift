#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
internal import GRPCCore
public import GRPCNIOTransportHTTP2Posix
internal import OrreryAuth
public import OrreryIdentity
public import OrreryProto
internal import OrreryRuntimeCore
internal import SwiftProtobuf

/// The agent's outbound connection to a registry: every call signed with the device key under the owner's chain.
public struct RegistryConnection: Sendable {
    public let address: String
    public let key: SigningKey
    public let chain: [Delegation]
    public let trustRoots: String?

    public init(enrollment: Enrollment, key: SigningKey) throws {
        self.address = enrollment.registry
        self.key = key
        self.chain = try DelegationChain.read(enrollment.chain)
        self.trustRoots = enrollment.trustRoots
        guard chain.last?.audience == key.did else {
            throw RegistryConnectionError(
                message: "the token's chain does not end in a delegation to this device (\(key.did))")
        }
    }

    /// Runs `body` with a registry client.
    public func withRegistry<Result: Sendable>(
        _ body: (Orrery_Registry_V1_Registry.Client<HTTP2ClientTransport.Posix>) async throws -> Result
    ) async throws -> Result {
        guard let target = ServiceAddress(address) else {
            throw RegistryConnectionError(message: "registry '\(address)' is not host:port")
        }
        let registryDID = try await ServiceProbe.withClient(target, trustRoots: trustRoots) {
            try DID(try await ServiceProbe.info($0).did)
        }
        let catalog = try MethodCatalog(descriptorSet: Data(base64Encoded: OrreryDescriptorSet.base64) ?? Data())
        let signer = InvocationSigner(
            key: key, subject: chain.first?.subject ?? key.did, audience: registryDID, proofs: chain, catalog: catalog)
        return try await withGRPCClient(
            transport: try .http2NIOPosix(
                target: target.target, transportSecurity: ServiceProbe.security(trustRoots: trustRoots)),
            interceptors: [signer]
        ) { client in
            try await body(Orrery_Registry_V1_Registry.Client(wrapping: client))
        }
    }

    /// Joins (or re-joins) with proof of key possession.
    public func join(capabilities: Orrery_Registry_V1_DeviceCapabilities) async throws -> Orrery_Registry_V1_Device {
        try await withRegistry { registry in
            var challenge = try await registry.beginJoin(.with { $0.deviceDid = key.did.string }).challenge
            SignedMessage.countersign(&challenge, with: key)
            return try await registry.completeJoin(
                .with {
                    $0.challenge = challenge
                    $0.capabilities = capabilities
                    $0.idempotencyKey = UUID().uuidString
                }
            ).device
        }
    }

    /// Leaves the registry; a call that was not answered for good (UNAVAILABLE, a timeout, a dropped connection) is
    /// tried again, a few times — leaving twice changes nothing.
    public func leave() async throws {
        let idempotencyKey = UUID().uuidString
        var attempt = 0
        while true {
            attempt += 1
            do {
                try await withRegistry { registry in
                    _ = try await registry.leave(
                        .with {
                            $0.deviceDid = key.did.string
                            $0.idempotencyKey = idempotencyKey
                        })
                }
                return
            } catch let error as RPCError
                where attempt < 5 && [.unavailable, .deadlineExceeded, .unknown].contains(error.code)
            {
                try await Task.sleep(for: .milliseconds(500 * attempt))
            }
        }
    }
}

/// A registry connection that cannot be made.
public struct RegistryConnectionError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}
