internal import Metrics
internal import Crypto
internal import Foundation
internal import Logging
internal import OrreryData
internal import OrreryDatabase
internal import OrreryIdentity
internal import OrreryProto
internal import PostgresNIO
internal import SwiftProtobuf

/// Offers in PostgreSQL: one per placed replica, pending until its device bids or declines, or it expires.
/// The table is how an offer reaches an agent connected to any replica.
struct OfferStore: Sendable {
    typealias State = OfferState

    /// What an agent is told about an offer it accepted.
    enum Instruction: Sendable {
        case deploy(Orrery_Orchestrator_V1_Deploy)
        case stop(Orrery_Orchestrator_V1_Stop)
    }

    /// One replica's execution, as its device reported it.
    struct Execution: Sendable {
        var allocation: String
        var replica: Int
        var device: String
        var state: State
        var exitCode: Int32?
        var report: String
        /// Its device stopped it for staying unhealthy through its restarts: it is to run elsewhere.
        var gaveUp = false
    }

    /// Replicas with a live offer (pending, accepted, deployed, running, ended or stopping).
    func liveReplicas(of deployment: String) async throws -> Set<DeploymentPlanner.Replica> {
        let rows = try await client.query(
            """
            SELECT allocation, replica FROM offers
            WHERE deployment_id = \(deployment) AND state IN (\(OfferState.live))
            """,
            logger: logger)
        var live: Set<DeploymentPlanner.Replica> = []
        for try await (allocation, replica) in rows.decode((String, Int32).self) {
            live.insert(DeploymentPlanner.Replica(allocation: allocation, replica: UInt32(replica)))
        }
        return live
    }

    /// Devices that declined or let lapse an offer of this deployment.
    func refusingDevices(of deployment: String) async throws -> Set<String> {
        Set(try await round(of: deployment).refusals.map(\.device))
    }

    /// How far a deployment's offers are with their contracts: accepted offers the notary has not recorded a
    /// contract for, current offers whose recorded contract is not escrowed, and accepted offers that may be deployed
    /// (recorded, and escrowed when `escrowRequired`).
    func paperwork(of deployment: String, escrowRequired: Bool) async throws -> (
        unrecorded: Int, unescrowed: Int, deployable: Int
    ) {
        let rows = try await client.query(
            """
            SELECT
                count(*) FILTER (WHERE state IN (\(OfferState.accepted), \(OfferState.deploying)) AND contract_id IS NULL
                                   AND bid IS NOT NULL),
                count(*) FILTER (WHERE contract_id IS NOT NULL AND NOT escrowed AND state NOT IN (\(OfferState.retired))),
                count(*) FILTER (WHERE state = \(OfferState.accepted) AND contract_id IS NOT NULL
                                   AND (escrowed OR NOT \(escrowRequired)))
            FROM offers WHERE deployment_id = \(deployment)
            """, logger: logger)
        for try await (unrecorded, unescrowed, deployable) in rows.decode((Int64, Int64, Int64).self) {
            return (Int(unrecorded), Int(unescrowed), Int(deployable))
        }
        return (0, 0, 0)
    }

    /// Accepted offers of a deployment already deploying (a relocated replica's) are deployed at once — once their
    /// contract is escrowed, when a settlement gateway holds the money (`escrowRequired`).
    func deployAccepted(of deployment: String, escrowRequired: Bool) async throws -> Bool {
        let rows = try await client.query(
            """
            UPDATE offers SET state = \(OfferState.deploying)
            WHERE deployment_id = \(deployment) AND state = \(OfferState.accepted) AND contract_id IS NOT NULL
              AND (escrowed OR NOT \(escrowRequired)) RETURNING id
            """, logger: logger
        )
        var changed = false
        for try await _ in rows.decode(String.self) { changed = true }
        return changed
    }

    /// How long a device told to stop a replica has to report its end with the final receipt (the time it ran
    /// since the last one) before the replica's contract is terminated without it.
    static let finalReceiptGraceSeconds: Double = 120

    /// How long a replica that ended by itself has for its completion receipt to be recorded (the notary was away)
    /// before its contract is terminated, so that no escrow waits for a receipt that never comes.
    static let completionReceiptGraceSeconds: Double = 600

