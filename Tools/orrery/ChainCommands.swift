import ArgumentParser
import Crypto
import Foundation
import OrreryCardano
import OrreryEthereum
import OrreryIdentity

/// `orrery eth …`: offline Ethereum tools for operators and auditors. Key files hold the private key as hex, mode 0600.
struct EthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eth", abstract: "Offline Ethereum tools: keys, addresses, EIP-712 digests and signatures.",
        subcommands: [NewKey.self, Address.self, HashTypedData.self, SignTypedData.self])

    struct NewKey: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "new-key", abstract: "Create a secp256k1 key file (hex, mode 0600) and print its address.")

        @Argument(help: "Where to write the key (refuses to overwrite).")
        var file: String

        func run() throws {
            let key = Secp256k1PrivateKey.generate()
            do { try KeyFile.writeBytes(key.rawRepresentation, to: file) } catch { throw ValidationError("\(error)") }
            print(key.address.checksummed)
        }
    }

    struct Address: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the EIP-55 address of a key file.")

        @Option(help: "The key file (hex private key, mode 0600).")
        var key: String

        func run() throws { print(try ethereumKey(key).address.checksummed) }
    }

    struct HashTypedData: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "hash-typed-data",
            abstract: "Print the EIP-712 digest (hex) of typed data in the eth_signTypedData_v4 JSON shape.")

        @Argument(help: "The JSON file ('-' for standard input).")
        var file: String

        func run() throws { print(Hex.prefixed(try typedData(file).digest())) }
    }

    struct SignTypedData: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "sign-typed-data",
            abstract: "Sign EIP-712 typed data; prints the 65-byte r‖s‖v signature (hex).")

        @Argument(help: "The JSON file ('-' for standard input).")
        var file: String

        @Option(help: "The key file (hex private key, mode 0600).")
        var key: String

        func run() throws {
            let signer = try ethereumKey(key)
            print(Hex.prefixed(signer.sign(digest: try typedData(file).digest()).rsv))
        }
    }

    static func readText(_ file: String) throws -> String {
        let data =
            file == "-" ? FileHandle.standardInput.readDataToEndOfFile() : FileManager.default.contents(atPath: file)
        guard let data else { throw ValidationError("cannot read \(file)") }
        return String(decoding: data, as: UTF8.self)
    }

    static func typedData(_ file: String) throws -> TypedData {
        do { return try TypedData(json: try readText(file)) } catch let error as ValidationError { throw error } catch {
            throw ValidationError("\(file): \(error)")
        }
    }
}

private func ethereumKey(_ path: String) throws -> Secp256k1PrivateKey {
    do { return try Secp256k1PrivateKey(bytes: try KeyFile.readBytes(path)) } catch {
        throw ValidationError("\(error)")
    }
}

private func typedData(_ file: String) throws -> TypedData { try EthCommand.typedData(file) }

/// `orrery cardano …`: offline Cardano tools. Key files hold the Ed25519 private key (32-byte seed) as hex, mode 0600.
struct CardanoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cardano", abstract: "Offline Cardano tools: keys and CIP-19 addresses.",
        subcommands: [NewKey.self, Address.self])

    struct NewKey: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "new-key", abstract: "Create an Ed25519 key file (hex seed, mode 0600) and print its address.")

        @Argument(help: "Where to write the key (refuses to overwrite).")
        var file: String

        @Flag(help: "Print the testnet address (addr_test…).")
        var testnet = false

        func run() throws {
            let key = Curve25519.Signing.PrivateKey()
            do { try KeyFile.writeBytes(Array(key.rawRepresentation), to: file) } catch {
                throw ValidationError("\(error)")
            }
            print(CardanoAddress(paymentKey: key.publicKey, network: testnet ? .testnet : .mainnet).bech32)
        }
    }

    struct Address: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the bech32 enterprise address (CIP-19) of a key file.")

        @Option(help: "The key file (hex Ed25519 seed, mode 0600).")
        var key: String

        @Flag(help: "The testnet address (addr_test…) instead of mainnet (addr…).")
        var testnet = false

        func run() throws {
            let signing: Curve25519.Signing.PrivateKey
            do {
                signing = try Curve25519.Signing.PrivateKey(rawRepresentation: try KeyFile.readBytes(key))
            } catch {
                throw ValidationError("\(error)")
            }
            print(CardanoAddress(paymentKey: signing.publicKey, network: testnet ? .testnet : .mainnet).bech32)
        }
    }
}
