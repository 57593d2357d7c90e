import Foundation
import Testing

@testable import DeviceAgent

@Suite("Owner policy: the agent config's owner object")
struct OwnerPolicyTests {
    @Test("max_connections: 2048 unless set; 1…65536, anything else refused by its field")
    func connectionBound() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("owner-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: file) }
        try Data(#"{"owner": {"prices": {"per_core_hour": 5}}}"#.utf8).write(to: file)
        #expect(try OwnerPolicy.read(configFile: file.path).connectionLimit == 2048)
        try Data(#"{"owner": {"max_connections": 64}}"#.utf8).write(to: file)
        #expect(try OwnerPolicy.read(configFile: file.path).connectionLimit == 64)
        for bad in ["0", "-1", "65537", "\"many\""] {
            try Data(#"{"owner": {"max_connections": \#(bad)}}"#.utf8).write(to: file)
            #expect {
                try OwnerPolicy.read(configFile: file.path)
            } throws: { error in
                (error as? OwnerPolicyError)?.field == "owner.max_connections"
            }
        }
    }
}
