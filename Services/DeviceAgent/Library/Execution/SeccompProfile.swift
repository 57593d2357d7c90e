/// The system-call filter every image runs under: everything a program normally uses is allowed; what only an
/// administrator of the host needs — loading kernel code, mounting, tracing other processes, the kernel keyring,
/// BPF, clocks, reboots, swap, raw I/O ports — fails with EPERM. (A list of refusals rather than Docker's list of
/// permissions: no image breaks on a new ordinary system call; the refusals are the ones whose absence of
/// capabilities alone has not always been enough.)
struct SeccompProfile: Encodable {
    struct Rule: Encodable {
        var names: [String]
        var action: String
        var errnoRet: UInt32?
    }
    var defaultAction = "SCMP_ACT_ALLOW"
    var architectures: [String]
    var syscalls: [Rule]

    /// System calls refused inside a sandbox.
    static let refused = [
        "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module",
        "finit_module", "fsconfig", "fsmount", "fsopen", "fspick", "get_kernel_syms", "init_module", "ioperm", "iopl",
        "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mount", "mount_setattr", "move_mount",
        "name_to_handle_at", "nfsservctl", "open_by_handle_at", "open_tree", "perf_event_open", "pivot_root",
        "process_vm_readv", "process_vm_writev", "ptrace", "query_module", "quotactl", "quotactl_fd", "reboot",
        "request_key", "setns", "settimeofday", "stime", "swapoff", "swapon", "sysfs", "_sysctl", "umount", "umount2",
        "unshare", "uselib", "userfaultfd", "ustat", "vm86", "vm86old",
    ]

    /// The profile for this machine's architecture (and its 32-bit compatibility ABI).
    static var standard: SeccompProfile {
        #if arch(x86_64)
            let architectures = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        #elseif arch(arm64)
            let architectures = ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
        #else
            let architectures: [String] = []
        #endif
        return SeccompProfile(
            architectures: architectures,
            syscalls: [Rule(names: refused, action: "SCMP_ACT_ERRNO", errnoRet: 1)])
    }
}
