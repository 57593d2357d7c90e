internal import Foundation
internal import OrreryAuth
internal import GRPCCore
internal import Logging
internal import OrreryDatabase
internal import OrreryIdentity
internal import OrreryPlacement
public import OrreryProto
internal import SwiftProtobuf

/// The orchestrator's public operations, for any transport: the gRPC service and the JSON-over-HTTP gateway both
/// call these with the caller's DID, already authorised by the capability check.
public struct OrchestratorAPI: Sendable {
    let store: DeploymentStore
    let fleet: FleetView
    let driver: DeploymentDriver
    let events: ChangeFeed<Orrery_Orchestrator_V1_DeploymentEvent>
    let offers: OfferStore
    let solver: PlacementSolver
    /// May read every deployment.
    let operatorDID: String
    let mover: ActorMover
    let images: ImageResolver
    let secrets: DeploymentSecrets
    let contents: ContentStore
    /// The ingress this orchestrator runs, if any: without one no port may be exposed outside its ensemble.
    let ingress: IngressAddress?
    /// The agent lines' RTTs, for the ensemble path of each latency edge (nil: not reported).
    var latency: LineLatency? = nil
    /// Releases held for the operator.
    var incidents: SettlementIncidents {
        SettlementIncidents(client: store.client, logger: store.logger)
    }

    public func submit(_ request: Orrery_Orchestrator_V1_SubmitWorkloadRequest, consumer: String) async throws
        -> Orrery_Orchestrator_V1_Deployment
    {
        try RetryKey.validate(request.idempotencyKey)
        if let earlier = try await store.existing(consumer: consumer, idempotencyKey: request.idempotencyKey) {
            return try sameSpec(earlier, request)
        }
        guard request.hasSpec else { throw RPCError(code: .invalidArgument, message: "spec: required") }
        var placementRequest = try validated(request.spec)
        if ingress == nil, let exposed = Self.firstExposedPort(request.spec) {
            throw RPCError(
                code: .failedPrecondition,
                message:
                    "\(exposed): EXPOSE_PUBLIC and EXPOSE_PRIVATE need an ingress, and this orchestrator runs none "
                    + "(its operator sets --ingress-host and --ingress-domain): use EXPOSE_ENSEMBLE and `orrery port-forward`"
            )
        }
        try ConsumerAuthority.validate(
            request.consumerAuthority, consumer: consumer, orchestrator: driver.orchestratorDID,
            now: Int64(Date().timeIntervalSince1970))
        if driver.settlement != nil {
            try ConsumerAuthority.validate(
                request.settlementAuthority, consumer: consumer, orchestrator: driver.orchestratorDID,
                now: Int64(Date().timeIntervalSince1970), command: ConsumerAuthority.escrowCommand,
                field: "settlement_authority")
        }
        let submittedSecrets = try DeploymentSecrets.validate(request)
        // Images are resolved once everything that needs no registry is known to be right.
        let spec = try await images.resolve(request.spec, tokens: request.imagePullTokens)
        if spec != request.spec { placementRequest = try validated(spec) }
        if let budget = placementRequest.budget, fleet.isSynced,
            let cheapest = solver.cheapestPossibleCost(placementRequest, on: fleet.snapshot()), cheapest > budget
        {
            throw RPCError(
                code: .invalidArgument,
                message: "budget: \(budget) is below the cheapest possible price of this ensemble, \(cheapest) NTX")
        }
        guard
            let created = try await store.create(
                consumer: consumer, spec: spec, validated: placementRequest,
                idempotencyKey: request.idempotencyKey,
                authority: request.consumerAuthority, settlementAuthority: request.settlementAuthority,
                sealedSecrets: try secrets.sealed(submittedSecrets))
        else {
            // A concurrent retry with the same key won the insert.
            guard let winner = try await store.existing(consumer: consumer, idempotencyKey: request.idempotencyKey)
            else { throw RPCError(code: .aborted, message: "concurrent submission; retry") }
            return try sameSpec(winner, request)
        }
        do {
            // As far as it goes on its own: placed and offered, or failed. What needs the devices' bids, the
            // notary and the gateway follows in the background (a bid advances it at once), not in this call.
            try await driver.advance(created.id, while: [.submitted, .matched])
        } catch {
            // The background driver on any replica will advance it; the submission itself is recorded.
            driver.logger.warning(
                "could not advance a new deployment at once",
                metadata: ["deployment": "\(created.id)", "error": "\(error)"])
        }
        var submitted = try await store.deployment(created.id) ?? created
        submitted.routes = IngressRoute.status(
            of: submitted, ingress: ingress?.settings, boundPort: ingress?.boundPort)
        return submitted
    }

