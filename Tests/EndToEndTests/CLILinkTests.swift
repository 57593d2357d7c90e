import Foundation
import OrreryTestSupport
import Testing

/// The `orrery` CLI shares code with the services only through shared targets (the spec file reader, the address
/// binding text, the runtime's core): it links no service library and no server runtime.
@Suite("The CLI links no service library")
struct CLILinkTests {
    @Test("no service library, no server runtime, no PostgreSQL client, no HTTP server framework in the orrery binary")
    func linksNoServiceLibrary() throws {
        let image = try Data(contentsOf: TestEnvironment.executable("orrery"))
        // Swift's mangled names carry each module's name with its length: present for what the binary links,
        // absent for what it must not.
        func links(_ module: String) -> Bool { image.range(of: Data("\(module.utf8.count)\(module)".utf8)) != nil }
        #expect(links("OrreryRuntimeCore"))
        #expect(links("OrreryWorkloadSpec"))
        for module in [
            "OrchestratorService", "SettlementService", "RegistryService", "NotaryService", "IdentityService",
            "OrreryRuntime", "OrreryDatabase", "PostgresNIO", "Hummingbird",
        ] {
            #expect(!links(module), "the orrery binary links \(module)")
        }
    }
}
