import ArgumentParser
import Crypto
import Foundation
import OrreryCardano
import OrreryEthereum
import OrreryIdentity
import OrreryProto
import OrreryAddressBinding
import SwiftProtobuf

/// `orrery address bind|list`: chain addresses bound to your DID for payouts and deposits.
struct AddressCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "address", abstract: "Chain addresses bound to a DID (payouts go to them, deposits from them).",
        subcommands: [Bind.self, List.self])

    struct Bind: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Bind the address of a chain key file to your DID: signs the gateway's challenge with it (EIP-712 or CIP-8)."
        )
        @Option(help: "ethereum or cardano.") var chain: String
        @Option(help: "The chain key file (hex, mode 0600): secp256k1 for ethereum, an Ed25519 seed for cardano.")
        var chainKey: String
        @Flag(help: "Cardano: a testnet address.") var testnet = false
        @OptionGroup var options: SettlementOptions

        func run() async throws {
            let me = try options.ownDID()
            let gateway = try await options.gatewayDID()
            let now = Int64(Date().timeIntervalSince1970)
            let nonce = UUID().uuidString
            var request = Orrery_Settlement_V1_BindAddressRequest.with {
                $0.chain = chain
                $0.issuedAt = now
                $0.nonce = nonce
            }
            do {
                switch chain {
                case "ethereum":
                    let key = try Secp256k1PrivateKey(bytes: try KeyFile.readBytes(chainKey))
                    let challenge = AddressBindingChallenge(
                        did: me, chain: chain, address: key.address.checksummed, gateway: gateway, issuedAt: now,
                        nonce: nonce)
                    request.address = key.address.checksummed
                    request.signature = Data(key.sign(digest: try challenge.typedData.digest()).rsv)
                case "cardano":
                    let key = try Curve25519.Signing.PrivateKey(rawRepresentation: try KeyFile.readBytes(chainKey))
                    let address = CardanoAddress(paymentKey: key.publicKey, network: testnet ? .testnet : .mainnet)
                    let challenge = AddressBindingChallenge(
                        did: me, chain: chain, address: address.bech32, gateway: gateway, issuedAt: now, nonce: nonce)
                    let signed = try COSESign1.sign(
                        payload: Array(challenge.text.utf8), address: address, signingKey: key)
                    request.address = address.bech32
                    request.signature = Data(signed.signature)
                    request.coseKey = Data(signed.key)
                default:
                    throw ValidationError("--chain: ethereum or cardano")
                }
            } catch let error as ValidationError {
                throw error
            } catch {
                throw ValidationError("\(error)")
            }
            let bound = try await options.call { [request] in try await $0.bindAddress(request) }
            print("\(bound.chain) \(bound.address) bound to \(bound.did)")
            if bound.depositsCredited > 0 { print("\(bound.depositsCredited) earlier deposit(s) from it credited") }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The addresses bound to a DID.")
        @Argument(help: "The DID (default: the key's).") var did: String?
        @OptionGroup var options: SettlementOptions

        func run() async throws {
            let who = try did ?? options.ownDID()
            for binding in try await options.call({ try await $0.listAddresses(.with { $0.did = who }) }).bindings {
                print("\(binding.chain)\t\(binding.address)")
            }
        }
    }
}
