import NIOCore
import NIOPosix
import OrreryRuntimeCore
import Testing

@Suite("Event loop task executor")
struct EventLoopTaskExecutorTests {
    @Test("a task preferring it, and its child tasks, run on the event loop's thread, before and after suspending")
    func runsOnTheLoop() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let executor = EventLoopTaskExecutor(group.next())
        #expect(!executor.eventLoop.inEventLoop)
        let seen = try await withTaskExecutorPreference(executor) {
            var seen = [executor.eventLoop.inEventLoop]
            // Resumed by the loop itself, and after a sleep.
            try await executor.eventLoop.scheduleTask(in: .milliseconds(5)) {}.futureResult.get()
            seen.append(executor.eventLoop.inEventLoop)
            try await Task.sleep(for: .milliseconds(5))
            seen.append(executor.eventLoop.inEventLoop)
            seen += await withTaskGroup(of: Bool.self) { children in
                for _ in 0..<4 { children.addTask { executor.eventLoop.inEventLoop } }
                return await children.reduce(into: []) { $0.append($1) }
            }
            return seen
        }
        #expect(seen == Array(repeating: true, count: 7))
        let unstructured = await Task(executorPreference: executor) { executor.eventLoop.inEventLoop }.value
        #expect(unstructured)
        try await group.shutdownGracefully()
    }
}
