import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryAuth
import OrreryIdentity
import OrreryProto
import OrreryRuntimeCore
import SwiftProtobuf

/// An address that answers as another service than the one asked for (printed without usage text: the flags were
/// well formed, the address was not the right one).
struct WrongService: Error, CustomStringConvertible {
    let description: String
}

/// A gRPC client whose every call carries an invocation signed with the caller's key, addressed to the service's
/// DID (learned from its open `Info`), with the caller's chain as proofs.
enum AuthorizedCall {
    /// Where `make run` serves each service, for the hint when an address is another service's.
    static let makeRunAddresses = [
        "identity": "127.0.0.1:7401", "registry": "127.0.0.1:7402", "orchestrator": "127.0.0.1:7403",
        "contract-notary": "127.0.0.1:7404", "settlement-gateway": "127.0.0.1:7405", "device-agent": "127.0.0.1:7406",
    ]

    /// - Parameter service: the service the call is for (its `Info` name); an address that answers as another
    ///   service is refused with a message naming both, before anything is signed.
    static func withClient<Result: Sendable>(
        _ address: String,
        service: String,
        caller: CallerOptions,
        _ body: (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> Result
    ) async throws -> Result {
        guard let target = ServiceAddress(address) else { throw ValidationError("'\(address)' is not host:port") }
        let key = try Inputs.key(caller.key)
        let chain = try Inputs.chain(caller.proof)
        let info = try await ServiceProbe.withClient(target, trustRoots: caller.trustRoots) {
            try await ServiceProbe.info($0)
        }
        guard info.name == service else {
            let hint = makeRunAddresses[service].map { " (under make run: \($0))" } ?? ""
            throw WrongService(
                description:
                    "\(address) is the \(info.name), not the \(service): give the \(service)'s address\(hint)")
        }
        let audience = try DID(info.did)
        let catalog = try MethodCatalog(descriptorSet: Data(base64Encoded: OrreryDescriptorSet.base64) ?? Data())
        let signer = InvocationSigner(
            key: key, subject: chain.first?.subject ?? key.did, audience: audience, proofs: chain, catalog: catalog)
        return try await withGRPCClient(
            transport: try .http2NIOPosix(
                target: target.target, transportSecurity: ServiceProbe.security(trustRoots: caller.trustRoots),
                config: ServiceProbe.prompt),
            interceptors: [signer]
        ) { client in
            try await body(client)
        }
    }
}

/// `orrery revocations`: the identity service's revocation log.
struct RevocationsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revocations", abstract: "List the revocation log (an authorised call to the identity service).")

    @Option(
        name: .customLong("identity"),
        help: "The identity service, host:port (default: the context's, else 127.0.0.1:7401).")
    var identityFlag: String?
    @OptionGroup var caller: CallerOptions
    var identity: String { CLISettings.address(identityFlag, service: "identity") }
    @Option(help: "List revocations after this revision.") var after: Int64 = 0
    @Option(help: "Revocations per call (1–1000; a delegation may bound it); every page is fetched.")
    var pageSize: Int32 = 100
    @Flag(help: "Print JSON: one ListRevocationsResponse with every page's revocations.") var json = false

    func validate() throws {
        guard (1...1000).contains(pageSize) else { throw ValidationError("--page-size: 1 to 1000") }
    }

    func run() async throws {
        var revision = after
        var head: Int64 = 0
        var all: [Orrery_Identity_V1_Revocation] = []
        while true {
            let page = try await AuthorizedCall.withClient(identity, service: "identity", caller: caller) {
                client in
                try await Orrery_Identity_V1_Identity.Client(wrapping: client).listRevocations(
                    .with {
                        $0.afterRevision = revision; $0.pageSize = pageSize
                    })
            }
            all += page.revocations
            if !json {
                for revocation in page.revocations {
                    Console.out("\(revocation.revision)\t\(revocation.cid)\t\(revocation.revokedBy)")
                }
            }
            head = page.revision
            guard page.revocations.count == Int(pageSize), let last = page.revocations.last?.revision,
                last > revision
            else { break }
            revision = last
        }
        if json {
            var response = Orrery_Identity_V1_ListRevocationsResponse()
            response.revocations = all
            response.revision = head
            Console.out(try response.jsonString())
        } else {
            Console.out("revision \(head)")
        }
    }
}
