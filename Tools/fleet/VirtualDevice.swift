import DeviceAgent
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import OrreryIdentity
import OrreryProto
import OrreryRuntimeCore
import SwiftProtobuf
import Synchronization

/// What every virtual device shares: the connections, the timing, the counters.
struct FleetWorld: Sendable {
    let registry: ConnectionLanes
    /// Nil: devices join and heartbeat but open no agent line.
    let orchestrator: ConnectionLanes?
    let heartbeatInterval: Duration
    let receiptInterval: Duration
    /// A job whose script names no `sleep N` runs this long (nil: until it is stopped).
    let defaultJobSeconds: Double?
    /// How long a device takes to answer an offer (a slow device or link): zero answers at once.
    let answerDelay: Duration
    /// Between inventories while a bid waits for its Deploy (six times as long otherwise), as the agent's setting.
    let inventoryInterval: Duration
    let counters: FleetCounters
    let journal: PlacementJournal
}

/// One simulated device: it joins by challenge, streams heartbeats with what it has free, reports round trips, and
/// keeps a line to the orchestrator where it answers offers with signed bids (accepting their contracts), starts
/// what it is deployed, reports it running and ended, and signs usage and completion receipts until the notary
/// recorded them. Only the sandbox is simulated: a replica "runs" for the `sleep N` its script names.
final class VirtualDevice: Sendable {
    let member: FleetRoster.Member
    let capabilities: Orrery_Registry_V1_DeviceCapabilities
    let country: FleetProfile.Country
    private let world: FleetWorld
    private let state = Mutex(State())

    /// A replica this device promised capacity to, runs or ran.
    struct Allocation {
        var offer: Orrery_Orchestrator_V1_Offer
        var promisedUntil: Date
        var deploy: Orrery_Orchestrator_V1_Deploy?
        var startedAt: Date?
        var lastSequence: UInt64 = 0
        /// Signed receipts the notary has not recorded, oldest first.
        var pending: [Orrery_Common_V1_Signed] = []
        var stopped = false
        /// Its final report, once it ended, and when.
        var ended: Orrery_Orchestrator_V1_AllocationReport?
        var endedAt: Date?
        var runner: Task<Void, Never>?

        var holdsCapacity: Bool { ended == nil }
    }

    struct State {
        var allocations: [String: Allocation] = [:]
        var outbox: AsyncStream<Orrery_Orchestrator_V1_AgentMessage>.Continuation?
        var heard = false
        var onLine = false
    }

    init(
        member: FleetRoster.Member, capabilities: Orrery_Registry_V1_DeviceCapabilities,
        country: FleetProfile.Country, world: FleetWorld
    ) {
        self.member = member
        self.capabilities = capabilities
        self.country = country
        self.world = world
    }

    var did: String { member.key.did.string }

    // MARK: - Joining

    /// Joins by challenge (a re-join updates the same device); with `onlyIfMissing`, first asks whether the registry
    /// already has it with these capabilities (a fleet run again). Whether it joined now.
    @discardableResult
    func join(onlyIfMissing: Bool) async throws -> Bool {
        let registry = Orrery_Registry_V1_Registry.Client(wrapping: world.registry.client(for: member.index))
        return try await ActingDeviceSigner.$member.withValue(member) {
            if onlyIfMissing,
                let known = try? await registry.getDevice(.with { $0.did = did }),
                known.status != .left, known.capabilities == capabilities
            {
                return false
            }
            do {
                var challenge = try await registry.beginJoin(.with { $0.deviceDid = did }).challenge
                SignedMessage.countersign(&challenge, with: member.key)
                _ = try await registry.completeJoin(
                    .with {
                        $0.challenge = challenge
                        $0.capabilities = capabilities
                        $0.idempotencyKey = UUID().uuidString
                    })
            } catch {
                world.counters.add(.joinFailures)
                throw error
            }
            world.counters.add(.joined)
            return true
        }
    }

    /// The replicas running here ("deployment/allocation/replica").
    func runningReplicas() -> [String] {
        state.withLock { state in
            state.allocations.values.compactMap { allocation in
                guard allocation.ended == nil, let deploy = allocation.deploy else { return nil }
                return "\(deploy.deploymentID)/\(deploy.allocation)/\(deploy.replica)"
            }
        }
    }