    /// Replaces what the deployment's devices are handed for its consumer (pull tokens, presigned URLs): the
    /// consumer's own call, checked as at submit; a replica deployed or relocated afterwards gets the new ones.
    public func renewSecrets(_ request: Orrery_Orchestrator_V1_RenewDeploymentSecretsRequest, caller: String)
        async throws -> Orrery_Orchestrator_V1_RenewDeploymentSecretsResponse
    {
        let deployment = try await get(request.id, caller: caller)
        guard deployment.consumerDid == caller else {
            throw RPCError(
                code: .permissionDenied,
                message: "only the deployment's consumer renews the tokens and URLs its devices get for it")
        }
        guard !DeploymentStore.terminal.contains(deployment.state) else {
            throw RPCError(
                code: .failedPrecondition,
                message: "deployment \(deployment.id) has ended (\(deployment.state)): nothing of it is deployed again")
        }
        let urlsGiven = !request.inputUrls.isEmpty || !request.outputUrls.isEmpty
        guard urlsGiven || !request.imagePullTokens.isEmpty || !request.inputTokens.isEmpty else {
            throw RPCError(
                code: .invalidArgument,
                message:
                    "nothing to renew: give image_pull_tokens, input_tokens, or input_urls and output_urls (orrery renew makes them)"
            )
        }
        let submitted = try DeploymentSecrets.validate(
            .with {
                $0.spec = deployment.spec
                $0.imagePullTokens = request.imagePullTokens
                $0.inputUrls = request.inputUrls
                $0.outputUrls = request.outputUrls
                $0.inputTokens = request.inputTokens
            }, requireURLs: urlsGiven)
        let held = try await secrets.replace(deployment: deployment.id, with: submitted, replacingURLs: urlsGiven)
        driver.logger.info(
            "deployment secrets renewed",
            metadata: [
                "deployment": "\(deployment.id)",
                "pull_tokens": "\(request.imagePullTokens.count + request.inputTokens.count)",
                "urls": "\(request.inputUrls.count + request.outputUrls.count)",
            ])
        return .with {
            $0.pullTokens = UInt32(held.pullTokens)
            $0.urls = UInt32(held.urls)
        }
    }

    private func sameSpec(
        _ earlier: Orrery_Orchestrator_V1_Deployment, _ request: Orrery_Orchestrator_V1_SubmitWorkloadRequest
    ) throws -> Orrery_Orchestrator_V1_Deployment {
        guard ImageResolver.unresolved(earlier.spec) == ImageResolver.unresolved(request.spec) else {
            throw RPCError(
                code: .alreadyExists,
                message: "idempotency_key was used for a different spec (deployment \(earlier.id)): use a new key")
        }
        return earlier
    }

    /// The first port of `spec` exposed outside its ensemble, as "allocations[i].ports[j]".
    static func firstExposedPort(_ spec: Orrery_Orchestrator_V1_WorkloadSpec) -> String? {
        for (index, allocation) in spec.allocations.enumerated() {
            if let port = allocation.ports.firstIndex(where: { $0.expose == .public || $0.expose == .private }) {
                return "allocations[\(index)].ports[\(port)].expose"
            }
        }
        return nil
    }

    private func validated(_ spec: Orrery_Orchestrator_V1_WorkloadSpec) throws -> PlacementRequest {
        do {
            return try WorkloadSpecValidator.validate(spec)
        } catch {
            throw RPCError(code: .invalidArgument, message: "spec: \(error)")
        }
    }

    /// A deployment the caller may see: its own, or any for the operator. Others' are "not found", so their
    /// existence does not leak.
    public func get(_ id: String, caller: String) async throws -> Orrery_Orchestrator_V1_Deployment {
        guard id.hasPrefix("dep_") else {
            throw RPCError(code: .invalidArgument, message: "id: a deployment id starts with dep_, got '\(id)'")
        }
        guard id.count == 30 else {
            throw RPCError(
                code: .invalidArgument,
                message:
                    "id: a deployment id is dep_ and 26 characters (as orrery run and orrery status print it), got '\(id)' (\(id.count - 4))"
            )
        }
        guard var deployment = try await store.deployment(id),
            deployment.consumerDid == caller || caller == operatorDID
        else {
            throw RPCError(code: .notFound, message: "no deployment \(id) of yours")
        }
        try await addRuns(to: &deployment)
        return deployment
    }

