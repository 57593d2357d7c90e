#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
public import OrreryProto

/// An audit of the settlement journal from what the gateway exported (`AuditJournal`), trusting none of it: the
/// chain is recomputed entry by entry and compared with the digests stored and the checkpoints the gateway signed;
/// every entry must balance, every account's balance must be the sum of its lines (and only a clearing account
/// may be negative); releases whose kept proof no longer verifies are named.
public struct JournalAudit: Sendable {
    /// What the audit found; the journal verifies when `problems` is empty.
    public struct Report: Sendable {
        public var problems: [String] = []
        /// Entries sealed into the chain, and entries not yet sealed (posted within about a second).
        public var sealed = 0
        public var unsealed = 0
        public var accounts = 0
        public var checkpoints = 0
        /// Releases whose proofs verified, and releases from before proofs were kept.
        public var provenReleases = 0
        public var legacyReleases = 0
        /// The last signed checkpoint (the chain's head as the gateway signed it).
        public var head: Orrery_Settlement_V1_JournalCheckpoint?
        /// Entries by kind.
        public var kinds: [String: Int] = [:]
    }

    /// The gateway whose signature checkpoints must carry.
    public let gateway: String

    public init(gateway: String) {
        self.gateway = gateway
    }

    /// Audits what `AuditJournal` streamed. `remembered` is the checkpoint this client verified last time: the
    /// chain must still pass through it (a journal rewritten and re-signed since is named even when coherent now).
    public func audit(
        _ items: [Orrery_Settlement_V1_AuditJournalItem], remembered: Orrery_Settlement_V1_JournalCheckpoint? = nil
    ) -> Report {
        var report = Report()
        var digests: [[UInt8]] = []
        var previous = JournalChain.genesis
        var sums: [String: SignedDecimal] = [:]
        var accounts: [Orrery_Settlement_V1_AccountBalance] = []
        var checkpoints: [Orrery_Common_V1_Signed] = []
        for item in items {
            switch item.item {
            case .entry(let entry):
                report.kinds[entry.kind, default: 0] += 1
                if entry.position == 0 {
                    report.unsealed += 1
                } else if entry.position != UInt64(digests.count + 1) {
                    report.problems.append(
                        "entry \(entry.id) is at position \(entry.position) of the chain, expected \(digests.count + 1): an entry was removed or moved"
                    )
                    previous = [UInt8](entry.chainDigest)
                    digests.append(previous)
                } else {
                    let digest = JournalChain.digest(previous: previous, entry: entry)
                    if digest != [UInt8](entry.chainDigest) {
                        report.problems.append(
                            "entry \(entry.id) (position \(entry.position)) was changed after it was sealed: its fields do not hash to the chain digest stored for it"
                        )
                    }
                    digests.append(digest)
                    previous = digest
                    report.sealed += 1
                }
                var total = SignedDecimal.zero
                for line in entry.lines {
                    guard let amount = SignedDecimal(line.amount) else {
                        report.problems.append("entry \(entry.id): '\(line.amount)' is not an amount")
                        continue
                    }
                    total = total + amount
                    sums[line.account, default: .zero] = sums[line.account, default: .zero] + amount
                }
                if !total.isZero {
                    report.problems.append("entry \(entry.id) does not balance: its lines sum to \(total)")
                }
            case .account(let account): accounts.append(account)
            case .checkpoint(let signed): checkpoints.append(signed)
            case .release(let check):
                if check.unprovenLegacy {
                    report.legacyReleases += 1
                } else if check.problem.isEmpty {
                    report.provenReleases += 1
                } else {
                    report.problems.append("release entry \(check.entryID) is not proven: \(check.problem)")
                }
            case nil: break
            }
        }
        report.accounts = accounts.count
        var listed = Set<String>()
        for account in accounts {
            listed.insert(account.account)
            let sum = sums[account.account] ?? .zero
            guard let balance = SignedDecimal(account.balance) else {
                report.problems.append("account \(account.account): '\(account.balance)' is not a balance")
                continue
            }
            if balance != sum {
                report.problems.append(
                    "account \(account.account) holds \(account.balance), but its journal lines sum to \(sum)")
            }
            if balance.isNegative && account.kind != "clearing" {
                report.problems.append("account \(account.account) is negative (\(account.balance))")
            }
        }
        for account in sums.keys.sorted() where !listed.contains(account) {
            report.problems.append("account \(account) has journal lines but no balance")
        }
        report.problems += audit(checkpoints: checkpoints, digests: digests, report: &report)
        if let remembered, remembered.gatewayDid == gateway {
            if remembered.position > UInt64(digests.count) {
                report.problems.append(
                    "the chain has \(digests.count) entries, but \(remembered.position) were verified here before: entries were removed"
                )
            } else if remembered.position > 0,
                digests[Int(remembered.position) - 1] != [UInt8](remembered.chainDigest)
            {
                report.problems.append(
                    "the chain through position \(remembered.position) is not the one verified here before: the journal was rewritten"
                )
            }
        }
        return report
    }

