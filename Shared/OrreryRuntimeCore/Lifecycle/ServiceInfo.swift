#if canImport(FoundationEssentials)
    public import FoundationEssentials
#else
    public import Foundation
#endif
internal import OrreryBasics
public import OrreryProto
internal import SwiftProtobuf

/// What `Info` reports: name, version, build, start time and the service's DID.
public struct ServiceInfo: Sendable {
    /// The release version of this source tree.
    public static let version = "0.1.0"

    public let name: String
    public let build: String
    public let startedAt: Date
    public let did: String

    public init(name: String, did: String = "", startedAt: Date = Date(), build: String? = nil) {
        self.name = name
        self.did = did
        self.startedAt = startedAt
        self.build = build ?? ProcessInfo.processInfo.environment["ORRERY_BUILD"] ?? "dev"
    }

    /// The `Info` response now.
    public func response() -> Orrery_Common_V1_InfoResponse {
        .with {
            $0.name = name
            $0.version = Self.version
            $0.build = build
            $0.startedAt = Google_Protobuf_Timestamp(date: startedAt)
            $0.uptimeSeconds = Date().timeIntervalSince(startedAt)
            $0.did = did
        }
    }
}
