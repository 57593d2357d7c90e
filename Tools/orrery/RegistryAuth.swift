import Foundation
import OrreryHTTPClient
import OrreryOCI
import OrreryProto

/// Private images: the consumer's registry logins (a Docker `config.json`: `{"auths": {"HOST": {"auth":
/// base64(user:password)}}}`, or `username` and `password`), used here only to obtain, for each OCI allocation and
/// each oci:// input whose registry has a login, a short-lived token that can pull that one repository. The token
/// goes with the submission; the password never leaves this machine.
struct RegistryAuth {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    var logins: [String: (username: String, password: String)]

    init(file: String) throws {
        struct Config: Decodable {
            struct Login: Decodable {
                var auth: String?
                var username: String?
                var password: String?
            }
            var auths: [String: Login]
        }
        let config: Config
        do {
            config = try JSONDecoder().decode(Config.self, from: Data(contentsOf: URL(fileURLWithPath: file)))
        } catch {
            throw Failure(
                description: "\(file) is not a registry auth file ({\"auths\": {HOST: {\"auth\": …}}}): \(error)")
        }
        var logins: [String: (String, String)] = [:]
        for (host, login) in config.auths {
            let registry =
                host.replacingOccurrences(of: "https://", with: "").split(separator: "/").first.map(String.init)
                ?? host
            if let auth = login.auth, let decoded = Data(base64Encoded: auth),
                let text = String(data: decoded, encoding: .utf8), let colon = text.firstIndex(of: ":")
            {
                logins[registry] = (String(text[..<colon]), String(text[text.index(after: colon)...]))
            } else if let username = login.username, let password = login.password {
                logins[registry] = (username, password)
            } else {
                throw Failure(description: "\(file): the login for \(host) has neither auth nor username and password")
            }
        }
        self.logins = logins
    }

    /// A pull token for each OCI allocation of `spec` whose image's registry has a login, by allocation name.
    func pullTokens(for spec: Orrery_Orchestrator_V1_WorkloadSpec, trust: TLSTrust) async throws -> [String: String] {
        var tokens: [String: String] = [:]
        for allocation in spec.allocations where allocation.executor == .oci {
            let reference = try ImageReference(parsing: allocation.image)
            tokens[allocation.name] = try await token(
                for: reference, trust: trust, what: "allocation \(allocation.name)")
        }
        return tokens
    }

    /// A pull-only token for each oci:// input in a repository these logins reach, by "ALLOCATION/INPUT".
    func inputTokens(for spec: Orrery_Orchestrator_V1_WorkloadSpec, trust: TLSTrust) async throws -> [String: String] {
        var tokens: [String: String] = [:]
        for allocation in spec.allocations {
            for input in allocation.inputs where input.source.hasPrefix("oci://") {
                let reference = try ImageReference(parsing: String(input.source.dropFirst("oci://".count)))
                let key = "\(allocation.name)/\(input.name)"
                tokens[key] = try await token(for: reference, trust: trust, what: "input \(key)")
            }
        }
        return tokens
    }

    /// The registry's pull-only token for `reference`'s repository, obtained with this registry's login; nil without
    /// a login for it (a public repository), or when the registry issues no tokens.
    private func token(for reference: ImageReference, trust: TLSTrust, what: String) async throws -> String? {
        guard let login = logins[reference.registry] ?? logins[reference.apiHost] else { return nil }
        let client = RegistryClient(
            host: reference.apiHost, trust: trust,
            credentials: .basic(username: login.username, password: login.password))
        do {
            return try await client.pullToken(repository: reference.repository, reference: reference.manifestReference)
        } catch {
            throw Failure(description: "\(what): \(reference): \(error)")
        }
    }
}