    /// Retires a replica's offers when it moves, inside the transition that moves it: one its device may run
    /// (deploying, running, stopping) is `movedAway` — the device is told to stop it whenever it is connected, now or
    /// when it comes back — and one it never started is `relocated`. The contract of a `planned` move (its device is
    /// online) ends once the device reported the end with its final receipt, or after the grace; that of a replica
    /// whose device went silent ends now (its silence is not paid).
    static func relocate(
        deployment: String, allocation: String, replica: UInt32, reason: String, planned: Bool,
        connection: PostgresConnection, logger: Logger
    ) async throws {
        let grace = planned ? finalReceiptGraceSeconds : 0
        try await connection.query(
            """
            UPDATE offers
            SET state = CASE WHEN state IN (\(OfferState.mayRun)) THEN \(OfferState.movedAway)
                             ELSE \(OfferState.relocated) END,
                reason = \(reason),
                terminate_after = CASE WHEN state IN (\(OfferState.mayRun))
                                       THEN now() + make_interval(secs => \(grace))
                                       WHEN state = \(OfferState.exited) THEN terminate_after END
            WHERE deployment_id = \(deployment) AND allocation = \(allocation) AND replica = \(Int32(replica))
              AND (state IN (\(OfferState.current)) OR (state = \(OfferState.exited) AND gave_up))
            """,
            logger: logger)
    }

    /// Of the offers a device says it holds (`running`: allocations it runs; `promised`: offers it bid on and holds
    /// capacity for, not deployed), those this orchestrator no longer assigns to it, with why: the device must stop
    /// them, or free what it promised. What it must stop while still assigned (stopping, moved away) goes by the
    /// Stop instructions.
    func unassigned(running: [String], promised: [String], device: String) async throws -> [(
        offerID: String, reason: String
    )] {
        let ids = Array(Set(running + promised))
        guard !ids.isEmpty else { return [] }
        let rows = try await client.query(
            "SELECT id, state, reason FROM offers WHERE id = ANY(\(ids)::text[]) AND device_did = \(device)",
            logger: logger)
        var known: [String: (state: State, reason: String)] = [:]
        for try await (id, code, reason) in rows.decode((String, Int16, String).self) {
            known[id] = (try OfferState(stored: code), reason)
        }
        let keepRunning: Set<State> = [.deploying, .running, .exited, .failedToStart, .stopping, .movedAway]
        let keepPromise: Set<State> = [.pending, .accepted, .deploying, .running]
        var stops: [(offerID: String, reason: String)] = []
        for (list, keep) in [(running, keepRunning), (promised, keepPromise)] {
            for id in list {
                guard let (state, reason) = known[id] else {
                    stops.append((id, "this orchestrator assigns no such offer to this device"))
                    continue
                }
                guard !keep.contains(state) else { continue }
                stops.append((id, "no longer assigned to this device (\(state)): \(reason)"))
            }
        }
        return stops
    }

    /// Marks the accepted offers of a deployment for deployment, inside its transition to `deploying`.
    static func startDeploying(deployment: String, connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query(
            """
            UPDATE offers SET state = \(OfferState.deploying)
            WHERE deployment_id = \(deployment) AND state = \(OfferState.accepted)
            """, logger: logger)
    }

    /// How long a replica's claim to instruct a device lasts without being renewed; its holder renews it at half.
    static let instructionLeaseSeconds: Double = 5

