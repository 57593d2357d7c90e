import Foundation
import OrreryTestSupport
import Testing

@testable import DeviceAgent

/// The window an output is streamed to the content store with: what it sends for each answer.
@Suite("Content store uploads")
struct StoreUploadTests {
    static let mebibyte = Int64(1 << 20)

    static func upload(size: Int64, window: Int64 = 4 << 20) -> StoreUpload {
        var upload = StoreUpload(offerID: "off_1", path: "big.bin", file: "/nonexistent", size: size, sha256: "")
        upload.window = window
        return upload
    }

    @Test("answers that match what was sent refill the window one chunk each, to the end")
    func pipelines() {
        var upload = Self.upload(size: 10 * Self.mebibyte + 5)
        let first = upload.restart()
        #expect(first.map(\.offset) == [0, 1, 2, 3].map { $0 * Self.mebibyte })
        var sent = first.count
        var stored: Int64 = 0
        while !upload.isDone {
            stored = min(stored + Self.mebibyte, 10 * Self.mebibyte + 5)
            let more = upload.answered(stored: stored)
            #expect(more.count <= 1)
            sent += more.count
        }
        #expect(sent == 11)
        #expect(upload.stored == 10 * Self.mebibyte + 5)
    }

    @Test(
        "after a reconnect the store may hold more than was known: answers that do not match drain the window, then sending goes on from what it holds"
    )
    func resumesFromTheStore() {
        var upload = Self.upload(size: 20 * Self.mebibyte)
        _ = upload.restart()
        _ = upload.answered(stored: Self.mebibyte)
        // The line broke; the store took 6 MiB meanwhile. Restarted from the last answer known (1 MiB).
        let resent = upload.restart()
        #expect(resent.first?.offset == Self.mebibyte)
        #expect(resent.count == 4)
        // Each resent chunk is answered with 6 MiB: no match, nothing sent until the last answer, then from 6 MiB.
        #expect(upload.answered(stored: 6 * Self.mebibyte).isEmpty)
        #expect(upload.answered(stored: 6 * Self.mebibyte).isEmpty)
        #expect(upload.answered(stored: 6 * Self.mebibyte).isEmpty)
        let next = upload.answered(stored: 6 * Self.mebibyte)
        #expect(next.map(\.offset) == [6, 7, 8, 9].map { $0 * Self.mebibyte })
    }

    @Test("a chunk the store did not take (answered with less) is sent again once the window drained")
    func resendsARefusedChunk() {
        var upload = Self.upload(size: 8 * Self.mebibyte)
        _ = upload.restart()  // 0, 1, 2, 3 MiB in flight
        // The first chunk arrived damaged: the store holds nothing; the rest are answered 0 too.
        #expect(upload.answered(stored: 0).isEmpty)
        #expect(upload.answered(stored: 0).isEmpty)
        #expect(upload.answered(stored: 0).isEmpty)
        let again = upload.answered(stored: 0)
        #expect(again.first?.offset == 0)
        #expect(again.count == 4)
    }

    @Test("an ended allocation's output bound for the content store is pending until the store answered for good")
    func pendingUntilAnswered() throws {
        try TestEnvironment.withTemporaryDirectory("orrery-store-pending") { directory in
            let runner = AllocationRunner(root: directory.path, cgroups: nil)
            try FileManager.default.createDirectory(
                atPath: runner.directory("off_1"), withIntermediateDirectories: true)
            #expect(!runner.hasPendingStoreUploads("off_1"))
            try runner.saveUploadedOutputs(
                "off_1",
                [
                    .init(path: "big.bin", sha256: "ab", size: 5 << 20, location: "store"),
                    .init(path: "s3.bin", sha256: "cd", size: 9 << 20, location: "s3://b/k"),
                ])
            #expect(runner.hasPendingStoreUploads("off_1"))
            try runner.markStoreUploadEnded("off_1", path: "big.bin")
            #expect(!runner.hasPendingStoreUploads("off_1"))
        }
    }
}
