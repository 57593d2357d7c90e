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

    @Test(
        "a large heap is trimmed only for slack worth a sixteenth of it, and looked at less often (both walk every arena)"
    )
    func largeHeap() {
        func mebibytes(_ resident: Int, inUse: Int) -> HeapFigures {
            HeapFigures(anonymousResident: resident << 20, inUse: inUse << 20)
        }
        var policy = HeapGiveBackPolicy(threshold: 2 << 20)
        // 1 GiB in use: 2 MiB, even 60 MiB more slack is not worth a walk of the arenas; 65 MiB is (over 64).
        #expect(policy.shouldGiveBack(mebibytes(1034, inUse: 1024)) == false)
        #expect(policy.shouldGiveBack(mebibytes(1037, inUse: 1024)) == false)
        #expect(policy.shouldGiveBack(mebibytes(1094, inUse: 1024)) == false)
        #expect(policy.shouldGiveBack(mebibytes(1099, inUse: 1024)) == true)
        // A small heap keeps the fixed threshold.
        var small = HeapGiveBackPolicy(threshold: 2 << 20)
        #expect(small.shouldGiveBack(mebibytes(40, inUse: 30)) == false)
        #expect(small.shouldGiveBack(mebibytes(43, inUse: 30)) == true)
        // The interval: the base up to 256 MiB in use, one more base per 256 MiB, at most twelve.
        let base = Duration.seconds(5)
        func interval(_ inUse: Int) -> Duration {
            HeapGiveBackPolicy.interval(after: mebibytes(inUse + 10, inUse: inUse), base: base)
        }
        #expect(interval(30) == .seconds(5))
        #expect(interval(255) == .seconds(5))
        #expect(interval(256) == .seconds(10))
        #expect(interval(1024) == .seconds(25))
        #expect(interval(100_000) == .seconds(60))
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
        /// return it by itself. Returns the kept blocks and the pages only freed blocks touched (page addresses,
        /// ascending): what a give-back can return.
        static func freeMost(_ blocks: [UnsafeMutableRawPointer]) -> (
            kept: [UnsafeMutableRawPointer], freedPages: [UInt]
        ) {
            let page = UInt(sysconf(Int32(_SC_PAGESIZE)))
            func pages(of block: UnsafeMutableRawPointer) -> ClosedRange<UInt> {
                let start = UInt(bitPattern: block)
                return (start / page)...((start + 999) / page)
            }
            var kept: [UnsafeMutableRawPointer] = []
            var keptPages = Set<UInt>()
            var freedPages = Set<UInt>()
            for (index, block) in blocks.enumerated() {
                if index % 16 == 0 {
                    kept.append(block)
                    keptPages.formUnion(pages(of: block))
                } else {
                    freedPages.formUnion(pages(of: block))
                    block.deallocate()
                }
            }
            return (kept, freedPages.subtracting(keptPages).sorted().map { $0 * page })
        }

        /// How many of `pages` (ascending page addresses, each mapped) are resident now, as `mincore` tells: the
        /// pages of these blocks only, whatever the rest of this test process allocates meanwhile.
        static func residentCount(_ pages: [UInt]) -> Int {
            let page = UInt(sysconf(Int32(_SC_PAGESIZE)))
            var resident = 0
            var index = 0
            while index < pages.count {
                // A run of consecutive pages: one call.
                var end = index + 1
                while end < pages.count, pages[end] == pages[end - 1] + page { end += 1 }
                var vector = [UInt8](repeating: 0, count: end - index)
                let answered = vector.withUnsafeMutableBufferPointer {
                    mincore(
                        UnsafeMutableRawPointer(bitPattern: pages[index]), (end - index) * Int(page), $0.baseAddress)
                }
                resident += answered == 0 ? vector.filter { $0 & 1 == 1 }.count : end - index
                index = end
            }
            return resident
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
            let (kept, freedPages) = Self.freeMost(Self.fillHeap(mebibytes: 256))
            defer { for block in kept { block.deallocate() } }
            // Counted on the freed blocks' own pages (not the process's resident figure, which the suites running
            // beside this one move): resident while the allocator keeps them, most of them gone after.
            let before = Self.residentCount(freedPages)
            HeapGiveBack.giveBack()
            let after = Self.residentCount(freedPages)
            #expect(freedPages.count > (64 << 20) / sysconf(Int32(_SC_PAGESIZE)), "\(freedPages.count) pages")
            #expect(before > freedPages.count * 9 / 10, "\(before) of \(freedPages.count) freed pages resident before")
            #expect(after < freedPages.count / 4, "\(after) of \(freedPages.count) freed pages still resident")
        }

        @Test("the running service gives freed pages back by itself")
        func serviceGivesBack() async throws {
            let service = HeapGiveBack(interval: .milliseconds(50), threshold: 64 << 20, logger: Logger(label: "test"))
            let running = Task { try await service.run() }
            defer { running.cancel() }
            try await Task.sleep(for: .milliseconds(200))  // its first figures are the floor
            let (kept, freedPages) = Self.freeMost(Self.fillHeap(mebibytes: 256))
            defer { for block in kept { block.deallocate() } }
            #expect(freedPages.count > (64 << 20) / sysconf(Int32(_SC_PAGESIZE)), "\(freedPages.count) pages")
            // Positive evidence only: most of the freed blocks' own pages stop being resident (a loaded machine may
            // take a while to schedule the worker).
            var resident = Self.residentCount(freedPages)
            for _ in 0..<600 where resident >= freedPages.count / 4 {
                try await Task.sleep(for: .milliseconds(50))
                resident = Self.residentCount(freedPages)
            }
            #expect(
                resident < freedPages.count / 4,
                "\(resident) of \(freedPages.count) freed pages still resident: the service did not give them back")
        }
    #endif
}