    /// Leaves the registry for good.
    func leave() async throws {
        let registry = Orrery_Registry_V1_Registry.Client(wrapping: world.registry.client(for: member.index))
        try await ActingDeviceSigner.$member.withValue(member) {
            _ = try await registry.leave(
                .with {
                    $0.deviceDid = did
                    $0.idempotencyKey = UUID().uuidString
                })
        }
        world.counters.add(.left)
    }

    // MARK: - Being online

    /// Heartbeats and the agent line until cancelled (the device goes silent), each reconnecting on failure as the
    /// agent does: exponential backoff with jitter, never longer than one heartbeat interval.
    func live(startingAfter delay: Duration) async {
        try? await Task.sleep(for: delay)
        await withDiscardingTaskGroup { group in
            group.addTask { await self.reconnecting { try await self.heartbeats() } }
            if world.orchestrator != nil {
                group.addTask { await self.reconnecting { try await self.line() } }
            }
        }
    }

    private func reconnecting(_ body: () async throws -> Void) async {
        var backoff: Duration = .milliseconds(100)
        while !Task.isCancelled {
            do {
                try await body()
                backoff = .milliseconds(100)
            } catch is CancellationError {
                return
            } catch {
                if Task.isCancelled { return }
            }
            try? await Task.sleep(for: min(backoff * Double.random(in: 0.5...1.5), world.heartbeatInterval))
            backoff = min(backoff * 2, .seconds(10))
        }
    }

    private func heartbeats() async throws {
        let registry = Orrery_Registry_V1_Registry.Client(wrapping: world.registry.client(for: member.index))
        do {
            try await ActingDeviceSigner.$member.withValue(member) {
                _ = try await registry.heartbeats(
                    request: StreamingClientRequest { writer in
                        var beats = 0
                        while !Task.isCancelled {
                            try await writer.write(self.heartbeat())
                            self.world.counters.add(.heartbeats)
                            if beats == 0 {
                                let first = self.state.withLock { state in
                                    defer { state.heard = true }
                                    return !state.heard
                                }
                                if first { self.world.counters.add(.devicesHeartbeating) }
                            }
                            // Round trips once a minute at the default interval, as the agent reports them.
                            if beats % 12 == 0 { await self.reportRoundTrips(registry) }
                            beats += 1
                            try await Task.sleep(for: self.world.heartbeatInterval)
                        }
                    })
            }
        } catch let error as RPCError where error.code == .notFound || error.code == .failedPrecondition {
            // The registry does not know it as joined (it left, or the registry lost it): join again.
            world.counters.add(.rejoins)
            try await join(onlyIfMissing: false)
        } catch {
            if !Task.isCancelled { world.counters.add(.heartbeatStreamFailures) }
            throw error
        }
    }

    /// What is free: the capabilities less what running replicas and promises hold.
    private func heartbeat() -> Orrery_Registry_V1_Heartbeat { state.withLock { free(in: $0) } }

    /// What is free in `state`, as a heartbeat says it.
    private func free(in state: State) -> Orrery_Registry_V1_Heartbeat {
        let held = state.allocations.values.filter(\.holdsCapacity).reduce(into: (cores: 0, ram: 0, disk: 0, gpus: 0)) {
            let resources = $1.offer.spec.resources
            $0.cores += Int(resources.cpuCores)
            $0.ram += Int(resources.ramMib)
            $0.disk += Int(resources.diskMib)
            $0.gpus += Int(resources.gpu.count)
        }
        return .with {
            $0.deviceDid = did
            $0.freeCpuMillicores = UInt32(max(0, Int(capabilities.cpuCores) - held.cores) * 1000)
            $0.freeRamBytes = UInt64(max(0, Int(capabilities.ramBytes >> 20) - held.ram)) << 20
            $0.freeDiskBytes = UInt64(max(0, Int(capabilities.diskBytes >> 20) - held.disk)) << 20
            $0.freeGpus = UInt32(max(0, capabilities.gpus.count - held.gpus))
        }
    }

