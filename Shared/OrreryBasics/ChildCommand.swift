internal import Dispatch

/// Runs a helper program (curl, tar, nvidia-smi) to its end with `posix_spawn`, its standard output and error
/// captured, without Foundation's `Process`. The waiting happens on a Dispatch thread, never on a thread of the
/// concurrency pool, so a slow download does not stall other work.
public enum ChildCommand {
    /// How a command ended.
    public struct Outcome: Sendable {
        /// The exit status; 128 + the signal's number when a signal ended it.
        public var status: Int32
        public var output: [UInt8]
        public var errors: [UInt8]
        /// The standard error as text, trimmed.
        public var errorText: String { String(decoding: errors, as: UTF8.self).trimmed() }
    }

    /// The command could not be started.
    public struct CannotStart: Error, CustomStringConvertible {
        public let executable: String
        public let code: Int32
        public var description: String { "cannot start \(executable): \(systemErrorText(code))" }
    }

    /// Runs `executable` (an absolute path) with `arguments` and waits for it. `standardInput`: a descriptor of this
    /// process the child reads as its standard input (a socket to hand it something); nil: /dev/null.
    public static func run(
        _ executable: String, _ arguments: [String], captureOutput: Bool = true, standardInput: Int32? = nil
    ) async throws -> Outcome {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(
                    with: Result {
                        try runAndWait(
                            executable, arguments, captureOutput: captureOutput, standardInput: standardInput)
                    })
            }
        }
    }

    /// Runs `executable` with `arguments` and blocks the calling thread until it ends.
    public static func runAndWait(
        _ executable: String, _ arguments: [String], captureOutput: Bool = true, standardInput: Int32? = nil
    ) throws -> Outcome {
        var outputPipe: [Int32] = [-1, -1]
        var errorPipe: [Int32] = [-1, -1]
        guard makePipe(&errorPipe) else { throw CannotStart(executable: executable, code: errno) }
        if captureOutput {
            guard makePipe(&outputPipe) else {
                close(errorPipe[0])
                close(errorPipe[1])
                throw CannotStart(executable: executable, code: errno)
            }
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let standardInput {
            posix_spawn_file_actions_adddup2(&actions, standardInput, 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        if captureOutput {
            posix_spawn_file_actions_adddup2(&actions, outputPipe[1], 1)
        } else {
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        }
        posix_spawn_file_actions_adddup2(&actions, errorPipe[1], 2)
        closeInheritedDescriptors(&actions)
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let started = argv.withUnsafeBufferPointer { buffer in
            guard let base = buffer.baseAddress else { return EINVAL }
            return posix_spawn(&pid, executable, &actions, nil, base, environ)
        }
        close(errorPipe[1])
        if captureOutput { close(outputPipe[1]) }
        guard started == 0 else {
            close(errorPipe[0])
            if captureOutput { close(outputPipe[0]) }
            throw CannotStart(executable: executable, code: started)
        }
        // Both pipes drained at once, so that a child filling one of them never blocks.
        let output = Captured()
        let drained = DispatchGroup()
        if captureOutput {
            let descriptor = outputPipe[0]
            DispatchQueue.global().async(group: drained) {
                output.bytes = readToEnd(descriptor)
                close(descriptor)
            }
        }
        let errors = readToEnd(errorPipe[0])
        close(errorPipe[0])
        drained.wait()
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exited = status & 0x7f == 0
        return Outcome(
            status: exited ? (status >> 8) & 0xff : 128 + (status & 0x7f), output: output.bytes, errors: errors)
    }

    /// A pipe whose two ends are not inherited by children other than through an explicit dup2.
    private static func makePipe(_ ends: inout [Int32]) -> Bool {
        guard pipe(&ends) == 0 else { return false }
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        return true
    }

    /// Bytes one Dispatch block writes and the spawning thread reads after `DispatchGroup.wait()`.
    private final class Captured: @unchecked Sendable {
        var bytes: [UInt8] = []
    }
}

/// Makes a spawned child inherit no descriptor above standard error: glibc's `posix_spawn_file_actions_addclosefrom_np`
/// (2.34+, found at run time), else every open descriptor of this process marked close-on-exec first.
public func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) {
    typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    if let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") {
        let closeFrom = unsafeBitCast(symbol, to: CloseFrom.self)
        if closeFrom(&actions, 3) == 0 { return }
    }
    guard let directory = opendir("/proc/self/fd") else { return }
    defer { closedir(directory) }
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        guard let descriptor = Int32(name), descriptor > 2 else { continue }
        _ = fcntl(descriptor, F_SETFD, fcntl(descriptor, F_GETFD) | FD_CLOEXEC)
    }
}
