import ArgumentParser
import Testing

@testable import OrreryRuntime
@testable import OrreryRuntimeCore

@Suite("A refused setting names the flag that sets it")
struct ConfigurationErrorTests {
    @Test("every flag an error names is one the services accept; a key whose flag differs names the real flag")
    func flagsExist() {
        let help = RuntimeOptions.helpMessage(columns: 1000)
        for (key, flag) in ConfigurationError.flags {
            #expect(help.contains("\(flag) "), "\(key) names \(flag), which is not an option")
        }
        #expect(ConfigurationError(key: "auth.clock_skew", reason: "x").description.contains("(--clock-skew,"))
        #expect(ConfigurationError(key: "connections.max", reason: "x").description.contains("(--max-connections,"))
    }
}
