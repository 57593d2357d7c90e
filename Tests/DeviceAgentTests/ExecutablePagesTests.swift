import DeviceAgent
import Foundation
import Testing

/// Which of its own mappings the agent gives back after start-up: only the executable's, and only those holding no
/// private copy (code, untouched read-only data) — never relocated data, heap or another file.
@Suite("Executable pages")
struct ExecutablePagesTests {
    static let smaps = """
        55ffbc413000-55ffbf96b000 r-xp 00000000 fe:00 5424398                    /opt/orrery/bin/device-agent
        Size:              54624 kB
        Rss:                5920 kB
        Private_Dirty:         0 kB
        Anonymous:             0 kB
        55ffbf96b000-55ffbfacd000 r--p 03557000 fe:00 5424398                    /opt/orrery/bin/device-agent
        Rss:                1416 kB
        Private_Dirty:      1416 kB
        Anonymous:          1416 kB
        55ffbfacd000-55ffc20a2000 rw-p 036b9000 fe:00 5424398                    /opt/orrery/bin/device-agent
        Rss:                4016 kB
        Anonymous:           488 kB
        55ffc20a2000-55ffc20a3000 r--p 036c0000 fe:00 5424398                    /opt/orrery/bin/device-agent
        Rss:                   4 kB
        Private_Dirty:         0 kB
        Anonymous:             0 kB
        7f629c844000-7f629c99a000 r-xp 00028000 fe:00 1234                       /usr/lib/x86_64-linux-gnu/libc.so.6
        Rss:                1136 kB
        Anonymous:             0 kB
        7f6294000000-7f62940b4000 rw-p 00000000 00:00 0
        Rss:                 720 kB
        Anonymous:           720 kB
        """

    @Test("the executable's clean read-only mappings are chosen; relocated data, writable data and other files are not")
    func choice() {
        let chosen = ExecutablePages.cleanMappings(smaps: Self.smaps, executable: "/opt/orrery/bin/device-agent")
        #expect(chosen.map(\.start) == [0x55ff_bc41_3000, 0x55ff_c20a_2000])
        #expect(chosen.map { Int($0.length) } == [55_934_976, 4096])
        #expect(ExecutablePages.cleanMappings(smaps: Self.smaps, executable: "/other").isEmpty)
    }

    @Test("releasing this test process's own clean executable pages leaves it running and lowers its file-backed RSS")
    func releaseOwnPages() throws {
        func fileRSS() -> Int {
            let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
            let line = status.split(separator: "\n").first { $0.hasPrefix("RssFile:") } ?? ""
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? 0
        }
        let before = fileRSS()
        let released = ExecutablePages.release()
        let after = fileRSS()
        #expect(released > 0)
        #expect(after < before, "RssFile \(before) kB → \(after) kB")
        // Still working: the code released above faults back in as this test (and the others) go on.
        #expect(fileRSS() > 0)
    }
}
