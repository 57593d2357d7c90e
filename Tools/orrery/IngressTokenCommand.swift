import ArgumentParser
import Foundation
import OrreryIdentity
import OrreryProto
import OrreryRuntimeCore

/// `orrery ingress-token DEP`: an invocation of `/orrery/ingress/connect` for one deployment, to call its private
/// ports through the ingress (`curl -H "Authorization: Bearer $(orrery ingress-token DEP)" URL`), or, with
/// `--sign-in URL`, the address a browser opens to trade it for a session cookie of that host.
struct IngressTokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingress-token",
        abstract: "A capability to call a deployment's private ports through the ingress.",
        discussion: """
            As the deployment's consumer no chain is needed; someone the consumer delegated /orrery/ingress/connect \
            (or /orrery/ingress) to passes that delegation with --chain.
            """)

    @Argument(help: "The deployment id.") var id: String
    @Option(
        name: .customLong("orchestrator"),
        help: "The orchestrator whose ingress is called, host:port (default: the context's, else 127.0.0.1:7403).")
    var orchestratorFlag: String?
    @Option(name: .customLong("key"), help: "Your key file (default: $ORRERY_KEY, else the context's).")
    var keyFlag: String?
    @OptionGroup var tls: TLSOptions
    @Option(help: "A file with your delegation from the deployment's consumer (repeatable, root first).")
    var chain: [String] = []
    @Option(help: "How long the token lives, in seconds (at most 300).") var lifetime: Int64 = 300
    @Option(help: "Print the sign-in address for this URL (a route's, from `orrery status`) instead of the token.")
    var signIn: String?

    func validate() throws {
        try CLISettings.requireKey(keyFlag)
        guard (1...300).contains(lifetime) else { throw ValidationError("--lifetime: 1…300 seconds") }
        guard id.hasPrefix("dep_") else { throw ValidationError("'\(id)' is not a deployment id (dep_…)") }
    }

    func run() async throws {
        let address = CLISettings.address(orchestratorFlag, service: "orchestrator")
        guard let target = ServiceAddress(address) else { throw ValidationError("'\(address)' is not host:port") }
        let orchestratorDID = try await ServiceProbe.withClient(target, trustRoots: tls.trustRoots) {
            try DID(try await ServiceProbe.info($0).did)
        }
        let key = try Inputs.key(CLISettings.key(keyFlag) ?? "")
        let proofs = try Inputs.chain(chain)
        let now = Int64(Date().timeIntervalSince1970)
        let invocation = Invocation.issue(
            by: key, subject: proofs.first?.issuer ?? key.did, audience: orchestratorDID,
            command: try Command("/orrery/ingress/connect"), arguments: ["deployment": .string(id)],
            proofs: proofs.map(\.cid), expiration: now + lifetime, issuedAt: now)
        let token = try UCANContainer.encodeText([invocation.envelope.bytes] + proofs.map(\.envelope.bytes))
        guard let signIn else {
            print(token)
            return
        }
        guard var components = URLComponents(string: signIn), components.host != nil else {
            throw ValidationError("--sign-in: '\(signIn)' is not a URL")
        }
        let path = components.path.isEmpty ? "/" : components.path
        components.path = "/.orrery/session"
        components.percentEncodedQuery =
            "token=\(token.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")&to="
            + (path.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "%2F")
        print(components.string ?? signIn)
    }
}
