import ArgumentParser
import Foundation
import OrreryData
import OrreryProto

/// The consumer's S3-compatible store, for s3:// inputs and outputs_to. Its credentials (AWS_ACCESS_KEY_ID,
/// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, as the AWS tools read them) stay on this machine: a submission carries
/// presigned URLs, each good for one object and one method until it expires.
struct S3Options: ParsableArguments {
    @Option(
        help:
            "S3-compatible endpoint, http(s)://HOST[:PORT] (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else AWS's for the region)."
    )
    var s3Endpoint: String?
    @Option(help: "S3 region (default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1).") var s3Region: String?
    @Option(
        help:
            "Hours presigned URLs stay valid, 1…168: a replica started or moved later cannot read its s3:// inputs or write its outputs."
    )
    var presignHours = 24

    func validate() throws {
        guard (1...168).contains(presignHours) else { throw ValidationError("--presign-hours: 1…168") }
    }

    /// Signs with the environment's credentials.
    /// - Throws: `ValidationError` naming what is missing.
    func presigner(for what: String) throws -> S3Presigner {
        let environment = ProcessInfo.processInfo.environment
        guard let credentials = S3Credentials.fromEnvironment(environment) else {
            throw ValidationError(
                "\(what) needs S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (they stay here; devices get presigned URLs)"
            )
        }
        let region = s3Region ?? environment["AWS_REGION"] ?? environment["AWS_DEFAULT_REGION"] ?? "us-east-1"
        let endpoint = s3Endpoint ?? S3Presigner.endpoint(region: region, environment: environment)
        guard let url = URL(string: endpoint) else { throw ValidationError("'\(endpoint)' is not a URL") }
        do { return try S3Presigner(endpoint: url, region: region, credentials: credentials) } catch {
            throw ValidationError("\(error)")
        }
    }

    /// Presigned GET URLs for the spec's s3:// inputs (by "ALLOCATION/INPUT") and PUT URLs for its outputs to S3
    /// (by "ALLOCATION/REPLICA/PATH"); none, and no credentials needed, when the spec uses no S3.
    func urls(
        for spec: Orrery_Orchestrator_V1_WorkloadSpec, now: Date = Date()
    ) throws -> (inputs: [String: String], outputs: [String: String]) {
        let usesS3 = spec.allocations.contains {
            !$0.outputsTo.isEmpty || $0.inputs.contains { $0.source.hasPrefix("s3://") }
        }
        guard usesS3 else { return ([:], [:]) }
        let presigner = try presigner(for: "this spec's S3 data")
        let lifetime = presignHours * 3600
        var inputs: [String: String] = [:]
        var outputs: [String: String] = [:]
        do {
            for allocation in spec.allocations {
                for input in allocation.inputs where input.source.hasPrefix("s3://") {
                    let location = try S3Location(parsing: input.source)
                    inputs["\(allocation.name)/\(input.name)"] =
                        presigner.presign("GET", location, lifetime: lifetime, now: now)?.absoluteString
                }
                guard !allocation.outputsTo.isEmpty else { continue }
                for replica in 0..<max(1, allocation.replicas) {
                    for path in allocation.outputs {
                        let location = try S3Location.output(
                            under: allocation.outputsTo, allocation: allocation.name, replica: replica, path: path)
                        outputs["\(allocation.name)/\(replica)/\(path)"] =
                            presigner.presign("PUT", location, lifetime: lifetime, now: now)?.absoluteString
                    }
                }
            }
        } catch {
            throw ValidationError("\(error)")
        }
        return (inputs, outputs)
    }
}
