import Foundation
import OrreryIdentity
import OrreryLedger
import OrreryProto
import SwiftProtobuf
import Testing

/// The settlement journal's audit: a chain recomputed from the entries, checkpoints the gateway signed, balances as
/// the sums of lines — and each kind of tampering named.
@Suite("Settlement journal audit")
struct JournalAuditTests {
    let gateway = SigningKey()

    /// Three entries: a deposit of 100, an escrow of 60, a release of 20 (fee 1) — sealed, with their accounts.
    func journal() -> (entries: [Orrery_Settlement_V1_ChainedEntry], accounts: [Orrery_Settlement_V1_AccountBalance]) {
        let lines: [[(String, String)]] = [
            [("available/did:a", "100"), ("clearing/ledger", "-100")],
            [("available/did:a", "-60"), ("escrow/ctr_1", "60")],
            [("escrow/ctr_1", "-20"), ("fee/0", "1"), ("receivable/did:b", "19")],
        ]
        let kinds = ["deposit", "escrow", "release"]
        var previous = JournalChain.genesis
        var entries: [Orrery_Settlement_V1_ChainedEntry] = []
        for index in 0..<3 {
            var entry = Orrery_Settlement_V1_ChainedEntry.with {
                $0.position = UInt64(index + 1)
                $0.id = Int64(index + 10)
                $0.kind = kinds[index]
                $0.contractID = index == 0 ? "" : "ctr_1"
                $0.memo = "memo \(index)"
                $0.invoker = "did:key:operator"
                $0.idempotencyKey = "key-\(index)"
                $0.requestSha256 = Data(repeating: UInt8(index), count: 32)
                $0.createdAtMicros = 1_700_000_000_000_000 + Int64(index)
                $0.lines = lines[index].map { account, amount in
                    .with {
                        $0.account = account
                        $0.amount = amount
                    }
                }
            }
            previous = JournalChain.digest(previous: previous, entry: entry)
            entry.chainDigest = Data(previous)
            entries.append(entry)
        }
        let balances = [
            ("available/did:a", "available", "40"), ("clearing/ledger", "clearing", "-100"),
            ("escrow/ctr_1", "escrow", "40"), ("fee/0", "fee", "1"), ("receivable/did:b", "receivable", "19"),
        ]
        let accounts = balances.map { account, kind, balance in
            Orrery_Settlement_V1_AccountBalance.with {
                $0.account = account
                $0.kind = kind
                $0.balance = balance
            }
        }
        return (entries, accounts)
    }

    func items(
        _ entries: [Orrery_Settlement_V1_ChainedEntry], _ accounts: [Orrery_Settlement_V1_AccountBalance],
        signedBy key: SigningKey? = nil, through position: Int? = nil
    ) throws -> [Orrery_Settlement_V1_AuditJournalItem] {
        let position = position ?? entries.count
        let checkpoint = try JournalChain.checkpoint(
            position: UInt64(position), digest: [UInt8](entries[position - 1].chainDigest), at: Date(),
            key: key ?? gateway)
        return entries.map { entry in .with { $0.entry = entry } }
            + accounts.map { account in .with { $0.account = account } }
            + [.with { $0.checkpoint = checkpoint }]
    }

    @Test("an honest journal verifies: chain, balances, checkpoint")
    func honest() throws {
        let (entries, accounts) = journal()
        let report = JournalAudit(gateway: gateway.did.string).audit(try items(entries, accounts))
        #expect(report.problems.isEmpty, "\(report.problems)")
        #expect(report.sealed == 3 && report.accounts == 5 && report.checkpoints == 1)
        #expect(report.head?.position == 3)
        #expect(report.kinds == ["deposit": 1, "escrow": 1, "release": 1])
    }