    private func audit(checkpoints: [Orrery_Common_V1_Signed], digests: [[UInt8]], report: inout Report) -> [String] {
        var problems: [String] = []
        for signed in checkpoints {
            let checkpoint: Orrery_Settlement_V1_JournalCheckpoint
            do {
                checkpoint = try JournalChain.verifyCheckpoint(signed)
            } catch {
                problems.append("a checkpoint's signature does not verify: \(error)")
                continue
            }
            guard checkpoint.gatewayDid == gateway else {
                problems.append(
                    "the checkpoint at position \(checkpoint.position) is signed by \(checkpoint.gatewayDid), not by the gateway \(gateway)"
                )
                continue
            }
            report.checkpoints += 1
            guard checkpoint.position >= 1, checkpoint.position <= UInt64(digests.count) else {
                problems.append(
                    "the gateway signed a chain of \(checkpoint.position) entries, but only \(digests.count) are sealed: entries were removed"
                )
                continue
            }
            if digests[Int(checkpoint.position) - 1] != [UInt8](checkpoint.chainDigest) {
                problems.append(
                    "the chain through position \(checkpoint.position) is not the one the gateway signed: the journal was rewritten before it"
                )
            }
            if checkpoint.position >= report.head?.position ?? 0 { report.head = checkpoint }
        }
        if !digests.isEmpty, report.head?.position != UInt64(digests.count) {
            problems.append(
                "positions \((report.head?.position ?? 0) + 1)…\(digests.count) of the chain are covered by no checkpoint the gateway signed"
            )
        }
        return problems
    }
}

/// A signed integer of any size in decimal (journal amounts are up to 78 digits), for sums only.
public struct SignedDecimal: Sendable, Equatable, CustomStringConvertible {
    /// Base 10⁹ limbs, least significant first, no trailing zero limbs (zero is empty).
    private var limbs: [UInt32]
    private var negative: Bool
    private static let base: UInt64 = 1_000_000_000

    public static let zero = SignedDecimal(limbs: [], negative: false)

    private init(limbs: [UInt32], negative: Bool) {
        var limbs = limbs
        while limbs.last == 0 { limbs.removeLast() }
        self.limbs = limbs
        self.negative = negative && !limbs.isEmpty
    }

    /// An optional '-' and decimal digits.
    public init?(_ text: String) {
        let negative = text.hasPrefix("-")
        let digits = Array(negative ? text.dropFirst() : Substring(text))
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        var limbs: [UInt32] = []
        var end = digits.count
        while end > 0 {
            let start = max(0, end - 9)
            limbs.append(UInt32(String(digits[start..<end])) ?? 0)
            end = start
        }
        self.init(limbs: limbs, negative: negative)
    }

    public var isZero: Bool { limbs.isEmpty }
    public var isNegative: Bool { negative }
    public var isPositive: Bool { !negative && !limbs.isEmpty }

    public static func + (lhs: SignedDecimal, rhs: SignedDecimal) -> SignedDecimal {
        if lhs.negative == rhs.negative {
            return SignedDecimal(limbs: add(lhs.limbs, rhs.limbs), negative: lhs.negative)
        }
        if compare(lhs.limbs, rhs.limbs) >= 0 {
            return SignedDecimal(limbs: subtract(lhs.limbs, rhs.limbs), negative: lhs.negative)
        }
        return SignedDecimal(limbs: subtract(rhs.limbs, lhs.limbs), negative: rhs.negative)
    }

    public var description: String {
        guard let top = limbs.last else { return "0" }
        var text = (negative ? "-" : "") + String(top)
        for limb in limbs.dropLast().reversed() {
            let digits = String(limb)
            text += String(repeating: "0", count: 9 - digits.count) + digits
        }
        return text
    }

    private static func add(_ a: [UInt32], _ b: [UInt32]) -> [UInt32] {
        var result: [UInt32] = []
        var carry: UInt64 = 0
        for index in 0..<max(a.count, b.count) {
            let sum = UInt64(index < a.count ? a[index] : 0) + UInt64(index < b.count ? b[index] : 0) + carry
            result.append(UInt32(sum % base))
            carry = sum / base
        }
        if carry > 0 { result.append(UInt32(carry)) }
        return result
    }

    /// `a - b` for `a ≥ b`.
    private static func subtract(_ a: [UInt32], _ b: [UInt32]) -> [UInt32] {
        var result: [UInt32] = []
        var borrow: Int64 = 0
        for index in 0..<a.count {
            var difference = Int64(a[index]) - Int64(index < b.count ? b[index] : 0) - borrow
            borrow = difference < 0 ? 1 : 0
            if difference < 0 { difference += Int64(base) }
            result.append(UInt32(difference))
        }
        return result
    }

    private static func compare(_ a: [UInt32], _ b: [UInt32]) -> Int {
        if a.count != b.count { return a.count < b.count ? -1 : 1 }
        for index in stride(from: a.count - 1, through: 0, by: -1) where a[index] != b[index] {
            return a[index] < b[index] ? -1 : 1
        }
        return 0
    }
}