    /// `get`, with each latency edge as its running replicas stand now (`GetDeployment`).
    public func status(_ id: String, caller: String) async throws -> Orrery_Orchestrator_V1_Deployment {
        var deployment = try await get(id, caller: caller)
        if let latency, !deployment.spec.edges.isEmpty {
            let devices = Array(Set(deployment.assignments.filter { $0.run.state == .running }.map(\.deviceDid)))
            deployment.edgeLatencies = LineLatency.edges(
                of: deployment, fleet: fleet.snapshot(), lineRTTs: await latency.rtts(of: devices))
        }
        return deployment
    }

    /// A deployment with its replicas' runs, whoever's it is: for the ingress, which serves callers other than its
    /// consumer (nil when there is none).
    func current(_ id: String) async throws -> Orrery_Orchestrator_V1_Deployment? {
        guard var deployment = try await store.deployment(id) else { return nil }
        try await addRuns(to: &deployment)
        return deployment
    }

    private func addRuns(to deployment: inout Orrery_Orchestrator_V1_Deployment) async throws {
        let id = deployment.id
        deployment.routes = IngressRoute.status(
            of: deployment, ingress: ingress?.settings, boundPort: ingress?.boundPort)
        let runs = try await offers.runs(of: id)
        for index in deployment.assignments.indices {
            let assignment = deployment.assignments[index]
            let key = ReplicaOnDevice(
                allocation: assignment.allocation, replica: assignment.replica, device: assignment.deviceDid)
            if let run = runs[key] { deployment.assignments[index].run = run }
        }
    }

    public func list(_ request: Orrery_Orchestrator_V1_ListDeploymentsRequest, caller: String) async throws
        -> Orrery_Orchestrator_V1_ListDeploymentsResponse
    {
        guard (0...500).contains(request.pageSize) else {
            throw RPCError(code: .invalidArgument, message: "page_size: 1…500, or 0 for 50")
        }
        let pageSize = request.pageSize == 0 ? 50 : Int(request.pageSize)
        var after: (Date, String)?
        if !request.pageToken.isEmpty {
            guard let data = Data(base64Encoded: request.pageToken),
                let token = try? Google_Protobuf_Timestamp(serializedBytes: data.dropLast(30)),
                let date = token.validDate,
                case let id = String(decoding: data.suffix(30), as: UTF8.self), id.hasPrefix("dep_")
            else {
                throw RPCError(code: .invalidArgument, message: "page_token: not a token this orchestrator returned")
            }
            after = (date, id)
        }
        for state in request.states {
            if case .UNRECOGNIZED = state { throw RPCError(code: .invalidArgument, message: "states: unknown state") }
        }
        var deployments = try await store.list(
            consumer: caller, states: request.states, pageSize: pageSize, after: after)
        var response = Orrery_Orchestrator_V1_ListDeploymentsResponse()
        if deployments.count > pageSize {
            deployments.removeLast()
            if let last = deployments.last {
                let time = (try? last.createdAt.serializedBytes() as [UInt8]) ?? []
                response.nextPageToken = (Data(time) + Data(last.id.utf8)).base64EncodedString()
            }
        }
        response.deployments = deployments
        return response
    }

