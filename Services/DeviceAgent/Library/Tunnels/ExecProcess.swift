#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
#if canImport(Glibc)
    internal import Glibc
#endif
internal import Dispatch
internal import OrreryBasics

/// A command started for an exec session: its process and the descriptors of its standard streams that the agent
/// owns — a pseudo-terminal's controller side, or three pipes. It starts with every signal at its default and none
/// blocked (the agent's own mask is not inherited), in a session of its own, with no descriptor of the agent's and
/// only the environment it is given.
final class ExecProcess: Sendable {
    let pid: pid_t
    /// The terminal's controller side (with a terminal); the agent reads the command's output and writes its input
    /// there.
    let terminal: Int32?
    /// Without a terminal: the pipe ends the agent writes standard input to and reads output and errors from.
    let input: Int32?
    let output: Int32?
    let errors: Int32?

    private init(pid: pid_t, terminal: Int32?, input: Int32?, output: Int32?, errors: Int32?) {
        self.pid = pid
        self.terminal = terminal
        self.input = input
        self.output = output
        self.errors = errors
    }

    /// A terminal's size in character cells.
    struct Size: Sendable, Equatable {
        var rows: UInt16
        var columns: UInt16
    }

    /// Why it could not start.
    struct CannotStart: Error, CustomStringConvertible {
        let description: String
    }

    /// Starts `arguments` (an absolute path first) with `environment` ("NAME=value" each): on a fresh
    /// pseudo-terminal of `size` when `terminal` is given, else on pipes.
    static func start(_ arguments: [String], environment: [String], terminal size: Size?) throws -> ExecProcess {
        guard let executable = arguments.first else { throw CannotStart(description: "no command") }
        var controller: Int32 = -1
        var childEnds: [Int32] = []
        var ownEnds: [Int32] = []
        func closeAll() {
            for descriptor in childEnds + ownEnds { close(descriptor) }
            if controller >= 0 { close(controller) }
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let size {
            let (opened, device) = try openTerminal(size)
            controller = opened
            childEnds = [device]
            for target in Int32(0)...2 { posix_spawn_file_actions_adddup2(&actions, device, target) }
        } else {
            var stdin: [Int32] = [-1, -1]
            var stdout: [Int32] = [-1, -1]
            var stderr: [Int32] = [-1, -1]
            for index in 0..<3 {
                let made: Bool
                switch index {
                case 0: made = pipe(&stdin) == 0
                case 1: made = pipe(&stdout) == 0
                default: made = pipe(&stderr) == 0
                }
                for end in stdin + stdout + stderr where end >= 0 { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
                guard made else {
                    let code = errno
                    closeAll()
                    for descriptor in stdin + stdout + stderr where descriptor >= 0 { close(descriptor) }
                    throw CannotStart(description: "no pipe: \(systemErrorText(code))")
                }
            }
            childEnds = [stdin[0], stdout[1], stderr[1]]
            ownEnds = [stdin[1], stdout[0], stderr[0]]
            posix_spawn_file_actions_adddup2(&actions, stdin[0], 0)
            posix_spawn_file_actions_adddup2(&actions, stdout[1], 1)
            posix_spawn_file_actions_adddup2(&actions, stderr[1], 2)
        }
        closeInheritedDescriptors(&actions)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(
            &attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | Self.newSessionFlag))
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
        defer { for pointer in argv + envp { free(pointer) } }
        var pid: pid_t = 0
        let started = argv.withUnsafeBufferPointer { arguments in
            envp.withUnsafeBufferPointer { environment in
                guard let arguments = arguments.baseAddress, let environment = environment.baseAddress else {
                    return EINVAL
                }
                return posix_spawn(&pid, executable, &actions, &attributes, arguments, environment)
            }
        }
        for descriptor in childEnds { close(descriptor) }
        guard started == 0 else {
            for descriptor in ownEnds { close(descriptor) }
            if controller >= 0 { close(controller) }
            throw CannotStart(description: "cannot start \(executable): \(systemErrorText(started))")
        }
        if size != nil { return ExecProcess(pid: pid, terminal: controller, input: nil, output: nil, errors: nil) }
        return ExecProcess(pid: pid, terminal: nil, input: ownEnds[0], output: ownEnds[1], errors: ownEnds[2])
    }

    /// glibc's POSIX_SPAWN_SETSID: the child starts a session of its own (no controlling terminal of the agent's).
    private static let newSessionFlag: Int32 = 0x80

    /// A new pseudo-terminal of `size`: its controller side and the device the command gets (opened from the
    /// controller itself, `TIOCGPTPEER`, so no other terminal can be opened in its place).
    private static func openTerminal(_ size: Size) throws -> (controller: Int32, device: Int32) {
        let controller = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard controller >= 0 else {
            throw CannotStart(description: "no pseudo-terminal: \(systemErrorText(errno))")
        }
        var unlocked: Int32 = 0
        guard ioctl(controller, Self.unlockTerminal, &unlocked) == 0 else {
            let code = errno
            close(controller)
            throw CannotStart(description: "cannot unlock the pseudo-terminal: \(systemErrorText(code))")
        }
        let device = ioctl(controller, Self.openPeer, O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard device >= 0 else {
            let code = errno
            close(controller)
            throw CannotStart(description: "cannot open the pseudo-terminal: \(systemErrorText(code))")
        }
        setSize(size, of: controller)
        return (controller, device)
    }

    /// Linux's `TIOCSPTLCK` and `TIOCGPTPEER` (the same on every architecture Orrery runs on).
    private static let unlockTerminal: UInt = 0x4004_5431
    private static let openPeer: UInt = 0x5441

    /// Sets the terminal's size (its foreground process group hears SIGWINCH).
    func resize(_ size: Size) {
        guard let terminal else { return }
        Self.setSize(size, of: terminal)
    }

    private static func setSize(_ size: Size, of descriptor: Int32) {
        var window = winsize(ws_row: size.rows, ws_col: size.columns, ws_xpixel: 0, ws_ypixel: 0)
        _ = ioctl(descriptor, UInt(TIOCSWINSZ), &window)
    }

    /// How it ended: its exit status (128 + the signal when one ended it) and the signal (0 when it exited).
    struct Ending: Sendable, Equatable {
        var exitCode: Int32
        var signal: Int32
    }

    /// Waits for the process to end (on a Dispatch thread: never one of the concurrency pool's).
    func wait() async -> Ending {
        let pid = pid
        return await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                var status: Int32 = 0
                while waitpid(pid, &status, 0) < 0 {
                    guard errno == EINTR else {
                        continuation.resume(returning: Ending(exitCode: 255, signal: 0))
                        return
                    }
                }
                let signal = status & 0x7f
                if signal == 0 {
                    continuation.resume(returning: Ending(exitCode: (status >> 8) & 0xff, signal: 0))
                } else {
                    continuation.resume(returning: Ending(exitCode: 128 + signal, signal: signal))
                }
            }
        }
    }
}
