import ArgumentParser
import Foundation
import OrreryProto
import OrreryRuntimeCore

/// Where a network's services are and who you are there, kept under a name so that commands need no flags:
/// `orrery context set prod --orchestrator … --key …`, `orrery context use prod`.
struct CLIContext: Codable, Equatable {
    var identity: String?
    var registry: String?
    var orchestrator: String?
    var notary: String?
    var settlement: String?
    var key: String?
    var proofs: [String]?
    /// PEM roots that verify the network's TLS certificates (plaintext calls when nil).
    var tlsCa: String?
}

/// The contexts file: `$XDG_CONFIG_HOME/orrery/contexts.json` (or `~/.config/orrery/contexts.json`).
struct CLIContexts: Codable {
    var current: String?
    var contexts: [String: CLIContext] = [:]

    static var file: URL {
        let environment = ProcessInfo.processInfo.environment
        let config =
            environment["XDG_CONFIG_HOME"].flatMap { $0.hasPrefix("/") ? $0 : nil }
            ?? ((environment["HOME"] ?? NSHomeDirectory()) + "/.config")
        return URL(fileURLWithPath: config).appendingPathComponent("orrery/contexts.json")
    }

    static func load() throws -> CLIContexts {
        guard let data = FileManager.default.contents(atPath: file.path) else { return CLIContexts() }
        do {
            return try JSONDecoder().decode(CLIContexts.self, from: data)
        } catch {
            throw ValidationError("\(file.path) is not a contexts file: \(error)")
        }
    }

    func save() throws {
        try FileManager.default.createDirectory(
            at: Self.file.deletingLastPathComponent(), withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(self).write(to: Self.file, options: .atomic)
    }

    /// The context in use: `$ORRERY_CONTEXT`, else the one `orrery context use` chose; none when there is none.
    static func inUse() -> (name: String, context: CLIContext)? {
        guard let contexts = try? load() else { return nil }
        let name = ProcessInfo.processInfo.environment["ORRERY_CONTEXT"] ?? contexts.current
        guard let name, let context = contexts.contexts[name] else { return nil }
        return (name, context)
    }
}

/// How a command finds what it was not told by a flag: `ORRERY_KEY` for the key, then the context in use, then
/// `make run`'s addresses.
enum CLISettings {
    static func address(_ flag: String?, service: String) -> String {
        if let flag { return flag }
        let fromContext = CLIContexts.inUse().flatMap { contextAddress($0.context, service: service) }
        return fromContext ?? AuthorizedCall.makeRunAddresses[service] ?? "127.0.0.1:7403"
    }

    /// The address of `service`: the flag, the context's, else the address the orchestrator (`orchestrator`, else
    /// the context's, else make run's) says it calls that service at — so a context or a command that names only
    /// the orchestrator reaches the registry, the notary and the settlement gateway — else make run's.
    static func discoveredAddress(
        _ flag: String?, service: String, orchestrator: String? = nil, trustRoots: String?
    ) async -> String {
        if let flag { return flag }
        if let context = CLIContexts.inUse()?.context, let named = contextAddress(context, service: service) {
            return named
        }
        if service != "orchestrator",
            let found = await peer(
                service, orchestrator: address(orchestrator, service: "orchestrator"), trustRoots: trustRoots)
        {
            return found
        }
        return address(nil, service: service)
    }

    /// Where the orchestrator at `orchestrator` calls `service`, from its open `Info` (nil when it cannot say within
    /// 5 s).
    private static func peer(_ service: String, orchestrator: String, trustRoots: String?) async -> String? {
        guard let target = ServiceAddress(orchestrator) else { return nil }
        return await withTaskGroup(of: String?.self) { group in
            group.addTask {
                let info = try? await ServiceProbe.withClient(target, trustRoots: trustRoots) {
                    try await ServiceProbe.info($0)
                }
                guard let info, info.name == "orchestrator" else { return nil }
                return info.services.first { $0.name == service }?.address
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(5))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    private static func contextAddress(_ context: CLIContext, service: String) -> String? {
        switch service {
        case "identity": context.identity
        case "registry": context.registry
        case "orchestrator": context.orchestrator
        case "contract-notary": context.notary
        case "settlement-gateway": context.settlement
        default: nil
        }
    }

    static func key(_ flag: String?) -> String? {
        flag ?? ProcessInfo.processInfo.environment["ORRERY_KEY"] ?? CLIContexts.inUse()?.context.key
    }

    static func requireKey(_ flag: String?) throws {
        guard key(flag) != nil else {
            throw ValidationError(
                "no key: give --key FILE, set ORRERY_KEY, or keep one in a context (orrery context set NAME --key FILE)"
            )
        }
    }

    static func proofs(_ flag: [String]) -> [String] {
        flag.isEmpty ? CLIContexts.inUse()?.context.proofs ?? [] : flag
    }

    /// The PEM roots to verify the services' TLS certificates with: the flag, else `ORRERY_TLS_CA`, else the
    /// context's; nil (plaintext) when none names any.
    static func trustRoots(_ flag: String?) -> String? {
        let named = flag ?? ProcessInfo.processInfo.environment["ORRERY_TLS_CA"] ?? CLIContexts.inUse()?.context.tlsCa
        return named.flatMap { $0.isEmpty ? nil : $0 }
    }
}

/// How the CLI reaches the services: over TLS verified against `--tls-ca` (or `ORRERY_TLS_CA`, or the context's),
/// else plaintext. Every command that calls a service includes it.
struct TLSOptions: ParsableArguments {
    @Option(
        name: .customLong("tls-ca"),
        help:
            "PEM roots to verify the services' TLS certificates (default: $ORRERY_TLS_CA, else the context's; plaintext when none)."
    )
    var tlsCaFlag: String?

    /// The roots to verify with; nil for plaintext.
    var trustRoots: String? { CLISettings.trustRoots(tlsCaFlag) }

    func validate() throws {
        if let trustRoots, !FileManager.default.isReadableFile(atPath: trustRoots) {
            throw ValidationError("--tls-ca: cannot read \(trustRoots)")
        }
    }
}

/// Who calls a service: the key and delegation chain, from the flags, `ORRERY_KEY` or the context in use. Every
/// command that makes an authorised call includes it.
struct CallerOptions: ParsableArguments {
    @Option(name: .customLong("key"), help: "Your key file (default: $ORRERY_KEY, else the context's).")
    var keyFlag: String?
    @Option(
        name: .customLong("proof"),
        help: "Your delegation chain (repeatable; none when you are the operator; default: the context's).")
    var proofFlag: [String] = []
    @OptionGroup var tls: TLSOptions

    /// The key file to sign with (`validate` made sure there is one).
    var key: String { CLISettings.key(keyFlag) ?? "" }
    var proof: [String] { CLISettings.proofs(proofFlag) }
    /// The PEM roots the services' certificates are verified with; nil for plaintext.
    var trustRoots: String? { tls.trustRoots }

    func validate() throws { try CLISettings.requireKey(keyFlag) }
}

/// `orrery context`: named sets of addresses and credentials.
struct ContextCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "context",
        abstract: "Keep a network's addresses and your key under a name, so commands need no flags.",
        discussion: "Flags win over ORRERY_KEY, which wins over the context in use ($ORRERY_CONTEXT, else `use`).",
        subcommands: [Set.self, Use.self, List.self, Show.self, Remove.self], defaultSubcommand: List.self)