    /// Round trips to the registry and the orchestrator as this device's country would see them (±20 %).
    private func reportRoundTrips(_ registry: Orrery_Registry_V1_Registry.Client<HTTP2ClientTransport.Posix>)
        async
    {
        var samples = [
            Orrery_Registry_V1_RttSample.with {
                $0.landmark = world.registry.address.description
                $0.rttMs = country.rttMs * Double.random(in: 0.8...1.2)
            }
        ]
        if let orchestrator = world.orchestrator {
            samples.append(
                .with {
                    $0.landmark = orchestrator.address.description
                    $0.rttMs = country.rttMs * Double.random(in: 0.8...1.2)
                })
        }
        do {
            let answer = try await ActingDeviceSigner.$member.withValue(member) {
                try await registry.reportRtt(
                    .with {
                        $0.deviceDid = did
                        $0.samples = samples
                        $0.idempotencyKey = UUID().uuidString
                    })
            }
            if answer.accepted > 0 { world.counters.add(.rttReports) }
        } catch {
            // Retried with the next report, as the agent does.
        }
    }

    // MARK: - The agent line

    private func line() async throws {
        guard let lanes = world.orchestrator else { return }
        let channel = Orrery_Orchestrator_V1_AgentChannel.Client(wrapping: lanes.client(for: member.index))
        let (outbox, continuation) = AsyncStream<Orrery_Orchestrator_V1_AgentMessage>.makeStream()
        continuation.yield(.with { $0.hello = .with { $0.deviceDid = did } })
        let (resync, first) = state.withLock { state -> ([Orrery_Orchestrator_V1_AgentMessage], Bool) in
            state.outbox = continuation
            defer { state.onLine = true }
            return (Self.resync(state.allocations), !state.onLine)
        }
        for message in resync { continuation.yield(message) }
        if first { world.counters.add(.devicesOnLine) }
        defer {
            state.withLock { $0.outbox = nil }
            continuation.finish()
        }
        world.counters.add(.linesOpened)
        do {
            try await ActingDeviceSigner.$member.withValue(member) {
                try await withThrowingDiscardingTaskGroup { group in
                    group.addTask { try await self.inventories() }
                    try await channel.connect(
                        requestProducer: { writer in
                            for await message in outbox { try await writer.write(message) }
                        },
                        onResponse: { response in
                            for try await message in response.messages { self.handle(message) }
                        })
                    group.cancelAll()
                }
            }
        } catch {
            if !Task.isCancelled { world.counters.add(.lineFailures) }
            throw error
        }
    }

    /// What a reopened line hears first: the inventory, then each ended replica's final report while its receipts
    /// wait, and each running one's latest receipts.
    private static func resync(_ allocations: [String: Allocation]) -> [Orrery_Orchestrator_V1_AgentMessage] {
        var messages = [inventory(allocations)]
        for (id, allocation) in allocations {
            if var report = allocation.ended {
                guard !allocation.pending.isEmpty else { continue }
                report.receipts = allocation.pending
                messages.append(.with { $0.report = report })
            } else if allocation.deploy != nil {
                messages.append(.with { $0.report = running(id, allocation) })
            }
        }
        return messages
    }

    private static func inventory(_ allocations: [String: Allocation]) -> Orrery_Orchestrator_V1_AgentMessage {
        .with {
            $0.inventory = .with {
                $0.runningOfferIds = allocations.filter { $0.value.deploy != nil && $0.value.ended == nil }.map(\.key)
                $0.promisedOfferIds = allocations.filter { $0.value.deploy == nil && $0.value.ended == nil }.map(\.key)
            }
        }
    }

    private static func running(_ id: String, _ allocation: Allocation) -> Orrery_Orchestrator_V1_AllocationReport {
        .with {
            $0.offerID = id
            $0.state = .running
            $0.receipts = allocation.pending
        }
    }