    /// Deploy and Stop instructions for the devices `held` says yes to, each with whether this replica (`instructor`)
    /// delivers it.
    /// Each instruction is delivered by one replica however many hold a line to its device: the first to claim it,
    /// renewing its claim while it polls; another replica takes over only once the claim lapsed (its holder died or
    /// lost the line).
    func instructions(for held: @Sendable (String) -> Bool, instructor: String) async throws -> [(
        device: String, instruction: Instruction, mine: Bool
    )] {
        // The instructed offers of these devices, found among all (few: Deploys and Stops not yet taken up), so that
        // the claim below names offers, not the thousands of devices whose lines this replica may hold.
        let instructed = try await client.query(
            "SELECT id, device_did FROM offers WHERE state IN (\(OfferState.instructed))", logger: logger)
        var ids: [String] = []
        for try await (id, device) in instructed.decode((String, String).self) where held(device) {
            ids.append(id)
        }
        guard !ids.isEmpty else { return [] }
        let (lease, renewal) = (Self.instructionLeaseSeconds, Self.instructionLeaseSeconds / 2)
        let rows = try await client.query(
            """
            WITH candidates AS (
                SELECT id, instructed_by, instructed_at FROM offers
                WHERE state IN (\(OfferState.instructed)) AND id = ANY(\(ids)::text[])
            ), claimed AS (
                UPDATE offers o SET instructed_by = \(instructor), instructed_at = now()
                FROM candidates c
                WHERE o.id = c.id AND o.state IN (\(OfferState.instructed))
                  AND (o.instructed_by IS NULL
                       OR (o.instructed_by = \(instructor) AND o.instructed_at < now() - make_interval(secs => \(renewal)))
                       OR (o.instructed_by <> \(instructor) AND o.instructed_at < now() - make_interval(secs => \(lease))))
                RETURNING o.id
            )
            SELECT o.device_did, o.state, o.record, o.reason, coalesce(o.contract_id, ''),
                   c.instructed_by IS NOT DISTINCT FROM \(instructor) OR o.id IN (SELECT id FROM claimed), d.record
            FROM offers o JOIN candidates c ON c.id = o.id JOIN deployments d ON d.id = o.deployment_id
            ORDER BY o.created_at
            """,
            logger: logger)
        var instructions: [(device: String, instruction: Instruction, mine: Bool)] = []
        for try await (device, state, record, reason, contract, mine, deploymentRecord) in rows.decode(
            (String, Int16, Data, String, String, Bool, Data).self)
        {
            let offer = try Orrery_Orchestrator_V1_Offer(serializedBytes: record)
            if try OfferState(stored: state) == .deploying {
                instructions.append(
                    (
                        device,
                        .deploy(
                            .with {
                                $0.offerID = offer.offerID
                                $0.deploymentID = offer.deploymentID
                                $0.allocation = offer.allocation
                                $0.replica = offer.replica
                                $0.spec = offer.spec
                                $0.contractID = contract
                                $0.consumerDid = offer.consumerDid
                                if let spec = try? Orrery_Orchestrator_V1_Deployment(
                                    serializedBytes: deploymentRecord
                                ).spec {
                                    $0.peers = EnsembleNetwork.peers(of: spec, for: offer.allocation)
                                }
                            }), mine
                    ))
            } else {
                instructions.append(
                    (
                        device,
                        .stop(
                            .with {
                                $0.offerID = offer.offerID
                                $0.reason = reason
                            }), mine
                    ))
            }
        }
        return instructions
    }

    /// Deployments with a replica deploying or running on `device`.
    func deployments(runningOn device: String) async throws -> [String] {
        let rows = try await client.query(
            """
            SELECT DISTINCT deployment_id FROM offers
            WHERE device_did = \(device) AND state IN (\(OfferState.deploying), \(OfferState.running))
            """, logger: logger
        )
        return try await rows.decode(String.self).collected()
    }

    /// Whose an offer is, and whether it runs.
    typealias Owner = (deployment: String, allocation: String, device: String, isRunning: Bool)

    /// Whose offer `id` is: its deployment, allocation and device, and whether it runs now (nil: no such offer).
    func owner(ofOffer id: String) async throws -> Owner? {
        let rows = try await client.query(
            "SELECT deployment_id, allocation, device_did, state FROM offers WHERE id = \(id)", logger: logger)
        for try await (deployment, allocation, device, state) in rows.decode((String, String, String, Int16).self) {
            return (deployment, allocation, device, state == OfferState.running.rawValue)
        }
        return nil
    }

    /// The first of `candidates` (replicas of `allocation`, in the order they are wanted) whose offer runs now.
    func firstRunning(
        of candidates: [Orrery_Orchestrator_V1_Assignment], deployment: String, allocation: String
    ) async throws -> (replica: UInt32, offer: String, device: String)? {
        for candidate in candidates {
            if let found = try await running(deployment: deployment, allocation: allocation, replica: candidate.replica)
            {
                return (candidate.replica, found.offer, found.device)
            }
        }
        return nil
    }

    /// The running offer of a replica and its device.
    func running(deployment: String, allocation: String, replica: UInt32) async throws
        -> (offer: String, device: String)?
    {
        let rows = try await client.query(
            """
            SELECT id, device_did FROM offers WHERE deployment_id = \(deployment) AND allocation = \(allocation)
              AND replica = \(Int32(replica)) AND state = \(OfferState.running) LIMIT 1
            """, logger: logger)
        for try await row in rows.decode((String, String).self) { return row }
        return nil
    }

