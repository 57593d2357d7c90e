import ArgumentParser
import Foundation
import OrreryIdentity

/// `orrery key new|show`.
struct KeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key", abstract: "Ed25519 keys and their did:key.", subcommands: [New.self, Show.self])

    struct New: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a key file (mode 0600) and print its DID.")

        @Argument(help: "Where to write the key (refuses to overwrite).")
        var file: String

        func run() throws {
            let key = SigningKey()
            do {
                try KeyFile.write(key, to: file)
            } catch {
                throw ValidationError("\(error)")
            }
            print(key.did)
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the DID of a key file.")

        @Argument(help: "The key file.")
        var file: String

        func run() throws {
            print(try Inputs.key(file).did)
        }
    }
}

/// `orrery did resolve DID`.
struct DIDCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "did", abstract: "DIDs.", subcommands: [Resolve.self])

    struct Resolve: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the DID document of a did:key (offline) as JSON.")

        @Argument(help: "The did:key.")
        var did: String

        func run() throws {
            do {
                print(try DIDDocument(resolving: try DID(did)).json())
            } catch {
                throw ValidationError("\(error)")
            }
        }
    }
}
