internal import Foundation

extension Process {
    /// Starts the process and waits for it to end without holding a thread of the concurrency pool (a slow download
    /// must not stall the agent's other work); returns its exit status.
    func runToCompletion() async throws -> Int32 {
        try await withCheckedThrowingContinuation { continuation in
            terminationHandler = { process in continuation.resume(returning: process.terminationStatus) }
            do {
                try run()
            } catch {
                terminationHandler = nil
                continuation.resume(throwing: error)
            }
        }
    }
}