    @Test("an amount changed from 100 to 1100 is named: the entry's digest, its balance and the account's sum")
    func changedAmount() throws {
        var (entries, accounts) = journal()
        entries[0].lines[0].amount = "1100"
        let problems = JournalAudit(gateway: gateway.did.string).audit(try items(entries, accounts)).problems
        #expect(
            problems.contains { $0.contains("entry 10 (position 1) was changed after it was sealed") }, "\(problems)")
        #expect(problems.contains { $0.contains("entry 10 does not balance: its lines sum to 1000") }, "\(problems)")
        #expect(
            problems.contains { $0.contains("account available/did:a holds 40, but its journal lines sum to 1040") },
            "\(problems)")
    }

    @Test(
        "a journal rewritten coherently (lines, balances and every digest recomputed) does not match the signed checkpoint"
    )
    func rewrittenAndRechained() throws {
        var (entries, accounts) = journal()
        let signed = try items(entries, accounts)
        // The release pays 29 instead of 19, from the fee; balances and the chain made to agree.
        entries[2].lines[1].amount = "-9"
        entries[2].lines[2].amount = "29"
        accounts[3].balance = "-9"
        accounts[4].balance = "29"
        var previous = JournalChain.genesis
        for index in entries.indices {
            previous = JournalChain.digest(previous: previous, entry: entries[index])
            entries[index].chainDigest = Data(previous)
        }
        let forged =
            entries.map { entry in Orrery_Settlement_V1_AuditJournalItem.with { $0.entry = entry } }
            + accounts.map { account in .with { $0.account = account } }
            + signed.filter {
                if case .checkpoint = $0.item { return true }
                return false
            }
        let problems = JournalAudit(gateway: gateway.did.string).audit(forged).problems
        #expect(
            problems.contains { $0.contains("the chain through position 3 is not the one the gateway signed") },
            "\(problems)")
        #expect(problems.contains { $0.contains("account fee/0 is negative") }, "\(problems)")
    }

    @Test("a checkpoint signed by another key, a removed entry, and positions past the last checkpoint are named")
    func forgedCheckpointAndGaps() throws {
        let (entries, accounts) = journal()
        let other = SigningKey()
        var problems = JournalAudit(gateway: gateway.did.string).audit(try items(entries, accounts, signedBy: other))
            .problems
        #expect(problems.contains { $0.contains("signed by \(other.did), not by the gateway") }, "\(problems)")
        #expect(problems.contains { $0.contains("covered by no checkpoint") }, "\(problems)")

        problems = JournalAudit(gateway: gateway.did.string).audit(try items(entries, accounts, through: 2)).problems
        #expect(problems == ["positions 3…3 of the chain are covered by no checkpoint the gateway signed"])

        var removed = try items(entries, accounts)
        removed.remove(at: 1)
        problems = JournalAudit(gateway: gateway.did.string).audit(removed).problems
        #expect(problems.contains { $0.contains("entry 12 is at position 3 of the chain, expected 2") }, "\(problems)")
    }

    @Test("the chain must still pass through the checkpoint verified last time")
    func remembered() throws {
        let (entries, accounts) = journal()
        let audit = JournalAudit(gateway: gateway.did.string)
        let head = try #require(audit.audit(try items(entries, accounts)).head)
        #expect(audit.audit(try items(entries, accounts), remembered: head).problems.isEmpty)
        var other = head
        other.chainDigest = Data(repeating: 7, count: 32)
        #expect(
            audit.audit(try items(entries, accounts), remembered: other).problems == [
                "the chain through position 3 is not the one verified here before: the journal was rewritten"
            ])
        other.position = 4
        #expect(
            audit.audit(try items(entries, accounts), remembered: other).problems == [
                "the chain has 3 entries, but 4 were verified here before: entries were removed"
            ])
    }

    @Test("a release whose kept proof does not verify is named; unsealed entries still count in the balances")
    func releasesAndUnsealed() throws {
        var (entries, accounts) = journal()
        entries[2].position = 0
        entries[2].chainDigest = Data()
        var audited = try items(entries, accounts, through: 2)
        audited.append(
            .with {
                $0.release = .with {
                    $0.entryID = 12; $0.problem = "no proof is kept for it"
                }
            })
        let report = JournalAudit(gateway: gateway.did.string).audit(audited)
        #expect(report.problems == ["release entry 12 is not proven: no proof is kept for it"])
        #expect(report.sealed == 2 && report.unsealed == 1)
    }

    @Test("sums of amounts of any size (78 digits)")
    func decimals() throws {
        let big = String(repeating: "9", count: 78)
        let one = try #require(SignedDecimal("1"))
        let sum = try #require(SignedDecimal(big)) + one
        #expect(sum.description == "1" + String(repeating: "0", count: 78))
        #expect((sum + (try #require(SignedDecimal("-" + big)))).description == "1")
        #expect(
            (try #require(SignedDecimal("-1000000000")) + (try #require(SignedDecimal("999999999")))).description
                == "-1")
        #expect((try #require(SignedDecimal("5")) + (try #require(SignedDecimal("-5")))).isZero)
        #expect(SignedDecimal("1e3") == nil && SignedDecimal("") == nil && SignedDecimal("-") == nil)
    }
}
