internal import Foundation
internal import GRPCCore
internal import GRPCNIOTransportHTTP2Posix
internal import Logging
internal import OrreryAuth
internal import OrreryIdentity
internal import OrreryProto
internal import OrreryRuntime
internal import PostgresNIO
internal import SwiftProtobuf

/// Checks each ended contract's availability term against the registry's liveness record of its device while the
/// contract was active (docs/ARCHITECTURE.md §2: breaches are facts, not opinions). A shortfall is appended to the log as an SLA
/// breach signed by the notary, with its penalty for settlement; either way the contract is marked checked, in the
/// same batch, so no breach is logged twice.
struct AvailabilityChecker: Sendable {
    let registry: ServiceAddress
    let environment: ServiceEnvironment
    let client: PostgresClient
    let sequencer: LogSequencer
    var interval: Duration = .seconds(2)

    func run() async {
        let logger = environment.logger
        await Reconnecting.run(onFailure: { error in
            logger.warning("checking availability terms failed; retrying", metadata: ["error": "\(error)"])
        }) {
            let did = try await ServiceProbe.withClient(registry, trustRoots: environment.settings.tlsTrustRoots) {
                try DID(try await ServiceProbe.info($0).did)
            }
            let signer = InvocationSigner(
                key: environment.key, subject: environment.operatorDID, audience: did, proofs: environment.proofs,
                catalog: environment.catalog)
            try await withGRPCClient(
                transport: try .http2NIOPosix(
                    target: registry.target,
                    transportSecurity: ServiceProbe.security(trustRoots: environment.settings.tlsTrustRoots)),
                interceptors: [signer]
            ) { grpc in
                let registry = Orrery_Registry_V1_Registry.Client(wrapping: grpc)
                while !Task.isCancelled {
                    for ended in try await ContractStore.uncheckedAvailability(
                        limit: 50, client: client, logger: logger)
                    {
                        let availability = try await registry.getAvailability(
                            .with {
                                $0.deviceDid = ended.device
                                $0.from = Google_Protobuf_Timestamp(date: ended.from)
                                $0.to = Google_Protobuf_Timestamp(date: ended.to)
                            })
                        _ = try await sequencer.append(check(ended.id, observed: availability.availability))
                    }
                    try await Task.sleep(for: interval)
                }
            }
        }
    }

    /// The act that records the check: a breach entry when `observed` is below the contract's term.
    func check(_ contractID: String, observed: Double) -> LogAct {
        let key = environment.key
        return LogAct(
            contractID: contractID,
            apply: { row, now in
                guard !row.slaChecked else { return [] }
                row.slaChecked = true
                let required = row.contract.sla.availability
                guard observed < required else { return [] }
                return [
                    try NotaryAPI.breach(
                        .availability, of: row.contract, observed: observed, required: required,
                        bps: row.contract.penalties.availabilityBps, at: now, key: key)
                ]
            },
            idempotency: nil,
            respond: { _, _ in Data() })
    }
}