    struct Set: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create or change a context (only the values given change).")
        @Argument(help: "The context's name.") var name: String
        @Option(help: "The identity service, host:port.") var identity: String?
        @Option(help: "The registry, host:port.") var registry: String?
        @Option(help: "The orchestrator, host:port.") var orchestrator: String?
        @Option(help: "The contract notary, host:port.") var notary: String?
        @Option(help: "The settlement gateway, host:port.") var settlement: String?
        @Option(help: "Your key file.") var key: String?
        @Option(help: "Your delegation chain (repeatable).") var proof: [String] = []
        @Option(help: "PEM roots that verify the network's TLS certificates (its CA).") var tlsCa: String?

        func validate() throws {
            guard !name.isEmpty, name.count <= 64, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) })
            else { throw ValidationError("a context's name: 1–64 letters, digits, '-', '_' or '.'") }
            for address in [identity, registry, orchestrator, notary, settlement].compactMap({ $0 })
            where ServiceAddress(address) == nil {
                throw ValidationError("'\(address)' is not host:port")
            }
        }

        func run() throws {
            var contexts = try CLIContexts.load()
            var context = contexts.contexts[name] ?? CLIContext()
            func absolute(_ path: String) -> String {
                URL(fileURLWithPath: path).standardizedFileURL.path
            }
            context.identity = identity ?? context.identity
            context.registry = registry ?? context.registry
            context.orchestrator = orchestrator ?? context.orchestrator
            context.notary = notary ?? context.notary
            context.settlement = settlement ?? context.settlement
            context.key = key.map(absolute) ?? context.key
            if !proof.isEmpty { context.proofs = proof.map(absolute) }
            context.tlsCa = tlsCa.map(absolute) ?? context.tlsCa
            contexts.contexts[name] = context
            if contexts.current == nil { contexts.current = name }
            try contexts.save()
            print("context \(name) saved in \(CLIContexts.file.path)\(contexts.current == name ? " (in use)" : "")")
        }
    }

    struct Use: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Use a context from now on.")
        @Argument(help: "The context's name.") var name: String

        func run() throws {
            var contexts = try CLIContexts.load()
            guard contexts.contexts[name] != nil else {
                throw ValidationError(
                    "no context \(name) (there are: \(contexts.contexts.keys.sorted().joined(separator: ", ")))")
            }
            contexts.current = name
            try contexts.save()
            print("using context \(name)")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the contexts; * marks the one in use.")

        func run() throws {
            let contexts = try CLIContexts.load()
            let inUse = CLIContexts.inUse()?.name
            if contexts.contexts.isEmpty { print("no contexts (orrery context set NAME --orchestrator … --key …)") }
            for name in contexts.contexts.keys.sorted() {
                let context = contexts.contexts[name]
                print("\(name == inUse ? "*" : " ") \(name)  \(context?.orchestrator ?? "-")  \(context?.key ?? "-")")
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a context (default: the one in use) as JSON.")
        @Argument(help: "The context's name.") var name: String?

        func run() throws {
            let contexts = try CLIContexts.load()
            guard let name = name ?? CLIContexts.inUse()?.name, let context = contexts.contexts[name] else {
                throw ValidationError("no such context")
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(context), as: UTF8.self))
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Forget a context.")
        @Argument(help: "The context's name.") var name: String

        func run() throws {
            var contexts = try CLIContexts.load()
            guard contexts.contexts.removeValue(forKey: name) != nil else {
                throw ValidationError("no context \(name)")
            }
            if contexts.current == name { contexts.current = nil }
            try contexts.save()
            print("context \(name) removed")
        }
    }
}

/// `orrery version`.
struct VersionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Print the CLI's version.")

    func run() {
        print("orrery \(ServiceInfo.version) (build \(ProcessInfo.processInfo.environment["ORRERY_BUILD"] ?? "dev"))")
    }
}