    /// Records a device's report on an allocation; returns its deployment, or nil when the offer is not this
    /// device's or the report changes nothing (a repeat). `receiptsRecorded`: the notary recorded every receipt the
    /// report carried. An end report whose receipts are all recorded ends the contract at once: completed by its
    /// completion receipt (terminating it then changes nothing), or terminated — a replica told to stop, or one whose
    /// device could not sign its completion receipt (a full disk) — so its escrow is refunded. Otherwise it ends after
    /// the grace for its final receipt.
    func record(
        _ report: Orrery_Orchestrator_V1_AllocationReport, device: String, receiptsRecorded: Bool = true
    ) async throws -> String? {
        let usage = Data(try report.usage.serializedBytes() as [UInt8])
        let reason = String(report.reason.prefix(1000))
        let health: Data? = report.hasHealth ? Data(try report.health.serializedBytes() as [UInt8]) : nil
        let query: PostgresQuery
        switch report.state {
        case .running:
            // A replica with a health check runs only once healthy; a report of its health alone (starting again
            // after a restart in place) changes only that.
            let ready = !report.hasHealth || report.health.status == .healthy
            query = try """
            UPDATE offers
            SET state = CASE WHEN \(ready) THEN \(OfferState.running) ELSE state END,
                health = coalesce(\(health), health)
            WHERE id = \(report.offerID) AND device_did = \(device)
              AND ((state = \(OfferState.deploying) AND \(ready))
                   OR (state IN (\(OfferState.deploying), \(OfferState.running)) AND \(health)::bytea IS NOT NULL
                       AND health IS DISTINCT FROM \(health)))
            RETURNING deployment_id
            """
        case .exited:
            query = try """
            UPDATE offers
            SET state = CASE WHEN state = \(OfferState.movedAway) THEN \(OfferState.relocated)
                             ELSE \(OfferState.exited) END,
                exit_code = \(report.exitCode),
                usage = \(usage), report = \(reason),
                health = coalesce(\(health), health), gave_up = \(report.hasHealth && report.health.gaveUp),
                terminate_after = CASE WHEN \(receiptsRecorded) THEN now()
                                       WHEN state IN (\(OfferState.stopping), \(OfferState.movedAway))
                                            THEN terminate_after
                                       ELSE now() + make_interval(secs => \(Self.completionReceiptGraceSeconds)) END
            WHERE id = \(report.offerID) AND device_did = \(device) AND state IN (\(OfferState.reporting))
            RETURNING deployment_id
            """
        case .failedToStart:
            query = """
                UPDATE offers SET state = \(OfferState.failedToStart), report = \(report.reason)
                WHERE id = \(report.offerID) AND device_did = \(device)
                  AND state IN (\(OfferState.deploying), \(OfferState.stopping))
                RETURNING deployment_id
                """
        default:
            return nil
        }
        let rows = try await client.query(query, logger: logger)
        for try await deployment in rows.decode(String.self) { return deployment }
        return nil
    }

    /// The bytes of each log stream kept per allocation.
    static let logLimit: Int64 = 1 << 20

    /// Stores the bytes of a log chunk of an offer of this device that are not stored yet (a resent chunk may
    /// overlap what arrived before in any way) and keeps the last MiB. Returns whether it stored any byte.
    func append(_ chunk: Orrery_Orchestrator_V1_LogChunk, device: String) async throws -> Bool {
        guard !chunk.data.isEmpty, chunk.stream == .stdout || chunk.stream == .stderr,
            chunk.offset <= UInt64(Int64.max) - UInt64(chunk.data.count)
        else { return false }
        let stream = Int16(chunk.stream.rawValue)
        let start = Int64(chunk.offset)
        let end = start + Int64(chunk.data.count)
        return try await client.transaction(logger: logger) { connection in
            // One writer per stream at a time: the live follower's chunks and a resend can arrive together.
            let owned = try await connection.query(
                """
                SELECT pg_advisory_xact_lock(hashtext(id), \(Int32(stream))) FROM offers
                WHERE id = \(chunk.offerID) AND device_did = \(device)
                """,
                logger: logger)
            var isOwn = false
            for try await _ in owned { isOwn = true }
            guard isOwn else { return false }
            let ends = try await connection.query(
                """
                SELECT coalesce(max("offset" + length(data)), 0) FROM allocation_logs
                WHERE offer_id = \(chunk.offerID) AND stream = \(stream)
                """,
                logger: logger)
            var storedEnd: Int64 = 0
            for try await value in ends.decode(Int64.self) { storedEnd = value }
            // Only the last MiB is kept: a resent chunk from before it is not stored again.
            let floor = max(storedEnd, end) - Self.logLimit
            let wanted = max(start, floor)..<end
            guard !wanted.isEmpty else { return false }
            let rows = try await connection.query(
                """
                SELECT "offset", "offset" + length(data) FROM allocation_logs
                WHERE offer_id = \(chunk.offerID) AND stream = \(stream) AND "offset" < \(wanted.upperBound)
                  AND "offset" + length(data) > \(wanted.lowerBound)
                """,
                logger: logger)
            var stored: [Range<Int64>] = []
            for try await (lower, upper) in rows.decode((Int64, Int64).self) { stored.append(lower..<upper) }
            let gaps = LogCoverage.uncovered(wanted, stored: stored)
            for gap in gaps {
                let first = chunk.data.startIndex + Int(gap.lowerBound - start)
                let bytes = chunk.data[first..<(first + Int(gap.upperBound - gap.lowerBound))]
                try await connection.query(
                    """
                    INSERT INTO allocation_logs (offer_id, stream, "offset", data)
                    VALUES (\(chunk.offerID), \(stream), \(gap.lowerBound), \(Data(bytes)))
                    """,
                    logger: logger)
            }
            if !gaps.isEmpty, floor > 0 {
                try await connection.query(
                    """
                    DELETE FROM allocation_logs WHERE offer_id = \(chunk.offerID) AND stream = \(stream)
                      AND "offset" + length(data) <= \(floor)
                    """,
                    logger: logger)
            }
            return !gaps.isEmpty
        }
    }

