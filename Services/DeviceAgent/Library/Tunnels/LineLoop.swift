internal import NIOCore
internal import NIOPosix
internal import OrreryRuntimeCore

/// The one event loop an agent's orchestrator lines, the connections it carries over them (into sandboxes, out of
/// them to ensemble partners) and the tasks that carry their bytes run on: a frame read from a line resumes the task
/// that writes it to a sandbox's socket on the same thread, and back — no thread woken between them, which on a
/// small, busy machine is most of a message's time through the agent.
enum LineLoop {
    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    static let executor = EventLoopTaskExecutor(group.next())
}
