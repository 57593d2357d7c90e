public import ArgumentParser

/// Exit codes the services share (sysexits.h): 0 a clean stop, 64–78 a configuration problem, 1 anything else.
extension ExitCode {
    /// EX_USAGE: the command line was wrong.
    public static let usage = ExitCode(64)
    /// EX_UNAVAILABLE: a service this one needs (PostgreSQL) cannot be reached.
    public static let unavailable = ExitCode(69)
    /// EX_SOFTWARE: the database holds a schema newer than this binary knows.
    public static let software = ExitCode(70)
    /// EX_CANTCREAT: a file this service must write (ready file, state) cannot be created.
    public static let cannotCreate = ExitCode(73)
    /// EX_CONFIG: a setting is invalid.
    public static let configuration = ExitCode(78)
}
