#if canImport(FoundationEssentials)
    public import FoundationEssentials
#else
    public import Foundation
#endif
internal import OrreryBasics
internal import SwiftProtobuf
public import OrreryPlacement
public import OrreryProto

/// The owner's policy and the host's capacity applied to an offer: the agent is the final judge of what runs here.
public struct OfferJudge: Sendable {
    public enum Verdict: Sendable, Equatable {
        case accept
        case decline(String)
    }

    public let policy: OwnerPolicy
    /// What this device offers (its share of the host), as it advertised.
    public let capabilities: Orrery_Registry_V1_DeviceCapabilities

    public init(policy: OwnerPolicy, capabilities: Orrery_Registry_V1_DeviceCapabilities) {
        self.policy = policy
        self.capabilities = capabilities
    }

    /// Judges `offer` at `now`, with `committed` already promised to earlier offers.
    public func judge(_ offer: Orrery_Orchestrator_V1_Offer, committed: Commitment, now: Date) -> Verdict {
        guard let expires = offer.expiresAt.validDate else {
            return .decline("the offer's expiry is not a valid timestamp")
        }
        if expires <= now { return .decline("the offer expired before it arrived") }
        let consumer = offer.consumerDid
        if let denied = policy.deniedConsumers, denied.contains(consumer) {
            return .decline("the owner does not serve consumer \(consumer)")
        }
        if let allowed = policy.allowedConsumers, !allowed.isEmpty, !allowed.contains(consumer) {
            return .decline("consumer \(consumer) is not among the owner's allowed consumers")
        }
        if let hours = policy.hours, let (start, end) = OwnerPolicy.hoursRange(hours) {
            let minute = Calendar(identifier: .gregorian).dateComponents(
                in: TimeZone(identifier: "UTC") ?? .current, from: now)
            let current = (minute.hour ?? 0) * 60 + (minute.minute ?? 0)
            let open = start <= end ? (start..<end).contains(current) : (current >= start || current < end)
            if !open { return .decline("outside the owner's hours \(hours) (UTC)") }
        }
        if offer.spec.executor == .oci, !capabilities.executors.contains("oci") {
            return .decline("this device runs no OCI images (no working runc or crun)")
        }
        let resources = offer.spec.resources
        let asked = Commitment(
            cores: Int(resources.cpuCores), ramMiB: Int(resources.ramMib), diskMiB: Int(resources.diskMib),
            gpus: Int(resources.gpu.count))
        let price = Self.price(asked, seconds: Int(offer.spec.maxDurationSeconds), prices: capabilities.prices)
        if offer.jobCost < price {
            return .decline("offered \(offer.jobCost) NTX, the owner's prices ask \(price) NTX for this run")
        }
        let capacity = Commitment(
            cores: Int(capabilities.cpuCores), ramMiB: Int(capabilities.ramBytes >> 20),
            diskMiB: Int(capabilities.diskBytes >> 20), gpus: capabilities.gpus.count)
        let after = committed.adding(asked)
        if after.cores > capacity.cores || after.ramMiB > capacity.ramMiB || after.diskMiB > capacity.diskMiB
            || after.gpus > capacity.gpus
        {
            return .decline(
                "would over-commit this device: \(capacity.cores - committed.cores) cores and \(capacity.ramMiB - committed.ramMiB) MiB free, \(asked.cores) cores and \(asked.ramMiB) MiB asked"
            )
        }
        return .accept
    }

    /// The owner's price for a run, reckoned exactly as the orchestrator prices its offers (`Cost`): the hourly
    /// price of the resources over the duration (rounded up; an hour without one), at least the minimum per job.
    static func price(_ asked: Commitment, seconds: Int, prices: Orrery_Registry_V1_PriceList) -> UInt64 {
        let listed = Prices(
            perCoreHour: prices.perCoreHour, perGBRAMHour: prices.perGbRamHour, perGPUHour: prices.perGpuHour,
            minimumPerJob: prices.minimumPerJob)
        let hourly = Cost.hourly(cores: asked.cores, ramMiB: asked.ramMiB, gpus: asked.gpus, prices: listed)
        return Cost.job(hourly: hourly, seconds: seconds > 0 ? seconds : nil, minimum: prices.minimumPerJob)
    }
}

/// Resources promised to accepted offers.
public typealias Commitment = ResourceAmount
