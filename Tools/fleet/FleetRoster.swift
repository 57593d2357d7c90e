import Crypto
import Foundation
import OrreryIdentity
import OrreryProto

/// The fleet's identities, derived from one seed so that a fleet joined once can be run again as the same devices:
/// device `i`'s key, its owner's key (one owner per `devicesPerOwner` devices), the operator's grant to each owner
/// and each owner's grant to its devices — the chain a real device joins with.
struct FleetRoster: Sendable {
    /// One device's identity and the chain (operator → owner → device) its calls carry.
    struct Member: Sendable {
        let index: Int
        let key: SigningKey
        let chain: [Delegation]
        let ownerDID: DID
    }

    let seed: UInt64
    let operatorDID: DID
    private let ownerKeys: [SigningKey]
    private let ownerGrants: [Delegation]
    let devicesPerOwner: Int

    init(seed: UInt64, operatorKey: SigningKey, devices: Int, devicesPerOwner: Int) throws {
        self.seed = seed
        self.operatorDID = operatorKey.did
        self.devicesPerOwner = max(1, devicesPerOwner)
        let owners = (devices + self.devicesPerOwner - 1) / self.devicesPerOwner
        ownerKeys = try (0..<max(1, owners)).map { try Self.key("owner", $0, seed: seed) }
        let expiry = Int64(Date().timeIntervalSince1970) + 7 * 86_400
        let command = try Command("/orrery/registry")
        ownerGrants = ownerKeys.map {
            Delegation.issue(
                by: operatorKey, to: $0.did, subject: operatorKey.did, command: command, expiration: expiry)
        }
    }

    /// Device `index`: its key, and a fresh grant from its owner (valid a week).
    func member(_ index: Int) throws -> Member {
        let key = try Self.key("device", index, seed: seed)
        let owner = index / devicesPerOwner
        let grant = Delegation.issue(
            by: ownerKeys[owner], to: key.did, subject: operatorDID, command: try Command("/orrery/registry"),
            expiration: Int64(Date().timeIntervalSince1970) + 7 * 86_400)
        return Member(index: index, key: key, chain: [ownerGrants[owner], grant], ownerDID: ownerKeys[owner].did)
    }

    /// The key of `role` number `index`: an Ed25519 seed hashed from the fleet's seed, so every run derives it again.
    static func key(_ role: String, _ index: Int, seed: UInt64) throws -> SigningKey {
        var input = Data("orrery-fleet/\(role)/".utf8)
        withUnsafeBytes(of: seed.bigEndian) { input.append(contentsOf: $0) }
        withUnsafeBytes(of: UInt64(index).bigEndian) { input.append(contentsOf: $0) }
        return try SigningKey(seed: Array(SHA256.hash(data: input)))
    }
}