    /// The deployment's events after `after`, then each new one, until it reaches a final state.
    public func watch(
        _ request: Orrery_Orchestrator_V1_WatchDeploymentRequest, caller: String,
        deliver: (Orrery_Orchestrator_V1_DeploymentEvent) async throws -> Void
    ) async throws {
        guard request.afterRevision >= 0 else {
            throw RPCError(code: .invalidArgument, message: "after_revision: 0 or a revision this watch returned")
        }
        let deployment = try await get(request.id, caller: caller)
        // Subscribed before the backlog is read: nothing recorded in between is missed; duplicates are skipped.
        let live = events.subscribe(key: deployment.id)
        var sent = request.afterRevision
        for event in try await store.events(of: deployment.id, after: sent) {
            try await deliver(event)
            sent = event.revision
            if DeploymentStore.terminal.contains(event.state) { return }
        }
        if DeploymentStore.terminal.contains(deployment.state) { return }
        // Transitions as they come; with latency edges, every `LineLatency.watchInterval` the edges as they stand,
        // when they changed.
        let measured = latency != nil && !deployment.spec.edges.isEmpty
        let (items, push) = AsyncStream<WatchItem>.makeStream()
        let forwarding = Task {
            for await (revision, event) in live where event.deployment.id == deployment.id {
                push.yield(.transition(revision, event))
            }
            push.finish()
        }
        let ticking = Task {
            while measured, !Task.isCancelled {
                try await Task.sleep(for: LineLatency.watchInterval)
                push.yield(.measure)
            }
        }
        defer {
            forwarding.cancel()
            ticking.cancel()
        }
        var lastEdges: [Orrery_Orchestrator_V1_EdgeLatency] = []
        for await item in items {
            switch item {
            case .transition(let revision, let event):
                guard revision > sent else { continue }
                try await deliver(event)
                sent = revision
                if DeploymentStore.terminal.contains(event.state) { return }
            case .measure:
                let now = try await status(deployment.id, caller: caller)
                guard now.state == .running, LineLatency.changed(now.edgeLatencies, since: lastEdges) else {
                    continue
                }
                lastEdges = now.edgeLatencies
                try await deliver(
                    .with {
                        $0.revision = now.revision
                        $0.state = now.state
                        $0.reason = LineLatency.summary(now.edgeLatencies)
                        $0.at = .init(date: Date())
                        $0.deployment = now
                        $0.measurement = true
                    })
            }
        }
    }

    /// What a watch waits for: a transition, or the time to measure the latency edges again.
    private enum WatchItem: Sendable {
        case transition(Int64, Orrery_Orchestrator_V1_DeploymentEvent)
        case measure
    }

    /// Settlement incidents; the operator only.
    public func settlementIncidents(_ request: Orrery_Orchestrator_V1_ListSettlementIncidentsRequest, caller: String)
        async throws -> Orrery_Orchestrator_V1_ListSettlementIncidentsResponse
    {
        try requireOperator(caller)
        let found = try await incidents.list(includeResolved: request.includeResolved)
        return .with { $0.incidents = found }
    }

    /// The operator's decision on a settlement incident.
    public func resolveSettlementIncident(
        _ request: Orrery_Orchestrator_V1_ResolveSettlementIncidentRequest, caller: String
    ) async throws -> Orrery_Orchestrator_V1_SettlementIncident {
        try requireOperator(caller)
        return try await incidents.resolve(request)
    }

    private func requireOperator(_ caller: String) throws {
        guard caller == operatorDID else {
            throw RPCError(
                code: .permissionDenied, message: "settlement incidents are the operator's to see and decide")
        }
    }

    public func cancel(_ request: Orrery_Orchestrator_V1_CancelDeploymentRequest, caller: String) async throws
        -> Orrery_Orchestrator_V1_Deployment
    {
        let deployment = try await get(request.id, caller: caller)
        guard request.reason.count <= 500 else {
            throw RPCError(code: .invalidArgument, message: "reason: at most 500 characters")
        }
        guard
            case .cancel(let reason) = DeploymentPlanner.cancel(
                deployment.state, byConsumer: caller == deployment.consumerDid, reason: request.reason)
        else { return deployment }
        let inProgress = Set(Orrery_Orchestrator_V1_DeploymentState.allCases).subtracting(DeploymentStore.terminal)
        if let cancelled = try await store.transition(
            deployment.id, from: inProgress, to: .cancelled, reason: reason)
        {
            await driver.kick()  // the Stop instructions
            return cancelled
        }
        // It ended meanwhile.
        return try await get(request.id, caller: caller)
    }

    /// The deployment's logs so far, then (with follow) new lines until it ends.
    public func streamLogs(
        _ request: Orrery_Orchestrator_V1_StreamLogsRequest, caller: String,
        deliver: (Orrery_Orchestrator_V1_LogLine) async throws -> Void
    ) async throws {
        guard request.tailLines <= LogWindow.maximumTailLines else {
            throw RPCError(
                code: .invalidArgument,
                message: "tail_lines: at most \(LogWindow.maximumTailLines) (asked for \(request.tailLines))")
        }
        guard [.unspecified, .stdout, .stderr].contains(request.stream) else {
            throw RPCError(
                code: .invalidArgument,
                message:
                    "stream: LOG_STREAM_STDOUT, LOG_STREAM_STDERR or unset for both (got \(request.stream.rawValue))")
        }
        var since: Date?
        if request.hasSince {
            guard let date = request.since.validDate else {
                throw RPCError(code: .invalidArgument, message: "since: a timestamp between 0001-01-01 and 9999-12-31")
            }
            since = date
        }
        var deployment = try await get(request.id, caller: caller)
        var after = Date(timeIntervalSince1970: 0)
        var isFirst = true
        while true {
            let stored = try await offers.logs(of: deployment.id, after: after)
            after = stored.last?.at ?? after
            // The tail applies to what is stored when the request comes; what arrives later is all new.
            let window = LogWindow.select(
                stored, since: since, stream: request.stream,
                tailLines: isFirst ? Int(request.tailLines) : 0)
            isFirst = false
            for (line, at) in window {
                var line = line
                line.receivedAt = Google_Protobuf_Timestamp(date: at)
                try await deliver(line)
            }
            guard request.follow, !DeploymentStore.terminal.contains(deployment.state) else { return }
            try await Task.sleep(for: .milliseconds(250))
            deployment = try await get(request.id, caller: caller)
        }
    }