    /// The inventory every `inventoryInterval` while a bid waits for its Deploy, six times as rarely otherwise;
    /// promises whose time is up are forgotten.
    private func inventories() async throws {
        var sent = ContinuousClock.now
        while true {
            try await Task.sleep(for: world.inventoryInterval)
            let now = Date()
            let (waiting, message) = state.withLock { state in
                let expired = state.allocations.filter { $0.value.deploy == nil && $0.value.promisedUntil < now }
                // An ended replica with nothing left for the notary (no contract, or every receipt recorded) is kept
                // a while for a repeated Deploy or a resync, then forgotten, as the agent removes ended allocations.
                let done = state.allocations.filter {
                    $0.value.pending.isEmpty
                        && ($0.value.endedAt.map { now.timeIntervalSince($0) > Self.keptEnded } ?? false)
                }
                for id in Array(expired.keys) + Array(done.keys) { state.allocations[id] = nil }
                let waiting = state.allocations.values.contains { $0.deploy == nil && $0.ended == nil }
                return (waiting, Self.inventory(state.allocations))
            }
            guard waiting || ContinuousClock.now - sent >= world.inventoryInterval * 6 else { continue }
            send(message)
            sent = ContinuousClock.now
        }
    }

    private func send(_ message: Orrery_Orchestrator_V1_AgentMessage) {
        _ = state.withLock { $0.outbox?.yield(message) }
    }

    private func handle(_ message: Orrery_Orchestrator_V1_OrchestratorMessage) {
        switch message.kind {
        case .linePing(let ping): send(.with { $0.linePong = .with { $0.nonce = ping.nonce } })
        case .offer(let offer):
            guard world.answerDelay > .zero else { return send(respond(to: offer)) }
            Task {
                try? await Task.sleep(for: world.answerDelay)
                send(respond(to: offer))
            }
        case .deploy(let deploy): start(deploy)
        case .stop(let stop): self.stop(stop)
        case .receiptsRecorded(let recorded):
            let forgotten = state.withLock { state -> Int in
                guard var allocation = state.allocations[recorded.offerID] else { return 0 }
                let before = allocation.pending.count
                allocation.pending.removeAll { DeviceSignatures.sequence(of: $0) <= recorded.throughSequence }
                let forgotten = before - allocation.pending.count
                // An ended replica whose receipts are all recorded is forgotten.
                if allocation.ended != nil, allocation.pending.isEmpty {
                    state.allocations[recorded.offerID] = nil
                } else {
                    state.allocations[recorded.offerID] = allocation
                }
                return forgotten
            }
            world.counters.add(.receiptsRecorded, forgotten)
        case .openTunnel, .openExec, .actorGrant, .mail, .checkpointRequest, .checkpointChunk, .checkpointStored,
            .outputProgress, .execLogged:
            // No sandbox to connect into, run a command in or checkpoint: not simulated.
            world.counters.add(.unsupportedRequests)
        case nil: break
        }
    }

    /// A signed bid accepting the offer's contract when the device has the room; a decline otherwise.
    private func respond(to offer: Orrery_Orchestrator_V1_Offer) -> Orrery_Orchestrator_V1_AgentMessage {
        world.counters.add(.offers)
        let now = Date()
        func decline(_ reason: String) -> Orrery_Orchestrator_V1_AgentMessage {
            world.counters.add(.declines)
            return .with {
                $0.decline = .with {
                    $0.offerID = offer.offerID
                    $0.reason = reason
                }
            }
        }
        let seconds = offer.spec.maxDurationSeconds == 0 ? 3600 : Double(offer.spec.maxDurationSeconds)
        let promised = state.withLock { state -> Bool in
            if state.allocations[offer.offerID] != nil { return true }  // answered before a reconnect
            let free = free(in: state)
            let resources = offer.spec.resources
            guard UInt32(resources.cpuCores) * 1000 <= free.freeCpuMillicores,
                UInt64(resources.ramMib) << 20 <= free.freeRamBytes,
                UInt64(resources.diskMib) << 20 <= free.freeDiskBytes, resources.gpu.count <= free.freeGpus
            else { return false }
            state.allocations[offer.offerID] = Allocation(
                offer: offer, promisedUntil: now.addingTimeInterval(seconds))
            return true
        }
        guard promised else { return decline("not enough free capacity on this device now") }
        do {
            let acceptance =
                offer.hasContract
                ? try DeviceSignatures.acceptance(
                    of: offer.contract, in: offer, key: member.key, chain: member.chain,
                    minimumPerJob: capabilities.prices.minimumPerJob, now: now) : nil
            let bid = try DeviceSignatures.bid(on: offer, acceptance: acceptance, key: member.key, now: now)
            world.counters.add(.bids)
            return .with { $0.bid = bid }
        } catch {
            state.withLock { _ = $0.allocations.removeValue(forKey: offer.offerID) }
            return decline("the offer's contract is not acceptable: \(error)")
        }
    }

