import ArgumentParser
import DeviceAgent
import Foundation
import OrreryData
import OrreryHTTPClient

/// `orrery-bench outputs`: a declared output uploaded to an S3-compatible store (moto on loopback) through a
/// presigned PUT URL as a device does it, beside boto3's `upload_file` of the same file to the same server in the
/// same run.
struct OutputBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "outputs", abstract: "Output uploads to an S3-compatible store, beside boto3.")

    @Option(help: "The store's endpoint, http://HOST:PORT.") var endpoint: String
    @Option(help: "Its access key.") var accessKey: String
    @Option(help: "Its secret key.") var secretKey: String
    @Option(help: "Its region.") var region = "us-east-1"
    @Option(help: "The Python with boto3, and the s3_server.py script.") var python: String
    @Option(help: "Tests/python/s3_server.py.") var script: String
    @Option(help: "MiB uploaded each round.") var mebibytes = 256
    @Option(help: "A scratch directory (emptied).") var work: String
    @Option(help: "Rounds of each measurement (the median is reported).") var rounds = 3
    @Option(help: "Where to write the results (Markdown).") var out = "bench-results/outputs.md"

    func run() async throws {
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        let file = work + "/output.bin"
        // Incompressible bytes (nothing on the way compresses them), written once.
        var generator = SystemRandomNumberGenerator()
        guard FileManager.default.createFile(atPath: file, contents: nil) else {
            throw ValidationError("cannot create \(file)")
        }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: file))
        var words = [UInt64](repeating: 0, count: 1 << 17)
        for _ in 0..<mebibytes {
            for index in words.indices { words[index] = generator.next() }
            handle.write(words.withUnsafeBytes { Data($0) })
        }
        try handle.close()
        guard let endpointURL = URL(string: endpoint) else { throw ValidationError("--endpoint: not a URL") }
        let presigner = try S3Presigner(
            endpoint: endpointURL, region: region,
            credentials: S3Credentials(accessKeyID: accessKey, secretAccessKey: secretKey))
        let uploader = OutputUploader(trust: .system, addresses: .any)

        // boto3 first (it creates the bucket), then ours, alternating rounds.
        var boto: [Double] = []
        var ours: [Double] = []
        for round in 0..<rounds {
            boto.append(try Self.boto3(python, script, endpoint, file, key: "boto3-\(round)"))
            guard
                let url = presigner.presign(
                    "PUT", S3Location(bucket: "bench", key: "orrery-\(round)"), lifetime: 3600)
            else { throw ValidationError("cannot presign") }
            let start = ContinuousClock.now
            let uploaded = try await uploader.upload(file, to: url)
            ours.append(ImageBenchCommand.seconds(ContinuousClock.now - start))
            precondition(uploaded.size == Int64(mebibytes) << 20)
        }
        let rate = { (seconds: Double) in String(format: "%.0f MiB/s", Double(mebibytes) / seconds) }
        let lines = [
            "# Output upload benchmarks",
            "",
            "Measured \(ISO8601DateFormatter().string(from: Date())) on \(ProcessInfo.processInfo.activeProcessorCount) cores, release build; a \(mebibytes) MiB file of random bytes uploaded to moto (server mode, loopback); the median of \(rounds) rounds.",
            "",
            "| measurement | median | rate | rounds (ms) |",
            "|---|---|---|---|",
            "| boto3 `upload_file` (multipart, 10 threads) | \(ImageBenchCommand.milliseconds(ImageBenchCommand.median(boto))) | \(rate(ImageBenchCommand.median(boto))) | \(ImageBenchCommand.list(boto)) |",
            "| Orrery: one presigned PUT, streamed, sha256 on the way | \(ImageBenchCommand.milliseconds(ImageBenchCommand.median(ours))) | \(rate(ImageBenchCommand.median(ours))) | \(ImageBenchCommand.list(ours)) |",
            "",
            String(
                format: "Orrery's throughput is %.0f %% of boto3's (goal: at least 80 %%).",
                100 * ImageBenchCommand.median(boto) / ImageBenchCommand.median(ours)),
        ]
        for line in lines { print(line) }
        try lines.joined(separator: "\n").appending("\n").write(toFile: out, atomically: true, encoding: .utf8)
        try? FileManager.default.removeItem(atPath: work)
    }

    /// Seconds boto3 took, as the script measured them.
    static func boto3(_ python: String, _ script: String, _ endpoint: String, _ file: String, key: String) throws
        -> Double
    {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [script, "timed-put", endpoint, "bench", key, file]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0,
            let seconds = Double(
                String(decoding: output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
        else { throw ValidationError("boto3's upload failed (\(process.terminationStatus))") }
        return seconds
    }
}
