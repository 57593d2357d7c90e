#if canImport(FoundationEssentials)
    public import FoundationEssentials
#else
    public import Foundation
#endif
public import SwiftProtobuf

extension Google_Protobuf_Timestamp {
    /// The seconds protobuf allows a timestamp: 0001-01-01T00:00:00Z through 9999-12-31T23:59:59Z.
    public static let validSeconds: ClosedRange<Int64> = -62_135_596_800...253_402_300_799

    /// The time this timestamp names, or nil when it is outside what protobuf allows (seconds in `validSeconds`,
    /// nanos 0…999,999,999). `date` traps (an arithmetic overflow) on such a value, so a timestamp from outside the
    /// process is read only through this.
    public var validDate: Date? {
        guard Self.validSeconds.contains(seconds), (0..<1_000_000_000).contains(nanos) else { return nil }
        return date
    }
}