    /// Stores a declared output of an offer of this device after checking that the spec declared it and its sha256
    /// (of the bytes here; for one uploaded to the consumer's bucket, that it is where the spec sends it).
    func store(_ output: Orrery_Orchestrator_V1_OutputFile, device: String) async throws -> Bool {
        guard let recorded = try await offer(output.offerID), recorded.device == device,
            recorded.offer.spec.outputs.contains(output.path)
        else { return false }
        let spec = recorded.offer.spec
        if spec.outputsTo.isEmpty {
            guard output.location.isEmpty, Hex.sha256(output.content) == output.sha256 else { return false }
        } else {
            let expected = try? S3Location.output(
                under: spec.outputsTo, allocation: recorded.offer.allocation, replica: recorded.offer.replica,
                path: output.path)
            guard output.content.isEmpty, output.location == expected?.description,
                WorkloadSpecValidator.isSHA256(output.sha256), output.size <= UInt64(Int64.max)
            else { return false }
        }
        let size = spec.outputsTo.isEmpty ? Int64(output.content.count) : Int64(output.size)
        let rows = try await client.query(
            """
            INSERT INTO outputs (offer_id, path, sha256, content, size, location)
            SELECT id, \(output.path), \(output.sha256), \(output.content), \(size), \(output.location)
            FROM offers WHERE id = \(output.offerID)
            ON CONFLICT DO NOTHING RETURNING offer_id
            """,
            logger: logger)
        for try await _ in rows.decode(String.self) { return true }
        return false
    }

    /// The executions of a deployment's current replicas (offers that were deployed).
    func executions(of deployment: String) async throws -> [Execution] {
        let rows = try await client.query(
            """
            SELECT allocation, replica, device_did, state, exit_code, report, gave_up FROM offers
            WHERE deployment_id = \(deployment) AND state IN (\(OfferState.deployed)) ORDER BY allocation, replica
            """,
            logger: logger)
        var executions: [Execution] = []
        for try await (allocation, replica, device, state, exitCode, report, gaveUp) in rows.decode(
            (String, Int32, String, Int16, Int32?, String, Bool).self)
        {
            executions.append(
                Execution(
                    allocation: allocation, replica: Int(replica), device: device,
                    state: try OfferState(stored: state), exitCode: exitCode, report: report, gaveUp: gaveUp))
        }
        return executions
    }

    /// How many devices each replica of `deployment` was moved from for staying unhealthy.
    func unhealthyMoves(of deployment: String) async throws -> [DeploymentPlanner.Replica: Int] {
        let rows = try await client.query(
            """
            SELECT allocation, replica, count(*)::bigint FROM offers
            WHERE deployment_id = \(deployment) AND gave_up AND state = \(OfferState.relocated)
            GROUP BY allocation, replica
            """,
            logger: logger)
        var moves: [DeploymentPlanner.Replica: Int] = [:]
        for try await (allocation, replica, count) in rows.decode((String, Int32, Int64).self) {
            moves[DeploymentPlanner.Replica(allocation: allocation, replica: UInt32(replica))] = Int(count)
        }
        return moves
    }

