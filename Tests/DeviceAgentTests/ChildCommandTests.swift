import Foundation
import OrreryBasics
import Testing

/// The agent's helper programs (curl, tar, nvidia-smi) run through `ChildCommand`, not Foundation's `Process`.
@Suite("Child commands: status, captured output, nothing inherited")
struct ChildCommandTests {
    @Test("the exit status, standard output and standard error come back apart; a signal reads as 128 + its number")
    func statusAndOutput() async throws {
        let ended = try await ChildCommand.run("/bin/sh", ["-c", "echo out; echo err >&2; exit 3"])
        #expect(ended.status == 3)
        #expect(String(decoding: ended.output, as: UTF8.self) == "out\n")
        #expect(ended.errorText == "err")
        let killed = try await ChildCommand.run("/bin/sh", ["-c", "kill -9 $$"])
        #expect(killed.status == 137)
        // Large output on both streams at once: neither pipe may block the other.
        let large = try ChildCommand.runAndWait(
            "/bin/sh", ["-c", "head -c 300000 /dev/zero; head -c 300000 /dev/zero >&2"])
        #expect(large.status == 0 && large.output.count == 300_000 && large.errors.count == 300_000)
        #expect(throws: ChildCommand.CannotStart.self) { try ChildCommand.runAndWait("/no/such/program", []) }
    }

    @Test("a descriptor this process holds open is not inherited by the child")
    func inheritsNothing() throws {
        // Opened without close-on-exec, as a library might.
        let leaked = open("/dev/null", O_RDONLY)
        try #require(leaked > 2)
        defer { close(leaked) }
        let listed = try ChildCommand.runAndWait("/bin/sh", ["-c", "ls /proc/$$/fd"])
        #expect(listed.status == 0, "\(listed.errorText)")
        let descriptors = String(decoding: listed.output, as: UTF8.self).split(separator: "\n").compactMap { Int32($0) }
        #expect(descriptors.contains(1), "the listing itself works: \(descriptors)")
        #expect(!descriptors.contains(leaked), "descriptor \(leaked) leaked into the child: \(descriptors)")
    }
}