    /// Starts a deployed replica (once: a repeated Deploy repeats what is known), reports it running, and follows it.
    private func start(_ deploy: Orrery_Orchestrator_V1_Deploy) {
        let now = Date()
        let repeated = state.withLock { state -> Orrery_Orchestrator_V1_AgentMessage?? in
            guard var allocation = state.allocations[deploy.offerID] else { return .some(nil) }
            if allocation.deploy != nil {
                if let ended = allocation.ended {
                    var report = ended
                    report.receipts = allocation.pending
                    return .some(.with { $0.report = report })
                }
                return .some(.with { $0.report = Self.running(deploy.offerID, allocation) })
            }
            allocation.deploy = deploy
            allocation.startedAt = now
            state.allocations[deploy.offerID] = allocation
            return nil
        }
        if case .some(let answer) = repeated {
            world.counters.add(.repeatedDeploys)
            if let answer {
                send(answer)
            } else {
                // A Deploy without a bid from this device (its promise expired): it cannot start.
                send(
                    .with {
                        $0.report = .with {
                            $0.offerID = deploy.offerID
                            $0.state = .failedToStart
                            $0.reason = "this device holds no promise for offer \(deploy.offerID)"
                        }
                    })
            }
            return
        }
        world.counters.add(.deploys)
        world.journal.deployed("\(deploy.deploymentID)/\(deploy.allocation)/\(deploy.replica)", on: member.index)
        send(
            .with {
                $0.report = .with {
                    $0.offerID = deploy.offerID; $0.state = .running
                }
            })
        let seconds = Self.runSeconds(of: deploy.spec) ?? world.defaultJobSeconds
        let runner = Task { await self.follow(deploy.offerID, for: seconds) }
        state.withLock { $0.allocations[deploy.offerID]?.runner = runner }
    }

    /// While the replica runs: a usage receipt every receipt interval; after its run time, its completion.
    private func follow(_ id: String, for seconds: Double?) async {
        let end = seconds.map { ContinuousClock.now + .milliseconds(Int($0 * 1000)) }
        while !Task.isCancelled {
            let next = ContinuousClock.now + world.receiptInterval
            if let end, end <= next {
                try? await Task.sleep(until: end)
                if Task.isCancelled { return }
                finish(id, stoppedBecause: nil)
                return
            }
            try? await Task.sleep(until: next)
            if Task.isCancelled { return }
            let report = state.withLock { state -> Orrery_Orchestrator_V1_AllocationReport? in
                guard var allocation = state.allocations[id], allocation.ended == nil,
                    let receipt = sign(usageOf: &allocation)
                else { return nil }
                allocation.pending.append(receipt)
                state.allocations[id] = allocation
                return Self.running(id, allocation)
            }
            guard let report else { return }
            world.counters.add(.receiptsSigned)
            send(.with { $0.report = report })
        }
    }