    /// The deployment's log lines after the given rows, in the order they arrived.
    func logs(of deployment: String, after: Date) async throws -> [(line: Orrery_Orchestrator_V1_LogLine, at: Date)] {
        let rows = try await client.query(
            """
            SELECT o.allocation, o.replica, l.stream, l.data, l.received_at FROM allocation_logs l
            JOIN offers o ON o.id = l.offer_id
            WHERE o.deployment_id = \(deployment) AND l.received_at > \(after)
            ORDER BY l.received_at, l.offer_id, l.stream, l."offset"
            """,
            logger: logger)
        var lines: [(line: Orrery_Orchestrator_V1_LogLine, at: Date)] = []
        for try await (allocation, replica, stream, data, at) in rows.decode((String, Int32, Int16, Data, Date).self) {
            lines.append(
                (
                    .with {
                        $0.allocation = allocation
                        $0.replica = UInt32(replica)
                        $0.stream = Orrery_Orchestrator_V1_LogStream(rawValue: Int(stream)) ?? .unspecified
                        $0.data = data
                    }, at
                ))
        }
        return lines
    }

    /// The declared outputs the deployment's allocations returned.
    func outputs(of deployment: String) async throws -> [Orrery_Orchestrator_V1_OutputFile] {
        let rows = try await client.query(
            """
            SELECT o.id, o.allocation, o.replica, f.path, f.sha256, f.content, f.size, f.location FROM outputs f
            JOIN offers o ON o.id = f.offer_id WHERE o.deployment_id = \(deployment)
            ORDER BY o.allocation, o.replica, f.path
            """,
            logger: logger)
        var files: [Orrery_Orchestrator_V1_OutputFile] = []
        for try await (offer, allocation, replica, path, sha256, content, size, location) in rows.decode(
            (String, String, Int32, String, String, Data, Int64, String).self)
        {
            files.append(
                .with {
                    $0.offerID = offer
                    $0.allocation = allocation
                    $0.replica = UInt32(replica)
                    $0.path = path
                    $0.sha256 = sha256
                    $0.content = content
                    $0.size = UInt64(max(0, size))
                    $0.location = location
                })
        }
        return files
    }

    let client: PostgresClient
    let logger: Logger

    /// Inserts an offer per assignment of `deployment`, inside the transition that moves it to `offered`.
    /// What an offer's contract is drafted from: the offer, its assignment, the consumer's authority and the
    /// contract the replica had before (it replaces it after a relocation).
    typealias ContractDraft =
        @Sendable (
            _ offer: Orrery_Orchestrator_V1_Offer, _ assignment: Orrery_Orchestrator_V1_Assignment, _ authority: Data,
            _ replaces: String
        ) throws -> Orrery_Common_V1_Signed

    static func create(
        for deployment: Orrery_Orchestrator_V1_Deployment, orchestratorDID: String, timeout: Duration,
        only replica: (allocation: String, replica: UInt32)? = nil, contract: ContractDraft,
        connection: PostgresConnection, logger: Logger
    ) async throws {
        var authority = Data()
        for try await bytes in try await connection.query(
            "SELECT consumer_authority FROM deployments WHERE id = \(deployment.id)", logger: logger
        ).decode(Data.self) { authority = bytes }
        let expires = Date().addingTimeInterval(
            Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18)
        for assignment in deployment.assignments
        where replica == nil || (assignment.allocation == replica?.allocation && assignment.replica == replica?.replica)
        {
            var offer = Orrery_Orchestrator_V1_Offer()
            offer.offerID = DeploymentStore.newID(prefix: "off_")
            offer.deploymentID = deployment.id
            offer.allocation = assignment.allocation
            offer.replica = assignment.replica
            offer.consumerDid = deployment.consumerDid
            offer.spec = deployment.spec.allocations.first { $0.name == assignment.allocation } ?? .init()
            offer.hourlyPrice = assignment.hourlyPrice
            offer.jobCost = assignment.jobCost
            offer.expiresAt = Google_Protobuf_Timestamp(date: expires)
            offer.orchestratorDid = orchestratorDID
            var replaces = ""
            for try await id in try await connection.query(
                """
                SELECT contract_id FROM offers
                WHERE deployment_id = \(deployment.id) AND allocation = \(assignment.allocation)
                  AND replica = \(Int32(assignment.replica)) AND contract_id IS NOT NULL
                ORDER BY created_at DESC LIMIT 1
                """, logger: logger
            ).decode(String.self) { replaces = id }
            offer.contract = try contract(offer, assignment, authority, replaces)
            try await connection.query(
                """
                INSERT INTO offers (id, deployment_id, allocation, replica, device_did, record, expires_at)
                VALUES (\(offer.offerID), \(deployment.id), \(assignment.allocation), \(Int32(assignment.replica)),
                        \(assignment.deviceDid), \(Data(try offer.serializedBytes() as [UInt8])), \(expires))
                """,
                logger: logger)
        }
    }

