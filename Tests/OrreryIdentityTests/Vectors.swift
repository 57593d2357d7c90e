import Foundation
import OrreryIdentity
import OrreryTestSupport

/// The public test vectors in `Tests/Vectors/` (their sources and licences in its README), and a lenient JSON
/// reader for the ones that are not strict JSON.
enum Vectors {
    static var directory: URL {
        TestEnvironment.repositoryRoot.appendingPathComponent("Tests/Vectors")
    }

    static func data(_ path: String) throws -> Data {
        try Data(contentsOf: directory.appendingPathComponent(path))
    }

    static func json(_ path: String) throws -> Any {
        try JSONSerialization.jsonObject(with: data(path))
    }

    /// Reads JSON into IPLD: integers stay integers, numbers with a fraction or exponent become floats, and a
    /// `{ {…} }` object without a key (as in policy.json) merges into the object around it. Trailing commas pass.
    static func lenientIPLD(_ text: String) throws -> IPLD {
        try IPLDJSON.parse(text, lenient: true)
    }

    /// A dag-json byte field `{"/": {"bytes": base64}}`.
    static func dagJSONBytes(_ object: Any?) -> [UInt8]? {
        guard let slash = (object as? [String: Any])?["/"] as? [String: Any], let text = slash["bytes"] as? String
        else { return nil }
        return Base64.decode(text)
    }
}
