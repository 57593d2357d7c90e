#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
internal import OrreryIdentity
internal import OrreryProto
internal import SwiftProtobuf

/// The device's signed receipts for each allocation under contract (docs/ARCHITECTURE.md §3): periodic usage receipts and a
/// final completion receipt, numbered 1, 2, 3 … per contract, kept in the allocation's directory until the notary
/// has recorded them, so a restart or a lost line resends rather than loses or renumbers them.
struct ReceiptBook: Sendable {
    let key: SigningKey
    let runner: AllocationRunner

    /// The contract an allocation runs under (empty: none, e.g. `run-local`).
    func contract(_ id: String) -> String {
        (try? String(contentsOfFile: runner.directory(id) + "/contract", encoding: .utf8)) ?? ""
    }

    func setContract(_ id: String, contract: String) throws {
        try FileManager.default.createDirectory(atPath: runner.directory(id), withIntermediateDirectories: true)
        try contract.write(toFile: runner.directory(id) + "/contract", atomically: true, encoding: .utf8)
    }

    /// Receipts not yet acknowledged, oldest first.
    func pending(_ id: String) -> [Orrery_Common_V1_Signed] {
        guard let data = FileManager.default.contents(atPath: runner.directory(id) + "/receipts.pb"),
            let holder = try? Orrery_Orchestrator_V1_AllocationReport(serializedBytes: data)
        else { return [] }
        return holder.receipts
    }

    /// Marks an allocation the orchestrator stopped: its contract ends by termination, so its last receipt is a
    /// usage receipt, not a completion receipt.
    func markStopped(_ id: String) {
        _ = FileManager.default.createFile(atPath: runner.directory(id) + "/stopped-by-orchestrator", contents: Data())
    }

    func wasStopped(_ id: String) -> Bool {
        FileManager.default.fileExists(atPath: runner.directory(id) + "/stopped-by-orchestrator")
    }

    /// Whether the completion receipt was issued.
    func completed(_ id: String) -> Bool { FileManager.default.fileExists(atPath: runner.directory(id) + "/completed") }

    /// Signs the usage so far as the next receipt; nil without a contract.
    func issueUsage(_ id: String, usage: Orrery_Notary_V1_UsageReceipt) throws -> Orrery_Common_V1_Signed? {
        let contract = contract(id)
        guard !contract.isEmpty, !completed(id) else { return nil }
        var receipt = usage
        receipt.contractID = contract
        receipt.sequence = nextSequence(id)
        return try issue(
            id, type: Orrery_Notary_V1_UsageReceipt.protoMessageName, payload: receipt.serializedData(),
            sequence: receipt.sequence)
    }

    /// Signs the completion receipt (once); nil without a contract or when it was issued already.
    func issueCompletion(
        _ id: String, usage: Orrery_Notary_V1_UsageReceipt, exitCode: Int32, artifactSHA256: String,
        outputs: [AllocationOutcome.Output]
    ) throws -> Orrery_Common_V1_Signed? {
        let contract = contract(id)
        guard !contract.isEmpty, !completed(id) else { return nil }
        let sequence = nextSequence(id)
        var usage = usage
        usage.contractID = contract
        usage.sequence = sequence
        let receipt = Orrery_Notary_V1_CompletionReceipt.with {
            $0.contractID = contract
            $0.sequence = sequence
            $0.artifactSha256 = artifactSHA256
            $0.exitCode = exitCode
            $0.outputs = outputs.map { output in
                .with {
                    $0.path = output.path
                    $0.sha256 = output.sha256
                    $0.size = UInt64(max(0, output.size))
                    $0.location = output.location ?? ""
                }
            }
            $0.usage = usage
        }
        let signed = try issue(
            id, type: Orrery_Notary_V1_CompletionReceipt.protoMessageName, payload: receipt.serializedData(),
            sequence: sequence)
        _ = FileManager.default.createFile(atPath: runner.directory(id) + "/completed", contents: Data())
        return signed
    }

    /// Forgets the receipts the notary recorded, up to `sequence`.
    func acknowledge(_ id: String, through sequence: UInt64) throws {
        let left = pending(id).filter { DeviceSignatures.sequence(of: $0) > sequence }
        try save(id, left)
    }

    /// The next sequence number, persisted before the receipt that carries it is sent.
    private func nextSequence(_ id: String) -> UInt64 {
        let path = runner.directory(id) + "/receipt-sequence"
        let last = (try? String(contentsOfFile: path, encoding: .utf8)).flatMap { UInt64($0) } ?? 0
        return last + 1
    }

    private func issue(_ id: String, type: String, payload: Data, sequence: UInt64) throws -> Orrery_Common_V1_Signed {
        let signed = SignedMessage.make(type: type, payload: payload, signers: [key])
        try save(id, pending(id) + [signed])
        try String(sequence).write(
            toFile: runner.directory(id) + "/receipt-sequence", atomically: true, encoding: .utf8)
        return signed
    }

    private func save(_ id: String, _ receipts: [Orrery_Common_V1_Signed]) throws {
        let holder = Orrery_Orchestrator_V1_AllocationReport.with { $0.receipts = receipts }
        try Data(try holder.serializedBytes() as [UInt8]).write(
            to: URL(fileURLWithPath: runner.directory(id) + "/receipts.pb"), options: .atomic)
    }
}
