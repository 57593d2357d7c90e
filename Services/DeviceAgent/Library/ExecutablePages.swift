internal import Foundation

/// Gives back the pages of the agent's own executable that start-up touched (TLS, HTTP/2, gRPC, configuration and
/// key set-up code) once they are no longer needed: an edge agent idles for days, and each page fault during
/// start-up mapped its neighbours too. Only read-only mappings of the executable file holding no private copy (no
/// anonymous page: code and untouched read-only data, which the page cache holds) are dropped, with
/// `MADV_DONTNEED`; what runs afterwards faults its pages back in. Relocated data, heap and stacks are never
/// touched.
public enum ExecutablePages {
    /// The executable's clean mappings, as (start, length).
    public static func cleanMappings(smaps: String, executable: String) -> [(start: UInt, length: UInt)] {
        var found: [(start: UInt, length: UInt)] = []
        var current: (start: UInt, length: UInt, clean: Bool)?
        func close() {
            if let mapping = current, mapping.clean { found.append((mapping.start, mapping.length)) }
            current = nil
        }
        for line in smaps.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if let range = fields.first, range.contains("-"), fields.count >= 5, !range.hasSuffix(":") {
                close()
                let bounds = range.split(separator: "-")
                let permissions = fields[1]
                guard bounds.count == 2, let start = UInt(bounds[0], radix: 16), let end = UInt(bounds[1], radix: 16),
                    fields.count >= 6, fields[5...].joined(separator: " ") == executable,
                    permissions.hasPrefix("r"), !permissions.contains("w")
                else { continue }
                current = (start, end - start, true)
            } else if current != nil, fields.count >= 2,
                fields[0] == "Anonymous:", fields[1] != "0"
            {
                current?.clean = false
            }
        }
        close()
        return found
    }

    /// Drops the executable's clean pages now; returns the bytes of the mappings released.
    @discardableResult
    public static func release() -> UInt {
        guard let smaps = try? String(contentsOfFile: "/proc/self/smaps", encoding: .utf8),
            let executable = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        else { return 0 }
        var released: UInt = 0
        for mapping in cleanMappings(smaps: smaps, executable: executable) {
            if madvise(UnsafeMutableRawPointer(bitPattern: mapping.start), Int(mapping.length), MADV_DONTNEED) == 0 {
                released += mapping.length
            }
        }
        return released
    }

    /// Releases the start-up pages once start-up and joining are well over (30 s), then every 10 minutes, so code
    /// that ran once — a deployment's set-up — does not stay for days. Rarely: the code that does run afterwards
    /// faults back in, which some kernels (and sandboxes such as gVisor) make slow enough to delay a heartbeat.
    static func keepReleasing() async {
        try? await Task.sleep(for: .seconds(30))
        while !Task.isCancelled {
            release()
            try? await Task.sleep(for: .seconds(600))
        }
    }
}