    /// Ends a replica: a completion receipt when it ran its course, a last usage receipt when the orchestrator
    /// stopped it (its contract is terminated), and the final report.
    private func finish(_ id: String, stoppedBecause reason: String?) {
        let now = Date()
        let report = state.withLock { state -> Orrery_Orchestrator_V1_AllocationReport? in
            guard var allocation = state.allocations[id], allocation.ended == nil, let startedAt = allocation.startedAt
            else { return nil }
            let wall = now.timeIntervalSince(startedAt)
            let spec = allocation.offer.spec
            // A simulated replica keeps its cores busy: CPU time is its cores times its wall time.
            let usage = DeviceSignatures.usage(
                cpuSeconds: wall * Double(spec.resources.cpuCores), wallSeconds: wall, spec: spec, at: now)
            let contract = allocation.deploy?.contractID ?? ""
            if !contract.isEmpty {
                allocation.lastSequence += 1
                var stated = usage
                stated.contractID = contract
                stated.sequence = allocation.lastSequence
                let signed: Orrery_Common_V1_Signed?
                if reason != nil {
                    signed = try? Self.signed(stated, by: member.key)
                } else {
                    let completion = Orrery_Notary_V1_CompletionReceipt.with {
                        $0.contractID = contract
                        $0.sequence = stated.sequence
                        $0.artifactSha256 = DeviceSignatures.artifactDigest(spec)
                        $0.exitCode = 0
                        $0.usage = stated
                    }
                    signed = try? Self.signed(completion, by: member.key)
                }
                if let signed { allocation.pending.append(signed) }
            }
            let report = Orrery_Orchestrator_V1_AllocationReport.with {
                $0.offerID = id
                $0.state = .exited
                $0.exitCode = reason == nil ? 0 : 137
                $0.reason = reason.map { "stopped: \($0)" } ?? "exited 0"
                $0.usage = .with {
                    $0.cpuSeconds = usage.cpuSeconds
                    $0.wallSeconds = wall
                    $0.peakMemoryBytes = UInt64(spec.resources.ramMib) << 19
                }
            }
            allocation.ended = report
            allocation.endedAt = now
            allocation.stopped = reason != nil
            state.allocations[id] = allocation
            var sent = report
            sent.receipts = allocation.pending
            return sent
        }
        guard let report else { return }
        world.counters.add(.receiptsSigned)
        world.counters.add(reason == nil ? .completions : .stops)
        send(.with { $0.report = report })
    }

    private func stop(_ stop: Orrery_Orchestrator_V1_Stop) {
        let (promiseOnly, runner) = state.withLock { state -> (Bool, Task<Void, Never>?) in
            guard let allocation = state.allocations[stop.offerID] else { return (false, nil) }
            if allocation.deploy == nil {
                state.allocations[stop.offerID] = nil
                return (true, nil)
            }
            return (false, allocation.runner)
        }
        if promiseOnly {
            world.counters.add(.withdrawnPromises)
            return
        }
        runner?.cancel()
        finish(stop.offerID, stoppedBecause: stop.reason.isEmpty ? "stopped by the orchestrator" : stop.reason)
    }

    /// The device vanished (power lost): its replicas end with it, nothing more is said.
    func vanish() {
        let runners = state.withLock { state -> [Task<Void, Never>] in
            let runners = state.allocations.values.compactMap(\.runner)
            state.allocations = [:]
            return runners
        }
        for runner in runners { runner.cancel() }
    }

    /// The next usage receipt of `allocation`, signed; nil without a contract.
    private func sign(usageOf allocation: inout Allocation) -> Orrery_Common_V1_Signed? {
        guard let deploy = allocation.deploy, !deploy.contractID.isEmpty, let startedAt = allocation.startedAt else {
            return nil
        }
        let wall = Date().timeIntervalSince(startedAt)
        var usage = DeviceSignatures.usage(
            cpuSeconds: wall * Double(deploy.spec.resources.cpuCores), wallSeconds: wall, spec: deploy.spec)
        allocation.lastSequence += 1
        usage.contractID = deploy.contractID
        usage.sequence = allocation.lastSequence
        return try? Self.signed(usage, by: member.key)
    }

    private static func signed(_ message: some SwiftProtobuf.Message, by key: SigningKey) throws
        -> Orrery_Common_V1_Signed
    {
        SignedMessage.make(
            type: type(of: message).protoMessageName, payload: try message.serializedData(), signers: [key])
    }

    /// Seconds an ended replica whose receipts were all recorded is remembered.
    static let keptEnded: TimeInterval = 600

    /// The seconds a script's first `sleep N` names: how long its simulated run takes.
    static func runSeconds(of spec: Orrery_Orchestrator_V1_AllocationSpec) -> Double? {
        guard case .text(let text)? = spec.artifact.source else { return nil }
        let words = text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == ";" || $0 == "\t" })
        guard let index = words.firstIndex(of: "sleep"), index + 1 < words.count else { return nil }
        return Double(words[index + 1])
    }
}
