/// An allocation's candidates, put in ranking order only as far as a search reads them: the next chunk (doubling
/// in size) is selected from the unsorted rest in linear time and sorted, so a search that stops after a few
/// hundred candidates never pays for sorting ten thousand.
final class RankedDomain {
    private var items: [Candidate]
    private var sortedCount = 0
    private var nextChunk = 64

    /// `ranked`: the items are already in the order the search should read them.
    init(_ items: [Candidate], ranked: Bool = false) {
        self.items = items
        if ranked { sortedCount = items.count }
    }

    var count: Int { items.count }

    /// The candidate at `position` in ranking order.
    subscript(position: Int) -> Candidate {
        if position >= sortedCount { sort(through: position) }
        return items[position]
    }

    /// Every candidate, in ranking order.
    var all: [Candidate] {
        if sortedCount < items.count { sort(through: items.count - 1) }
        return items
    }

    private func sort(through position: Int) {
        if sortedCount == 0, items.count >= 4096 { sortFirstChunk(through: position) }
        while sortedCount <= position {
            let end = min(items.count, sortedCount + nextChunk)
            items.withUnsafeMutableBufferPointer { buffer in
                if end < buffer.count { Self.select(buffer, from: sortedCount, upTo: buffer.count, kth: end) }
                buffer[sortedCount..<end].sort(by: PlacementSolver.precedes)
            }
            sortedCount = end
            nextChunk *= 2
        }
    }

    /// The first chunk of a large domain — about a sixty-fourth of it, at least through `position` — by one pass:
    /// a threshold cost from a sample, the candidates at or under it moved to the front and sorted. Cheaper than a
    /// selection, which compares and swaps every candidate several times; the search rarely reads past it. When the
    /// sample misjudged (too many ties at the threshold), nothing is taken as sorted and the selection goes on.
    private func sortFirstChunk(through position: Int) {
        let target = max(position + 1, nextChunk, items.count / 64)
        guard target < items.count / 2 else { return }
        let step = max(1, items.count / 512)
        var sample = stride(from: 0, to: items.count, by: step).map { items[$0].cost }
        sample.sort()
        // Where twice the target would fall, so that the chunk rarely comes out short.
        let threshold = sample[min(sample.count - 1, 2 * target * sample.count / items.count)]
        var front = 0
        items.withUnsafeMutableBufferPointer { buffer in
            for index in buffer.indices where buffer[index].cost <= threshold {
                if index != front { buffer.swapAt(index, front) }
                front += 1
            }
        }
        guard front <= 8 * target else { return }
        items[0..<front].sort(by: PlacementSolver.precedes)
        sortedCount = front
        while nextChunk < front { nextChunk *= 2 }
    }

    /// Rearranges `buffer[low..<high]` so that the elements before `kth` all precede those from `kth` on
    /// (Hoare's selection with a median-of-three pivot).
    private static func select(_ buffer: UnsafeMutableBufferPointer<Candidate>, from low: Int, upTo high: Int, kth: Int)
    {
        var low = low
        var high = high - 1
        while low < high {
            let middle = low + (high - low) / 2
            // Median of three as the pivot, moved to `high`.
            if PlacementSolver.precedes(buffer[middle], buffer[low]) { buffer.swapAt(middle, low) }
            if PlacementSolver.precedes(buffer[high], buffer[low]) { buffer.swapAt(high, low) }
            if PlacementSolver.precedes(buffer[middle], buffer[high]) { buffer.swapAt(middle, high) }
            let pivot = buffer[high]
            var store = low
            for index in low..<high where PlacementSolver.precedes(buffer[index], pivot) {
                buffer.swapAt(index, store)
                store += 1
            }
            buffer.swapAt(store, high)
            if store == kth { return }
            if store < kth { low = store + 1 } else { high = store - 1 }
        }
    }
}
