internal import Crypto
#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
internal import Logging
internal import OrreryActors
internal import OrreryIdentity
internal import OrreryProto
internal import SwiftProtobuf
internal import Synchronization
internal import OrreryRuntimeCore

/// Every actor this device hosts: keys (created here, or unsealed when one resumes here), mailboxes, the mail
/// between them and the orchestrator, and checkpoints (taken, sealed, signed and shipped in chunks; received,
/// checked and unpacked before a resume). An archive over 64 MiB goes to the orchestrator's content store within
/// its window (`StoreUpload`, resent from what the store holds after a reconnect), its record once the store holds
/// it; a resume from one fetches it in windows of 16 MiB, written to disk and hashed as it comes.
///
/// Files per allocation, beside the runner's: `actor.key` (0600), `actor.address`, `actor.contract`,
/// `grant.pb`, `checkpoint.sequence`, `checkpoints/<n>.tar.gz` (with `<n>.pending.pb`, its signed record, while
/// the archive is on its way to the content store), and `orrery/` — mounted at `/orrery` in the
/// sandbox — holding `checkpoint/` (`ORRERY_CHECKPOINT_DIR`); the mailbox socket's directory is mounted at
/// `/orrery/mailbox` (`ORRERY_MAILBOX` is `/orrery/mailbox/mailbox.sock`).
actor ActorDesk {
    let deviceKey: SigningKey
    let root: String
    let logger: Logger
    /// The largest checkpoint archive taken or accepted.
    let archiveLimit: Int64
    /// The most a checkpoint may inflate to when it is unpacked for a resume.
    let unpackedLimit: Int
    static let chunkSize = 1 << 20
    /// Archives up to this size travel in checkpoint chunks; larger ones through the content store.
    static let inlineLimit: Int64 = 64 << 20
    /// The most one fetch of a stored archive asks for.
    static let fetchWindow: Int64 = 16 << 20
    /// How long a fetch may go without a byte arriving before it is asked again (four times, then the resume fails).
    var fetchStall: Duration = .seconds(15)

    /// The lines to the orchestrators; written from any actor host without a hop through this actor, so one
    /// actor's messages leave in the order it sent them.
    private let lines: AgentLines
    private var hosts: [String: ActorHost] = [:]
    private var byAddress: [String: ActorHost] = [:]
    private var servers: [String: MailboxServer] = [:]
    private var schedules: [String: Task<Void, Never>] = [:]
    /// Per allocation, the last checkpoint asked for: each waits for the one before, so two are never taken at once
    /// (one sequence number each, and the workload's checkpoint directory written for one request at a time).
    private var takes: [String: (task: Task<Void, Never>, waiting: Int)] = [:]
    private var incoming: [String: (sequence: UInt64, chunks: [UInt32: Data])] = [:]
    /// Stored archives being fetched for a resume, by offer.
    private var fetches: [String: ArchiveFetch] = [:]
    /// Archives on their way to the content store, by offer and sequence, with the record sent once it holds them.
    private var archiveUploads: [String: (upload: StoreUpload, record: Orrery_Common_V1_Signed)] = [:]
    private var retries: Task<Void, Never>?

    init(
        deviceKey: SigningKey, root: String, logger: Logger, lines: AgentLines, archiveLimit: Int64 = 4 << 30,
        unpackedLimit: Int = 16 << 30
    ) {
        self.lines = lines
        self.unpackedLimit = unpackedLimit
        self.deviceKey = deviceKey
        self.root = root
        self.logger = logger
        self.archiveLimit = archiveLimit
    }

    /// A line opened: the retries run, the orchestrator learns (again) who each actor is, and archives on their way
    /// to the content store go on from what it holds.
    func attach() {
        for (key, entry) in archiveUploads {
            var upload = entry.upload
            let sends = upload.restart()
            archiveUploads[key] = (upload, entry.record)
            sendArchive(sends, key: key)
        }
        if retries == nil {
            retries = Task { [weak self, logger] in
                let desk = WeakReference(self)
                await PeriodicWork(
                    "resending actors' mail", every: .milliseconds(500), pausesFirst: true, logger: logger
                ) {
                    guard let self = desk.value else { throw CancellationError() }
                    for host in await self.allHosts() { await host.resend() }
                }.run()
            }
        }
        // The orchestrator learns (again) who each actor is; it answers with their grants.
        for host in hosts.values { Task { await self.announce(host) } }
    }

    private func allHosts() -> [ActorHost] { Array(hosts.values) }

    private nonisolated func send(_ message: Orrery_Orchestrator_V1_AgentMessage) {
        lines.send(message, to: nil)
    }

    private nonisolated func emitter() -> @Sendable (Orrery_Orchestrator_V1_AgentMessage) -> Void {
        { message in self.send(message) }
    }

    private func path(_ id: String, _ name: String) -> String { "\(root)/\(id)/\(name)" }

    // MARK: Starting and stopping

    /// Before an allocation starts: its actor key (new, or unsealed from the resume), its address, and — when it
    /// resumes — its checkpoint checked against the signed record and unpacked into `ORRERY_CHECKPOINT_DIR`.
    /// - Returns: what the sandbox gets: the environment and the directories mounted.
    func prepare(_ deploy: Orrery_Orchestrator_V1_Deploy) async throws -> ActorSandbox {
        let id = deploy.offerID
        guard
            let address = ActorAddress(
                deployment: deploy.deploymentID, allocation: deploy.allocation, replica: Int(deploy.replica))
        else { throw RunnerError(message: "the deploy names no valid actor address") }
        let files = FileManager.default
        for folder in ["", "/orrery", "/orrery/checkpoint", "/orrery/mailbox", "/checkpoints"] {
            try files.createDirectory(atPath: path(id, folder), withIntermediateDirectories: true)
        }
        try files.createDirectory(atPath: Self.mailboxDirectory(id), withIntermediateDirectories: true)
        for folder in [path(id, "orrery"), path(id, "orrery/checkpoint"), Self.mailboxDirectory(id)] {
            chmod(folder, 0o777)
        }
        let key: SigningKey
        var sequence: UInt64 = 0
        if deploy.hasResume {
            let resume = deploy.resume
            let expected = try DID(resume.actorDid)
            do {
                key = try ActorKeySeal.open(Array(resume.sealedKey), with: deviceKey, expecting: expected)
            } catch {
                throw RunnerError(message: "the actor key does not open: \(error)")
            }
            if resume.hasCheckpoint {
                sequence = try await restore(id, resume, actor: expected, into: path(id, "orrery/checkpoint"))
            }
        } else {
            key = SigningKey()
        }
        incoming.removeValue(forKey: id)
        try KeyFile.write(key, to: path(id, "actor.key"))
        try Data(address.description.utf8).write(to: URL(fileURLWithPath: path(id, "actor.address")))
        try Data(deploy.contractID.utf8).write(to: URL(fileURLWithPath: path(id, "actor.contract")))
        try Data(String(sequence).utf8).write(to: URL(fileURLWithPath: path(id, "checkpoint.sequence")))
        return ActorSandbox(
            environment: [
                "ORRERY_ACTOR_ADDRESS": address.description, "ORRERY_ACTOR_DID": key.did.string,
                "ORRERY_MAILBOX": "/orrery/mailbox/mailbox.sock", "ORRERY_CHECKPOINT_DIR": "/orrery/checkpoint",
            ], directory: path(id, "orrery"), mailboxDirectory: Self.mailboxDirectory(id))
    }

    /// Where an allocation's mailbox socket lives on the host: a short path (a Unix socket's is at most 107
    /// bytes), mounted at /orrery/mailbox in the sandbox; a directory, so a socket made again after an agent
    /// restart is seen by the running workload.
    static func mailboxDirectory(_ id: String) -> String { "/tmp/orrery-mailboxes-\(geteuid())/\(id)" }

    /// Checks the received (or fetched) archive against the record (signed by the actor) and unpacks it; returns its
    /// sequence.
    private func restore(_ id: String, _ resume: Orrery_Actors_V1_Resume, actor: DID, into directory: String)
        async throws -> UInt64
    {
        let signed = resume.checkpoint
        do {
            try SignedMessage.verify(signed, type: Orrery_Actors_V1_Checkpoint.protoMessageName, requiring: [actor])
        } catch {
            throw RunnerError(message: "the checkpoint record is not signed by the actor \(actor): \(error)")
        }
        let record = try Orrery_Actors_V1_Checkpoint(serializedBytes: signed.payload)
        guard record.size <= UInt64(archiveLimit) else {
            throw RunnerError(
                message:
                    "checkpoint \(record.sequence)'s archive is \(record.size) bytes, more than this device takes (\(archiveLimit))"
            )
        }
        let file = path(id, "checkpoints/\(record.sequence).tar.gz")
        let digest: String
        let size: Int64
        if resume.archiveStored {
            (digest, size) = try await fetchArchive(id, record: record, into: file)
        } else {
            guard let received = incoming[id], received.sequence == record.sequence else {
                throw RunnerError(message: "checkpoint \(record.sequence)'s archive did not arrive")
            }
            var archive = Data()
            for index in 0..<UInt32(received.chunks.count) {
                guard let chunk = received.chunks[index] else {
                    throw RunnerError(message: "checkpoint \(record.sequence)'s archive lacks chunk \(index)")
                }
                archive.append(chunk)
            }
            (digest, size) = (Hex.sha256(archive), Int64(archive.count))
            try archive.write(to: URL(fileURLWithPath: file))
        }
        defer { try? FileManager.default.removeItem(atPath: file) }
        guard digest == record.sha256, UInt64(size) == record.size else {
            throw RunnerError(
                message:
                    "the checkpoint archive was altered: its sha256 is \(digest) (\(size) bytes), the signed record says \(record.sha256) (\(record.size) bytes); refused"
            )
        }
        // Inflated here with a bound (a gzip bomb is refused), then unpacked by tar (which keeps paths inside).
        let plain = path(id, "checkpoints/\(record.sequence).tar")
        do {
            try BoundedGunzip.inflate(file: file, to: plain, limit: unpackedLimit)
        } catch {
            throw RunnerError(message: "checkpoint \(record.sequence) refused: \(error)")
        }
        defer { try? FileManager.default.removeItem(atPath: plain) }
        try Self.tar(["-xf", plain, "-C", directory, "--no-same-owner", "--no-same-permissions"])
        try Data(signed.serializedBytes() as [UInt8]).write(
            to: URL(fileURLWithPath: path(id, "checkpoints/\(record.sequence).record.pb")))
        var delivered: [String: Int64] = [:]
        for entry in record.delivered { delivered[entry.id] = entry.expiresAt }
        try JSONEncoder().encode(delivered).write(to: URL(fileURLWithPath: path(id, "delivered.json")))
        return record.sequence
    }

    /// After the allocation started (or after an agent restart while it runs): its mailbox, its identity sent to
    /// the orchestrator, its grant re-applied, its checkpoint schedule.
    func open(_ id: String, spec: Orrery_Orchestrator_V1_AllocationSpec) async {
        guard hosts[id] == nil else { return }
        do {
            let key = try KeyFile.read(path(id, "actor.key"))
            guard let text = try? String(contentsOfFile: path(id, "actor.address"), encoding: .utf8),
                let address = ActorAddress(text)
            else { return }
            var received: [CID: Int64] = [:]
            if let data = FileManager.default.contents(atPath: path(id, "delivered.json")),
                let saved = try? JSONDecoder().decode([String: Int64].self, from: data)
            {
                for (text, expiry) in saved { if let cid = try? CID(text) { received[cid] = expiry } }
            }
            let host = ActorHost(
                address: address, offerID: id, key: key, received: received,
                journal: ActorJournal(path: path(id, "mail.journal"), logger: logger), logger: logger, emit: emitter())
            if let data = FileManager.default.contents(atPath: path(id, "grant.pb")),
                let grant = try? Orrery_Actors_V1_ActorGrant(serializedBytes: data)
            {
                try? await host.apply(grant)
            }
            hosts[id] = host
            byAddress[address.description] = host
            resumeArchiveUploads(id)
            servers[id] = try await MailboxServer.start(
                path: Self.mailboxDirectory(id) + "/mailbox.sock", host: host, logger: logger)
            await announce(host)
            if spec.stateful, spec.checkpointIntervalSeconds > 0 {
                let interval = Duration.seconds(Int(spec.checkpointIntervalSeconds))
                schedules[id] = Task { [weak self] in
                    while !Task.isCancelled {
                        try? await Task.sleep(for: interval)
                        guard !Task.isCancelled, let self else { return }
                        await self.checkpoint(
                            .with {
                                $0.offerID = id
                                $0.reason = "schedule"
                            })
                    }
                }
            }
        } catch {
            logger.error("cannot open the actor's mailbox", metadata: ["offer": "\(id)", "error": "\(error)"])
        }
    }

    /// The allocation ended or was stopped: its mailbox closes.
    func close(_ id: String) async {
        schedules.removeValue(forKey: id)?.cancel()
        servers.removeValue(forKey: id)?.close()
        if let host = hosts.removeValue(forKey: id) { byAddress.removeValue(forKey: host.address.description) }
        try? FileManager.default.removeItem(atPath: Self.mailboxDirectory(id))
    }

    /// The actor's identity for the orchestrator: its DID and its key sealed to the orchestrator, signed by this
    /// device and by the actor.
    private func announce(_ host: ActorHost) async {
        guard let orchestrator = orchestratorDID else { return }
        do {
            let identity = Orrery_Actors_V1_ActorIdentity.with {
                $0.address = host.address.description
                $0.actorDid = host.key.did.string
                $0.offerID = host.offerID
            }
            var sealed = identity
            sealed.sealedKey = Data(try ActorKeySeal.seal(host.key, to: orchestrator))
            let signed = SignedMessage.make(
                type: Orrery_Actors_V1_ActorIdentity.protoMessageName, payload: try sealed.serializedData(),
                signers: [deviceKey, host.key])
            send(.with { $0.actor = signed })
        } catch {
            logger.error("cannot announce an actor", metadata: ["offer": "\(host.offerID)", "error": "\(error)"])
        }
    }

    /// The orchestrator this device's line is to (whose key actor keys are sealed to).
    var orchestratorDID: DID?

    func setOrchestrator(_ did: DID) { orchestratorDID = did }

    // MARK: From the orchestrator

    func grant(_ grant: Orrery_Actors_V1_ActorGrant) async {
        guard let host = hosts[grant.offerID] else { return }
        do {
            try await host.apply(grant)
            let merged = await host.currentGrant ?? grant
            try Data(merged.serializedBytes() as [UInt8]).write(
                to: URL(fileURLWithPath: path(grant.offerID, "grant.pb")), options: .atomic)
        } catch {
            logger.warning("actor grant refused", metadata: ["offer": "\(grant.offerID)", "error": "\(error)"])
        }
    }

    func mail(_ mail: Orrery_Actors_V1_Mail) async {
        guard let host = byAddress[mail.to] else {
            if case .envelope(let envelope) = mail.kind, let (from, id) = ActorEnvelopes.sender(of: envelope) {
                send(
                    ActorHost.report(
                        to: from.description, id: id, delivered: false, reason: "\(mail.to) is not on this device",
                        kind: "not-here"))
            }
            return
        }
        switch mail.kind {
        case .envelope(let envelope): await host.receive(envelope)
        case .report(let report): await host.report(report)
        case nil: break
        }
    }

    func chunk(_ chunk: Orrery_Actors_V1_CheckpointChunk) {
        if var fetch = fetches[chunk.offerID] {
            // A piece of a stored archive: taken only where what arrived ends (one resent, or from a line that
            // dropped, is not).
            guard fetch.failure == nil, chunk.sequence == fetch.sequence, chunk.offset == UInt64(fetch.received),
                !chunk.data.isEmpty, chunk.data.count <= Self.chunkSize,
                fetch.received + Int64(chunk.data.count) <= fetch.size
            else { return }
            do {
                try fetch.file.append([UInt8](chunk.data))
                fetch.hasher.update(data: chunk.data)
                fetch.received += Int64(chunk.data.count)
            } catch {
                fetch.failure = "\(error)"
            }
            fetches[chunk.offerID] = fetch
            return
        }
        var entry = incoming[chunk.offerID] ?? (chunk.sequence, [:])
        if entry.sequence != chunk.sequence { entry = (chunk.sequence, [:]) }
        guard Int64(entry.chunks.count * Self.chunkSize) < Self.inlineLimit, chunk.data.count <= Self.chunkSize else {
            return
        }
        entry.chunks[chunk.index] = chunk.data
        incoming[chunk.offerID] = entry
    }

    /// A stored archive fetched into `file` for a resume, at most `fetchWindow` asked for ahead of what arrived.
    /// - Returns: the sha256 and size of what arrived (checked against the record by the caller).
    private func fetchArchive(_ id: String, record: Orrery_Actors_V1_Checkpoint, into file: String) async throws
        -> (sha256: String, size: Int64)
    {
        guard FileManager.default.createFile(atPath: file, contents: nil) else {
            throw RunnerError(message: "cannot create \(file)")
        }
        let size = Int64(record.size)
        fetches[id] = ArchiveFetch(file: try AppendOnlyFile(path: file), sequence: record.sequence, size: size)
        defer { fetches[id] = nil }
        var lastArrival = ContinuousClock.now
        var lastReceived: Int64 = 0
        var askedAgain = 0
        while let fetch = fetches[id], fetch.received < size {
            if let failure = fetch.failure {
                throw RunnerError(message: "checkpoint \(record.sequence)'s archive cannot be written: \(failure)")
            }
            if fetch.received > lastReceived {
                (lastReceived, lastArrival) = (fetch.received, .now)
            } else if ContinuousClock.now - lastArrival > fetchStall {
                askedAgain += 1
                guard askedAgain <= 4 else {
                    throw RunnerError(
                        message:
                            "checkpoint \(record.sequence)'s archive stopped arriving at byte \(fetch.received) of \(size)"
                    )
                }
                // Answers lost with a line: asked again from what arrived.
                fetches[id]?.requested = fetch.received
                lastArrival = .now
            }
            if let current = fetches[id], current.requested < size,
                current.requested - current.received <= Self.fetchWindow / 2
            {
                let length = min(Self.fetchWindow, size - current.requested)
                send(
                    .with {
                        $0.checkpointFetch = .with {
                            $0.offerID = id
                            $0.sequence = record.sequence
                            $0.offset = UInt64(current.requested)
                            $0.length = UInt64(length)
                        }
                    })
                fetches[id]?.requested = current.requested + length
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        guard let fetch = fetches[id] else { throw CancellationError() }
        return (Hex.encode(fetch.hasher.finalize()), fetch.received)
    }

    /// The content store's answer about an archive: more of it, or the end — the record goes once the store holds
    /// it; refused, the checkpoint is lost (logged).
    func archiveProgress(_ progress: Orrery_Orchestrator_V1_OutputProgress) {
        let key = Self.uploadKey(progress.offerID, progress.checkpointSequence)
        guard var entry = archiveUploads[key] else { return }
        if !progress.refused.isEmpty || progress.complete {
            archiveUploads[key] = nil
            try? FileManager.default.removeItem(atPath: entry.upload.file)
            try? FileManager.default.removeItem(
                atPath: path(progress.offerID, "checkpoints/\(progress.checkpointSequence).pending.pb"))
            guard progress.complete else {
                logger.warning(
                    "the orchestrator refused a checkpoint archive",
                    metadata: [
                        "offer": "\(progress.offerID)", "sequence": "\(progress.checkpointSequence)",
                        "why": "\(progress.refused)",
                    ])
                return
            }
            send(
                .with {
                    $0.checkpoint = .with {
                        $0.offerID = progress.offerID
                        $0.sequence = progress.checkpointSequence
                        $0.record = entry.record
                        $0.archiveStored = true
                    }
                })
            return
        }
        let before = entry.upload.stored
        let sends = entry.upload.answered(stored: Int64(clamping: progress.stored))
        if before < entry.upload.size / 2, entry.upload.stored >= entry.upload.size / 2 {
            CrashPoint.reach("agent.checkpoint-half-stored", logger: logger)
        }
        archiveUploads[key] = entry
        sendArchive(sends, key: key)
    }

    private static func uploadKey(_ offerID: String, _ sequence: UInt64) -> String { "\(offerID)/\(sequence)" }

    /// Sends checkpoint `sequence`'s archive to the content store from what it holds (all of it, for a new one).
    private func startArchiveUpload(
        _ id: String, sequence: UInt64, record: Orrery_Common_V1_Signed, size: Int64, sha256: String
    ) {
        var upload = StoreUpload(
            offerID: id, path: "/checkpoints/\(sequence)", file: path(id, "checkpoints/\(sequence).tar.gz"), size: size,
            sha256: sha256)
        upload.checkpointSequence = sequence
        let key = Self.uploadKey(id, sequence)
        let sends = upload.restart()
        archiveUploads[key] = (upload, record)
        sendArchive(sends, key: key)
    }

    /// After an agent restart: the archives an allocation was sending when it stopped (journalled records beside
    /// their archives) go on from what the store holds.
    private func resumeArchiveUploads(_ id: String) {
        let folder = path(id, "checkpoints")
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        where name.hasSuffix(".pending.pb") {
            guard let sequence = UInt64(name.dropLast(".pending.pb".count)),
                archiveUploads[Self.uploadKey(id, sequence)] == nil,
                let bytes = FileManager.default.contents(atPath: folder + "/" + name),
                let record = try? Orrery_Common_V1_Signed(serializedBytes: bytes),
                let checkpoint = try? Orrery_Actors_V1_Checkpoint(serializedBytes: record.payload),
                checkpoint.sequence == sequence,
                let (sha256, size) = try? StoreUpload.digest(of: folder + "/\(sequence).tar.gz"),
                sha256 == checkpoint.sha256, UInt64(size) == checkpoint.size
            else {
                try? FileManager.default.removeItem(atPath: folder + "/" + name)
                continue
            }
            logger.info("checkpoint archive resumed", metadata: ["offer": "\(id)", "sequence": "\(sequence)"])
            startArchiveUpload(id, sequence: sequence, record: record, size: size, sha256: sha256)
        }
    }

    private func sendArchive(_ sends: [StoreUpload.Send], key: String) {
        guard let entry = archiveUploads[key] else { return }
        for piece in sends {
            do {
                send(try entry.upload.chunk(piece))
            } catch {
                archiveUploads[key] = nil
                logger.warning(
                    "a checkpoint archive cannot be read",
                    metadata: ["offer": "\(entry.upload.offerID)", "error": "\(error)"])
                return
            }
        }
    }

    /// Takes a checkpoint once the one before it (if any) is done, and ships it; a failure (the workload did not
    /// answer in time) is logged. The schedule's own request is skipped while another is asked for or taken, or
    /// while the actor is paused for a move (the move's checkpoint is the one it resumes from).
    func checkpoint(_ request: Orrery_Actors_V1_CheckpointRequest) async {
        let id = request.offerID
        guard let host = hosts[id] else { return }
        let scheduled = request.reason == "schedule"
        if scheduled {
            let paused = await host.isPaused
            if takes[id] != nil || paused { return }
        }
        let before = takes[id]?.task
        let task = Task {
            await before?.value
            await self.take(request, host: host)
        }
        takes[id] = (task, (takes[id]?.waiting ?? 0) + 1)
        await task.value
        if let entry = takes[id] {
            takes[id] = entry.waiting > 1 ? (entry.task, entry.waiting - 1) : nil
        }
    }

    private func take(_ request: Orrery_Actors_V1_CheckpointRequest, host: ActorHost) async {
        let id = request.offerID
        do {
            try await take(
                id, host: host, reason: request.reason.isEmpty ? "request" : request.reason,
                requestID: request.requestID)
            if request.reason == "move" {
                // Paused for a move: if no Stop comes (the move failed after the checkpoint), it receives again.
                Task {
                    try? await Task.sleep(for: .seconds(120))
                    await self.resumeDelivery(id)
                }
            }
        } catch {
            logger.warning("checkpoint failed", metadata: ["offer": "\(id)", "error": "\(error)"])
        }
    }

    private func take(_ id: String, host: ActorHost, reason: String, requestID: String) async throws {
        let previous =
            (try? String(contentsOfFile: path(id, "checkpoint.sequence"), encoding: .utf8)).flatMap {
                UInt64($0.trimmed())
            } ?? 0
        let sequence = previous + 1
        guard
            let delivered = await host.checkpoint(
                id: "ck-\(sequence)", pause: reason == "move", timeout: .seconds(30))
        else { throw RunnerError(message: "the workload did not answer the checkpoint request within 30 s") }
        let file = path(id, "checkpoints/\(sequence).tar.gz")
        try Self.tar(["-czf", file, "-C", path(id, "orrery/checkpoint"), "."])
        let (sha256, size) = try StoreUpload.digest(of: file)
        guard size <= archiveLimit else {
            try? FileManager.default.removeItem(atPath: file)
            throw RunnerError(message: "the checkpoint is \(size) bytes, more than \(archiveLimit)")
        }
        let record = Orrery_Actors_V1_Checkpoint.with {
            $0.address = host.address.description
            $0.actorDid = host.key.did.string
            $0.offerID = id
            $0.contractID = (try? String(contentsOfFile: path(id, "actor.contract"), encoding: .utf8)) ?? ""
            $0.sequence = sequence
            $0.sha256 = sha256
            $0.size = UInt64(size)
            $0.takenAt = Google_Protobuf_Timestamp(date: Date())
            $0.reason = reason
            $0.requestID = requestID
            $0.delivered = delivered.sorted { $0.key < $1.key }.prefix(10_000).map { cid, expiry in
                .with {
                    $0.id = cid.string
                    $0.expiresAt = expiry
                }
            }
        }
        let signed = SignedMessage.make(
            type: Orrery_Actors_V1_Checkpoint.protoMessageName, payload: try record.serializedData(),
            signers: [deviceKey, host.key])
        try Data(String(sequence).utf8).write(to: URL(fileURLWithPath: path(id, "checkpoint.sequence")))
        logger.info(
            "checkpoint taken", metadata: ["offer": "\(id)", "sequence": "\(sequence)", "bytes": "\(size)"])
        guard size <= Self.inlineLimit else {
            // Journalled first: an agent restarted before the store holds it sends it on from there.
            try Data(signed.serializedBytes() as [UInt8]).write(
                to: URL(fileURLWithPath: path(id, "checkpoints/\(sequence).pending.pb")), options: .atomic)
            startArchiveUpload(id, sequence: sequence, record: signed, size: size, sha256: sha256)
            return
        }
        let archive = try Data(contentsOf: URL(fileURLWithPath: file))
        try? FileManager.default.removeItem(atPath: file)
        let count = max(1, (archive.count + Self.chunkSize - 1) / Self.chunkSize)
        for index in 0..<count {
            let start = index * Self.chunkSize
            let slice = archive.subdata(in: start..<min(archive.count, start + Self.chunkSize))
            send(
                .with {
                    $0.checkpoint = .with {
                        $0.offerID = id
                        $0.sequence = sequence
                        $0.index = UInt32(index)
                        $0.data = slice
                        if index == count - 1 { $0.record = signed }
                    }
                })
        }
    }

    /// A planned move was abandoned: the actor receives again.
    func resumeDelivery(_ id: String) async { await hosts[id]?.unpause() }

    static func tar(_ arguments: [String]) throws {
        let outcome = try ChildCommand.runAndWait("/usr/bin/tar", arguments, captureOutput: false)
        guard outcome.status == 0 else {
            throw RunnerError(message: "tar \(arguments.first ?? ""): \(outcome.errorText)")
        }
    }
}

/// A stored checkpoint archive on its way down for a resume: written to its file and hashed as its pieces come, in
/// order.
private struct ArchiveFetch {
    let file: AppendOnlyFile
    let sequence: UInt64
    let size: Int64
    /// Bytes written, from the start.
    var received: Int64 = 0
    /// Bytes asked for, from the start.
    var requested: Int64 = 0
    var hasher = SHA256()
    /// Why the file could not be written.
    var failure: String?

    init(file: AppendOnlyFile, sequence: UInt64, size: Int64) {
        self.file = file
        self.sequence = sequence
        self.size = size
    }
}
