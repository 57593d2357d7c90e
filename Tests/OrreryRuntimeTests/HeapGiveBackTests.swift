import Foundation
import Logging
import Testing

@testable import OrreryRuntime

@Suite("Freed heap pages go back to the system", .serialized)
struct HeapGiveBackTests {
    @Test("the policy gives back when unused resident memory grew past the threshold, and not again for what stays")
    func policy() {
        func mebibytes(_ resident: Int, inUse: Int) -> HeapFigures {
            HeapFigures(anonymousResident: resident << 20, inUse: inUse << 20)
        }
        var policy = HeapGiveBackPolicy(threshold: 4 << 20)
        // The first figures are the floor (slack 4 MiB); growth in use is no slack; at the threshold not yet,
        // past it yes.
        let first = [
            mebibytes(10, inUse: 6), mebibytes(60, inUse: 56), mebibytes(14, inUse: 6), mebibytes(15, inUse: 6),
        ]
        #expect(first.map { policy.shouldGiveBack($0) } == [false, false, false, true])
        #expect(policy.floor == 4 << 20)
        // What a give-back could not return is the new floor: the same figures do not ask again.
        policy.gaveBack(mebibytes(12, inUse: 6))
        #expect(policy.floor == 6 << 20)
        #expect(policy.shouldGiveBack(mebibytes(12, inUse: 6)) == false)
        // A lower slack (pages reused) lowers the floor, and growth is counted from there.
        #expect(policy.shouldGiveBack(mebibytes(8, inUse: 6)) == false)
        #expect(policy.floor == 2 << 20)
        #expect(policy.shouldGiveBack(mebibytes(13, inUse: 6)) == true)
    }

    #if canImport(Glibc)
        /// Fills `mebibytes` of heap with 1 KiB blocks from one thread.
        static func fillHeap(mebibytes: Int) -> [UnsafeMutableRawPointer] {
            (0..<(mebibytes * 1024)).map { _ in
                let block = UnsafeMutableRawPointer.allocate(byteCount: 1000, alignment: 8)
                block.initializeMemory(as: UInt8.self, repeating: 0xA5, count: 1000)
                return block
            }
        }

        /// Frees all but one block in every 16 KiB, so no free page is at the top of the heap where glibc would
        /// return it by itself. Returns the kept blocks.
        static func freeMost(_ blocks: [UnsafeMutableRawPointer]) -> [UnsafeMutableRawPointer] {
            var kept: [UnsafeMutableRawPointer] = []
            for (index, block) in blocks.enumerated() {
                if index % 16 == 0 { kept.append(block) } else { block.deallocate() }
            }
            return kept
        }

        @Test("the figures count live allocations as in use and resident")
        func figuresSeeAllocations() throws {
            let before = try #require(HeapFigures.current())
            let blocks = (0..<128).map { _ in
                let block = UnsafeMutableRawPointer.allocate(byteCount: 1 << 20, alignment: 8)
                block.initializeMemory(as: UInt8.self, repeating: 1, count: 1 << 20)
                return block
            }
            defer { for block in blocks { block.deallocate() } }
            let after = try #require(HeapFigures.current())
            // Lower bounds the blocks alone reach, whatever the tests beside this one free meanwhile.
            #expect(after.inUse >= 128 << 20, "in use: \(after.inUse >> 20) MiB, before \(before.inUse >> 20) MiB")
            #expect(after.anonymousResident >= 128 << 20)
        }

        @Test("a give-back returns the whole free pages between live blocks, which the allocator keeps otherwise")
        func giveBackReturnsFreePages() throws {
            let kept = Self.freeMost(Self.fillHeap(mebibytes: 256))
            defer { for block in kept { block.deallocate() } }
            let before = try #require(HeapFigures.current())
            HeapGiveBack.giveBack()
            let after = try #require(HeapFigures.current())
            let returned = before.anonymousResident - after.anonymousResident
            #expect(returned > 128 << 20, "only \(returned >> 20) MiB of about 240 MiB of free pages were returned")
        }

        @Test("the running service gives freed pages back by itself")
        func serviceGivesBack() async throws {
            let service = HeapGiveBack(interval: .milliseconds(50), threshold: 64 << 20, logger: Logger(label: "test"))
            let running = Task { try await service.run() }
            defer { running.cancel() }
            try await Task.sleep(for: .milliseconds(200))  // its first figures are the floor
            let blocks = Self.fillHeap(mebibytes: 256)
            // Measured before any is freed: the worker may give pages back while the rest are being freed.
            let filled = try #require(HeapFigures.current())
            let kept = Self.freeMost(blocks)
            defer { for block in kept { block.deallocate() } }
            // Positive evidence only: the resident figure falls by most of the freed pages (a loaded machine may
            // take a while to schedule the worker).
            var returned = 0
            for _ in 0..<600 where returned <= 128 << 20 {
                try await Task.sleep(for: .milliseconds(50))
                returned = filled.anonymousResident - (HeapFigures.current()?.anonymousResident ?? Int.max)
            }
            #expect(returned > 128 << 20, "the service returned \(returned >> 20) MiB of about 240 MiB of free pages")
        }
    #endif
}
