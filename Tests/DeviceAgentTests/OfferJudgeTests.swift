import Foundation
import OrreryPlacement
import OrreryProto
import SwiftProtobuf
import Testing

@testable import DeviceAgent

@Suite("Offer judge: the owner's policy and the host's capacity")
struct OfferJudgeTests {
    static let capabilities = Orrery_Registry_V1_DeviceCapabilities.with {
        $0.cpuCores = 4
        $0.ramBytes = 8 << 30
        $0.diskBytes = 100 << 30
        $0.prices = .with {
            $0.perCoreHour = 100
            $0.perGbRamHour = 10
            $0.minimumPerJob = 50
        }
    }

    static func offer(
        cores: UInt32 = 2, ramMiB: UInt64 = 1024, seconds: UInt32 = 3600, cost: UInt64 = 210,
        consumer: String = "did:key:zConsumer"
    )
        -> Orrery_Orchestrator_V1_Offer
    {
        .with {
            $0.offerID = "off_1"
            $0.consumerDid = consumer
            $0.spec = .with {
                $0.resources = .with {
                    $0.cpuCores = cores
                    $0.ramMib = ramMiB
                }
                $0.maxDurationSeconds = seconds
            }
            $0.jobCost = cost
            $0.expiresAt = Google_Protobuf_Timestamp(date: Date().addingTimeInterval(60))
        }
    }

    func judge(
        _ offer: Orrery_Orchestrator_V1_Offer, policy: OwnerPolicy = .none, committed: Commitment = Commitment(),
        at now: Date = Date()
    )
        -> OfferJudge.Verdict
    {
        OfferJudge(policy: policy, capabilities: Self.capabilities).judge(offer, committed: committed, now: now)
    }

    @Test("an offer at the owner's price within capacity is accepted")
    func accepts() {
        #expect(judge(Self.offer()) == .accept)
        // 2 cores × 100 + 1 GiB × 10 for an hour = 210; for 30 minutes 105.
        #expect(judge(Self.offer(seconds: 1800, cost: 105)) == .accept)
        // Below the minimum per job, the minimum applies.
        #expect(
            judge(Self.offer(cores: 0, ramMiB: 0, cost: 49))
                == .decline("offered 49 NTX, the owner's prices ask 50 NTX for this run"))
    }

    @Test("a price under the owner's is declined with both numbers")
    func price() {
        #expect(
            judge(Self.offer(cost: 209)) == .decline("offered 209 NTX, the owner's prices ask 210 NTX for this run"))
    }

    @Test("prices near the top of UInt64 saturate instead of trapping, as the orchestrator's reckoning does")
    func saturates() {
        var capabilities = Self.capabilities
        capabilities.prices.perCoreHour = .max
        let judge = OfferJudge(policy: .none, capabilities: capabilities)
        #expect(judge.judge(Self.offer(cost: .max), committed: Commitment(), now: Date()) == .accept)
        #expect(
            judge.judge(Self.offer(cost: 1 << 62), committed: Commitment(), now: Date())
                == .decline("offered \(UInt64(1) << 62) NTX, the owner's prices ask \(UInt64.max) NTX for this run"))
    }

    @Test("denied and not-allowed consumers are declined")
    func consumers() throws {
        var policy = OwnerPolicy.none
        policy.deniedConsumers = ["did:key:zConsumer"]
        #expect(judge(Self.offer(), policy: policy) == .decline("the owner does not serve consumer did:key:zConsumer"))
        policy = .none
        policy.allowedConsumers = ["did:key:zFriend"]
        #expect(
            judge(Self.offer(), policy: policy)
                == .decline("consumer did:key:zConsumer is not among the owner's allowed consumers"))
        #expect(judge(Self.offer(consumer: "did:key:zFriend"), policy: policy) == .accept)
    }

    @Test("outside the owner's hours (UTC, also across midnight) is declined")
    func hours() throws {
        var policy = OwnerPolicy.none
        policy.hours = "22:00-06:00"
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = try #require(TimeZone(identifier: "UTC"))
        let noon = try #require(calendar.date(from: DateComponents(year: 2026, month: 11, day: 26, hour: 12)))
        let night = try #require(calendar.date(from: DateComponents(year: 2026, month: 11, day: 26, hour: 23)))
        var offer = Self.offer()
        offer.expiresAt = Google_Protobuf_Timestamp(date: night.addingTimeInterval(60))
        #expect(judge(offer, policy: policy, at: noon) == .decline("outside the owner's hours 22:00-06:00 (UTC)"))
        #expect(judge(offer, policy: policy, at: night) == .accept)
    }

    @Test("what is already promised counts: the agent declines over-commitment")
    func capacity() {
        #expect(judge(Self.offer(), committed: Commitment(cores: 2, ramMiB: 1024)) == .accept)
        #expect(
            judge(Self.offer(), committed: Commitment(cores: 3, ramMiB: 1024))
                == .decline("would over-commit this device: 1 cores and 7168 MiB free, 2 cores and 1024 MiB asked"))
    }

    @Test("an expired offer is declined")
    func expired() {
        var offer = Self.offer()
        offer.expiresAt = Google_Protobuf_Timestamp(date: Date().addingTimeInterval(-1))
        #expect(judge(offer) == .decline("the offer expired before it arrived"))
    }

    @Test("promises persist in the state directory and lapse after their duration")
    func ledger() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ledger-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let now = Date()
        let ledger = CommitmentLedger(stateDirectory: directory.path)
        try await ledger.promise("a", Commitment(cores: 1, ramMiB: 10), until: now.addingTimeInterval(60))
        try await ledger.promise("b", Commitment(cores: 2, ramMiB: 20), until: now.addingTimeInterval(120))
        let reopened = CommitmentLedger(stateDirectory: directory.path)
        #expect(await reopened.committed(at: now) == Commitment(cores: 3, ramMiB: 30))
        #expect(await reopened.committed(at: now.addingTimeInterval(90)) == Commitment(cores: 2, ramMiB: 20))
        #expect(await reopened.contains("a"))
    }
}