    /// Accepted offers of a deployment whose contract is not recorded yet, with the device's signed bid.
    func acceptedWithoutContract(of deployment: String) async throws -> [(
        offer: Orrery_Orchestrator_V1_Offer, bid: Orrery_Orchestrator_V1_Bid
    )] {
        let rows = try await client.query(
            """
            SELECT record, bid FROM offers
            WHERE deployment_id = \(deployment) AND state IN (\(OfferState.accepted), \(OfferState.deploying))
              AND contract_id IS NULL AND bid IS NOT NULL
            ORDER BY created_at
            """,
            logger: logger)
        var accepted: [(offer: Orrery_Orchestrator_V1_Offer, bid: Orrery_Orchestrator_V1_Bid)] = []
        for try await (record, bid) in rows.decode((Data, Data).self) {
            let signed = try Orrery_Common_V1_Signed(serializedBytes: bid)
            accepted.append(
                (
                    try Orrery_Orchestrator_V1_Offer(serializedBytes: record),
                    try Orrery_Orchestrator_V1_Bid(serializedBytes: signed.payload)
                ))
        }
        return accepted
    }

    /// The contracts recorded for a deployment's current offers, by "allocation#replica".
    func contracts(of deployment: String) async throws -> [String: String] {
        let rows = try await client.query(
            """
            SELECT allocation, replica, contract_id FROM offers
            WHERE deployment_id = \(deployment) AND contract_id IS NOT NULL AND state NOT IN (\(OfferState.retired))
            ORDER BY created_at
            """,
            logger: logger)
        var contracts: [String: String] = [:]
        for try await (allocation, replica, contract) in rows.decode((String, Int32, String).self) {
            contracts["\(allocation)#\(replica)"] = contract
        }
        return contracts
    }

    func setContract(_ offerID: String, contractID: String) async throws {
        try await client.query(
            "UPDATE offers SET contract_id = \(contractID) WHERE id = \(offerID) AND contract_id IS NULL",
            logger: logger)
    }

    /// Contracts of replicas that ended and that the notary has not been told to terminate yet: withdrawn, failed to
    /// start or relocated before it started, at once; ended, stopped or moved away once its device reported the end
    /// with its receipts recorded, or its grace ran out (a contract its completion receipt completed stays completed).
    /// The selection is `SettlementPlanner.contractEnded` as SQL (`SettlementPlannerTests` compares them row by row).
    func contractsToTerminate(limit: Int) async throws -> [(offerID: String, contractID: String, reason: String)] {
        let rows = try await client.query(
            """
            SELECT id, contract_id, reason FROM offers
            WHERE contract_id IS NOT NULL AND NOT contract_closed
              AND (state IN (\(SettlementPlanner.endsAtOnce))
                   OR (state IN (\(SettlementPlanner.endsAtOnceWithoutGrace)) AND terminate_after IS NULL)
                   OR (state IN (\(OfferState.endingAfterReport)) AND terminate_after <= now()))
            ORDER BY created_at LIMIT \(limit)
            """,
            logger: logger)
        var found: [(offerID: String, contractID: String, reason: String)] = []
        for try await row in rows.decode((String, String, String).self) { found.append(row) }
        return found
    }

    func markContractClosed(_ offerID: String) async throws {
        try await client.query("UPDATE offers SET contract_closed = true WHERE id = \(offerID)", logger: logger)
    }

    /// Every pending offer's id and device: small rows, read often (the devices a replica holds are filtered here,
    /// not sent to the database as a list of thousands).
    func pendingOffers() async throws -> [(id: String, device: String)] {
        let rows = try await client.query(
            """
            SELECT id, device_did FROM offers WHERE state = \(OfferState.pending) AND expires_at > now()
            """,
            logger: logger)
        var offers: [(id: String, device: String)] = []
        for try await (id, device) in rows.decode((String, String).self) { offers.append((id, device)) }
        return offers
    }

