import Foundation
import OrreryIdentity
import OrreryProto
import OrreryTestSupport
import Testing

@testable import OrchestratorService
@testable import OrreryAuth

/// `docs/ARCHITECTURE.md` states two tables the code defines; these tests keep them equal.
@Suite("docs/ARCHITECTURE.md agrees with the code")
struct ArchitectureDocumentTests {
    static func section(_ name: String) throws -> [Substring] {
        let text = try String(
            contentsOf: TestEnvironment.repositoryRoot.appendingPathComponent("docs/ARCHITECTURE.md"), encoding: .utf8)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let begin = try #require(lines.firstIndex(of: "<!-- \(name): begin -->"[...]), "no \(name) section")
        let end = try #require(lines.firstIndex(of: "<!-- \(name): end -->"[...]), "no end of the \(name) section")
        return Array(lines[(begin + 1)..<end])
    }

    @Test("the lifecycle diagram draws exactly DeploymentLifecycle.moves, and its final states are the terminal ones")
    func lifecycle() throws {
        typealias State = Orrery_Orchestrator_V1_DeploymentState
        let byName = Dictionary(uniqueKeysWithValues: State.allCases.map { ("\($0)", $0) })
        var drawn: Set<[State]> = []
        var final: Set<State> = []
        for line in try Self.section("lifecycle") {
            let parts = line.split(separator: ":", maxSplits: 1)[0].split(separator: "-->").map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            guard parts.count == 2 else { continue }
            if parts[0] == "[*]" {
                #expect(parts[1] == "submitted")
                continue
            }
            let from = try #require(byName[parts[0]], "\(parts[0]) is not a deployment state")
            if parts[1] == "[*]" {
                final.insert(from)
                continue
            }
            let to = try #require(byName[parts[1]], "\(parts[1]) is not a deployment state")
            drawn.insert([from, to])
        }
        let defined = Set(DeploymentLifecycle.moves.flatMap { from, tos in tos.map { [from, $0] } })
        #expect(
            drawn == defined,
            "drawn but not allowed: \(drawn.subtracting(defined)); allowed but not drawn: \(defined.subtracting(drawn))"
        )
        #expect(final == Set(State.allCases.filter(\.isTerminal)))
    }

    @Test(
        "the table of authorisation exceptions lists exactly the methods whose command is not derived, with their commands"
    )
    func authorisationExceptions() throws {
        let catalog = try MethodCatalog(descriptorSet: Data(base64Encoded: OrreryDescriptorSet.base64) ?? Data())
        var listed: [String: String] = [:]
        for line in try Self.section("authorisation-exceptions") where line.hasPrefix("| `") {
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            listed[cells[0].trimmingCharacters(in: ["`"])] = cells[1].trimmingCharacters(in: ["`"])
        }
        let exceptions = Set(MethodCatalog.overrides.keys).union(MethodCatalog.subjectRooted)
        #expect(Set(listed.keys) == exceptions)
        for (method, command) in listed {
            #expect(catalog[method]?.command.string == command, "\(method)")
        }
    }
}