    public func outputs(_ request: Orrery_Orchestrator_V1_GetOutputsRequest, caller: String) async throws
        -> Orrery_Orchestrator_V1_GetOutputsResponse
    {
        let deployment = try await get(request.id, caller: caller)
        let files = try await offers.outputs(of: deployment.id)
        return .with { $0.files = files }
    }

    /// A stored output's bytes from an offset, chunk by chunk, for the deployment's consumer (or the operator).
    public func readOutput(
        _ request: Orrery_Orchestrator_V1_ReadOutputRequest, caller: String,
        _ write: (Orrery_Orchestrator_V1_OutputChunk) async throws -> Void
    ) async throws {
        let deployment = try await get(request.id, caller: caller)
        try await contents.read(request, consumer: deployment.consumerDid, write)
    }

    public func explain(_ request: Orrery_Orchestrator_V1_ExplainPlacementRequest) async throws
        -> Orrery_Orchestrator_V1_PlacementExplanation
    {
        guard request.hasSpec else { throw RPCError(code: .invalidArgument, message: "spec: required") }
        _ = try validated(request.spec)
        // With images resolved: the platforms they offer filter the devices, as at submit. A private image (no token
        // comes with an explanation) is explained without its platforms.
        let resolved: Orrery_Orchestrator_V1_WorkloadSpec
        do {
            resolved = try await images.resolve(request.spec)
        } catch let error as RPCError where error.code == .failedPrecondition {
            resolved = request.spec
        }
        let placementRequest = try validated(resolved)
        guard fleet.isSynced else {
            throw RPCError(
                code: .unavailable, message: "the orchestrator has not yet received the registry's device snapshot")
        }
        let snapshot = fleet.snapshot(reserved: try await store.reservations())
        return Self.explanation(solver.explain(placementRequest, on: snapshot))
    }

    static func explanation(_ explanation: PlacementExplanation) -> Orrery_Orchestrator_V1_PlacementExplanation {
        var result = Orrery_Orchestrator_V1_PlacementExplanation()
        result.placeable = explanation.placement != nil
        result.reason = explanation.reason
        result.devicesConsidered = UInt32(explanation.devicesConsidered)
        let assignments = explanation.placement.map(DeploymentDriver.assignments) ?? []
        result.allocations = explanation.allocations.map { report in
            Orrery_Orchestrator_V1_AllocationExplanation.with {
                $0.name = report.name
                $0.candidates = UInt32(report.candidates)
                $0.eliminated = ConstraintKind.allCases.compactMap { kind in
                    guard let count = report.eliminated[kind], count > 0 else { return nil }
                    return .with {
                        $0.constraint = kind.rawValue
                        $0.devices = UInt32(count)
                    }
                }
                $0.failing = ConstraintKind.allCases.compactMap { kind in
                    guard let count = report.failing[kind], count > 0 else { return nil }
                    return .with {
                        $0.constraint = kind.rawValue
                        $0.devices = UInt32(count)
                    }
                }
                $0.needed = UInt32(report.needed)
                $0.assignments = assignments.filter { $0.allocation == report.name }
            }
        }
        result.relaxations = explanation.relaxations.map { relaxation in
            .with {
                $0.allocation = relaxation.allocation ?? ""
                $0.constraint = relaxation.constraint
                $0.suggestion = relaxation.suggestion
                $0.devicesAdmitted = UInt32(relaxation.devicesAdmitted)
            }
        }
        result.totalCost = explanation.placement?.totalCost ?? 0
        result.provenOptimal = explanation.placement?.provenOptimal ?? false
        return result
    }
}