    /// The offers `ids` that are still pending, oldest first.
    func pending(ids: [String]) async throws -> [(device: String, offer: Orrery_Orchestrator_V1_Offer)] {
        guard !ids.isEmpty else { return [] }
        let rows = try await client.query(
            """
            SELECT device_did, record FROM offers
            WHERE id = ANY(\(ids)::text[]) AND state = \(OfferState.pending) AND expires_at > now()
            ORDER BY created_at
            """,
            logger: logger)
        var offers: [(device: String, offer: Orrery_Orchestrator_V1_Offer)] = []
        for try await (device, record) in rows.decode((String, Data).self) {
            offers.append((device, try Orrery_Orchestrator_V1_Offer(serializedBytes: record)))
        }
        return offers
    }

    /// Records a device's answer to a pending offer addressed to it; returns the offer's deployment, or nil
    /// when the offer is not pending for this device (already answered, expired, withdrawn, or someone else's).
    func answer(
        _ offerID: String, device: String, state: State, bid: Orrery_Common_V1_Signed?, reason: String
    ) async throws -> String? {
        let bidData = try bid.map { Data(try $0.serializedBytes() as [UInt8]) }
        let rows = try await client.query(
            """
            UPDATE offers SET state = \(state.rawValue), bid = \(bidData), reason = \(reason)
            WHERE id = \(offerID) AND device_did = \(device) AND state = \(OfferState.pending) AND expires_at > now()
            RETURNING deployment_id
            """,
            logger: logger)
        for try await deployment in rows.decode(String.self) { return deployment }
        return nil
    }

    /// The offer as recorded, for checking a bid against it.
    func offer(_ offerID: String) async throws -> (device: String, offer: Orrery_Orchestrator_V1_Offer)? {
        let rows = try await client.query(
            "SELECT device_did, record FROM offers WHERE id = \(offerID)", logger: logger)
        for try await (device, record) in rows.decode((String, Data).self) {
            return (device, try Orrery_Orchestrator_V1_Offer(serializedBytes: record))
        }
        return nil
    }

    /// Marks pending offers past their expiry; returns their deployments.
    func expire() async throws -> Set<String> {
        let rows = try await client.query(
            """
            UPDATE offers SET state = \(OfferState.expired), reason = 'no answer before the offer expired'
            WHERE state = \(OfferState.pending) AND expires_at <= now() RETURNING deployment_id
            """,
            logger: logger)
        var deployments: Set<String> = []
        var expired = 0
        for try await deployment in rows.decode(String.self) {
            deployments.insert(deployment)
            expired += 1
        }
        if expired > 0 {
            Counter(label: "orrery_offers_refused_total", dimensions: [("how", "expired")]).increment(by: expired)
        }
        return deployments
    }

    /// The current round's offers of a deployment (pending or accepted) and the devices that declined or let
    /// an offer expire in any round, with why.
    func round(of deployment: String) async throws -> (
        current: [(device: String, state: State)], refusals: [(device: String, reason: String)]
    ) {
        let rows = try await client.query(
            "SELECT device_did, state, reason FROM offers WHERE deployment_id = \(deployment) ORDER BY created_at",
            logger: logger)
        var current: [(device: String, state: State)] = []
        var refusals: [(device: String, reason: String)] = []
        for try await (device, code, reason) in rows.decode((String, Int16, String).self) {
            let state = try OfferState(stored: code)
            switch state {
            case .pending, .accepted: current.append((device, state))
            case .declined, .expired: refusals.append((device, reason))
            default: break
            }
        }
        return (current, refusals)
    }

    /// An offer withdrawn from its device.
    struct Withdrawn: Sendable, Equatable {
        let offerID: String
        let device: String
        let reason: String
    }

    /// Withdraws the current round (placed again, or the deployment ended); returns the offers withdrawn. Must run
    /// inside the transition that does so.
    static func withdraw(deployment: String, reason: String, connection: PostgresConnection, logger: Logger)
        async throws -> [Withdrawn]
    {
        let rows = try await connection.query(
            """
            UPDATE offers SET state = \(OfferState.withdrawn), reason = \(reason)
            WHERE deployment_id = \(deployment) AND state IN (\(OfferState.pending), \(OfferState.accepted))
            RETURNING id, device_did
            """,
            logger: logger)
        var withdrawn: [Withdrawn] = []
        for try await (id, device) in rows.decode((String, String).self) {
            withdrawn.append(Withdrawn(offerID: id, device: device, reason: reason))
        }
        return withdrawn
    }
}
