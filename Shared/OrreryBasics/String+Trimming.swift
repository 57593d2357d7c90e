extension StringProtocol {
    /// The text without leading and trailing whitespace (spaces, tabs, line breaks), as Foundation's
    /// `trimmingCharacters(in: .whitespacesAndNewlines)` without needing all of Foundation.
    public func trimmed() -> String {
        guard let first = firstIndex(where: { !$0.isWhitespace }),
            let last = lastIndex(where: { !$0.isWhitespace })
        else { return "" }
        return String(self[first...last])
    }
}
