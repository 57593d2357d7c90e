public import Foundation

/// Where tests find what `make test` prepared: the built executables, the throwaway PostgreSQL, the Python venv.
public enum TestEnvironment {
    /// The folder holding the built executables: `ORRERY_BIN_DIR`, else the folder of the running test binary.
    public static var binDirectory: URL {
        if let path = ProcessInfo.processInfo.environment["ORRERY_BIN_DIR"], !path.isEmpty {
            return URL(fileURLWithPath: path)
        }
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return executable.deletingLastPathComponent()
    }

    /// The built executable named `name`.
    public static func executable(_ name: String) -> URL {
        binDirectory.appendingPathComponent(name)
    }

    /// The repository's root (the folder holding Package.swift), found from this source file.
    public static var repositoryRoot: URL {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url }
        }
        return URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
    }

    /// The Python of the test venv (`ORRERY_TEST_PYTHON`, else `.venv-test/bin/python`), used for independent checks.
    public static var python: URL {
        if let path = ProcessInfo.processInfo.environment["ORRERY_TEST_PYTHON"], !path.isEmpty {
            return URL(fileURLWithPath: path)
        }
        return repositoryRoot.appendingPathComponent(".venv-test/bin/python")
    }

    /// A fresh temporary directory for `body`, removed afterwards however `body` ends (see `removeUnlessKept`).
    public static func withTemporaryDirectory<Result>(
        _ prefix: String = "orrery-test", _ body: (URL) throws -> Result
    ) throws -> Result {
        let directory = try temporaryDirectory(prefix)
        defer { removeUnlessKept(directory) }
        return try body(directory)
    }

    /// A fresh temporary directory for `body`, removed afterwards however `body` ends (see `removeUnlessKept`).
    public static func withTemporaryDirectory<Result>(
        _ prefix: String = "orrery-test", _ body: (URL) async throws -> Result
    ) async throws -> Result {
        let directory = try temporaryDirectory(prefix)
        defer { removeUnlessKept(directory) }
        return try await body(directory)
    }

    /// Removes a test's directory, unless `ORRERY_TEST_KEEP=1` asks to keep every one (its logs) for a look after;
    /// either way, what still runs from it is killed first (`killProcesses(startedFrom:)`).
    static func removeUnlessKept(_ directory: URL) {
        killProcesses(startedFrom: directory)
        guard ProcessInfo.processInfo.environment["ORRERY_TEST_KEEP"] != "1" else { return }
        try? FileManager.default.removeItem(at: directory)
    }

    /// Kills (SIGKILL) every process whose command line names a path inside `directory`: what a test's agents left
    /// running — their sandboxes (`launch.sh` in the agent's state directory, whose bubblewrap dies with it) outlive
    /// an agent by design, and would otherwise pile up over a whole test run. Returns how many were killed.
    @discardableResult
    public static func killProcesses(startedFrom directory: URL) -> Int {
        let prefix = Array((directory.standardizedFileURL.path + "/").utf8)
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return 0 }
        var killed = 0
        for entry in entries {
            guard let pid = Int32(entry), pid != getpid(),
                let cmdline = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline")
            else { continue }
            let names = cmdline.split(separator: 0).contains { $0.starts(with: prefix) }
            if names, kill(pid, SIGKILL) == 0 { killed += 1 }
        }
        return killed
    }

    /// A fresh temporary directory, removed by the caller (`withTemporaryDirectory` removes it for you).
    public static func temporaryDirectory(_ prefix: String = "orrery-test") throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent(
            "\(prefix)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}
