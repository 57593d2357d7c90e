/// Which bytes of a log chunk are new: the agent resends a stream's tail after a restart or a lost line, with
/// chunk boundaries that need not match the ones it sent before, so a chunk may overlap what is stored in any way.
enum LogCoverage {
    /// The parts of `chunk` that none of `stored` covers, in order. `stored` need not be sorted or disjoint.
    static func uncovered(_ chunk: Range<Int64>, stored: [Range<Int64>]) -> [Range<Int64>] {
        var gaps: [Range<Int64>] = []
        var next = chunk.lowerBound
        for range in stored.sorted(by: { $0.lowerBound < $1.lowerBound }) where range.upperBound > next {
            guard range.lowerBound < chunk.upperBound else { break }
            if range.lowerBound > next { gaps.append(next..<range.lowerBound) }
            next = max(next, range.upperBound)
            if next >= chunk.upperBound { break }
        }
        if next < chunk.upperBound { gaps.append(next..<chunk.upperBound) }
        return gaps
    }
}
