public import NIOCore

/// A task executor that runs jobs on one NIO event loop. Tasks that prefer it (`withTaskExecutorPreference`,
/// `Task(executorPreference:)`) and the channels registered on that loop hand work to each other on one thread: a
/// byte read there resumes the task waiting for it without waking another thread, and the task's write goes out
/// without one either.
public final class EventLoopTaskExecutor: TaskExecutor {
    public let eventLoop: any EventLoop

    public init(_ eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
