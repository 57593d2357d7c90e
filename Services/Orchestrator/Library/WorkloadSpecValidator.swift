internal import Crypto
internal import Foundation
internal import OrreryIdentity
internal import OrreryData
internal import OrreryOCI
public import OrreryPlacement
public import OrreryProto

/// Checks a workload spec and turns it into a placement request. Every problem is reported with the path of the
/// field it concerns, all at once, so a person fixes the spec in one pass.
public enum WorkloadSpecValidator {
    /// A spec that failed validation: one line per problem, `path: what is wrong`.
    public struct Problems: Error, CustomStringConvertible {
        public let lines: [String]
        public var description: String { lines.joined(separator: "; ") }
    }

    public static let maximumAllocations = 64
    public static let maximumReplicas = 100
    public static let maximumDurationSeconds: UInt32 = 30 * 24 * 3600
    public static let maximumInlineArtifactBytes = 1 << 20
    /// Latency edges of one ensemble (explaining a placement solves once per edge).
    public static let maximumEdges = 128
    /// Entries of any one list or map in constraints (countries, regions, targets, providers, labels) and of env.
    public static let maximumListEntries = 64

    /// The placement request for `spec`, or every problem found.
    public static func validate(_ spec: Orrery_Orchestrator_V1_WorkloadSpec) throws(Problems) -> PlacementRequest {
        var problems: [String] = []
        func problem(_ path: String, _ message: String) { problems.append("\(path): \(message)") }

        if spec.name.isEmpty || spec.name.count > 100 { problem("name", "1…100 characters") }
        if spec.allocations.isEmpty { problem("allocations", "at least one allocation is needed") }
        if spec.allocations.count > maximumAllocations {
            problem("allocations", "at most \(maximumAllocations), got \(spec.allocations.count)")
        }
        checkConstraints(spec.constraints, path: "constraints", problem)
        checkRouteLabels(Array(spec.allocations.prefix(maximumAllocations)), problem)

        var indexByName: [String: Int] = [:]
        for (index, allocation) in spec.allocations.enumerated() {
            let path = "allocations[\(index)]"
            if !isAllocationName(allocation.name) {
                problem("\(path).name", "lowercase letters, digits and '-', 1…63 characters, got '\(allocation.name)'")
            } else if indexByName[allocation.name] != nil {
                problem(
                    "\(path).name",
                    "'\(allocation.name)' is already the name of allocations[\(indexByName[allocation.name] ?? 0)]")
            } else {
                indexByName[allocation.name] = index
            }
            checkAllocation(allocation, path: path, problem)
            if spec.budget > 0 && allocation.maxDurationSeconds == 0 {
                problem("\(path).max_duration_seconds", "required with a budget: the price of a run depends on it")
            }
            checkMerge(ensemble: spec.constraints, allocation: allocation.constraints, path: path, problem)
        }
        let names = Set(spec.allocations.map(\.name))
        for (index, allocation) in spec.allocations.enumerated().prefix(maximumAllocations) {
            checkReaches(allocation, allocationNames: names, path: "allocations[\(index)]", problem)
        }
        if spec.edges.count > maximumEdges { problem("edges", "at most \(maximumEdges), got \(spec.edges.count)") }
        var edgePairs: [Set<String>: Int] = [:]
        for (index, edge) in spec.edges.enumerated().prefix(maximumEdges) {
            let path = "edges[\(index)]"
            let pair: Set<String> = [edge.from, edge.to]
            if let first = edgePairs[pair] {
                problem(path, "joins the same allocations as edges[\(first)]: keep the tighter one")
            } else {
                edgePairs[pair] = index
            }
            if indexByName[edge.from] == nil { problem("\(path).from", "no allocation is named '\(edge.from)'") }
            if indexByName[edge.to] == nil { problem("\(path).to", "no allocation is named '\(edge.to)'") }
            if edge.from == edge.to { problem(path, "an edge joins two different allocations") }
            if !(edge.maxRttMs > 0 && edge.maxRttMs <= 60_000) {
                problem("\(path).max_rtt_ms", "above 0 and at most 60000")
            }
        }
        if !(0...1).contains(spec.sla.availability) { problem("sla.availability", "a fraction between 0 and 1") }
        if spec.penalties.availabilityBps > 10_000 {
            problem("penalties.availability_bps", "at most 10000 (all of it)")
        }
        if spec.penalties.relocationBps > 10_000 { problem("penalties.relocation_bps", "at most 10000 (all of it)") }
        guard problems.isEmpty else { throw Problems(lines: problems) }

        let allocations = spec.allocations.map { allocation in
            AllocationRequest(
                name: allocation.name, replicas: max(1, Int(allocation.replicas)),
                cpuCores: Int(allocation.resources.cpuCores), ramMiB: Int(allocation.resources.ramMib),
                diskMiB: Int(allocation.resources.diskMib), architecture: allocation.resources.architecture,
                gpu: GPURequirement(
                    count: Int(allocation.resources.gpu.count), vendor: allocation.resources.gpu.vendor,
                    model: allocation.resources.gpu.model, vramMiB: Int(allocation.resources.gpu.vramMib)),
                durationSeconds: allocation.maxDurationSeconds == 0 ? nil : Int(allocation.maxDurationSeconds),
                constraints: merged(spec.constraints, allocation.constraints),
                spread: spread(
                    allocation.constraints.spread == .any ? spec.constraints.spread : allocation.constraints.spread),
                executor: allocation.executor == .oci ? "oci" : "process",
                platforms: allocation.executor == .oci
                    ? ImagePlatforms.devicePlatforms(running: allocation.imagePlatforms) : [])
        }
        let edges = spec.edges.compactMap { edge -> LatencyEdge? in
            guard let from = indexByName[edge.from], let to = indexByName[edge.to] else { return nil }
            return LatencyEdge(from: from, to: to, maxRTTMilliseconds: edge.maxRttMs)
        }
        return PlacementRequest(allocations: allocations, edges: edges, budget: spec.budget == 0 ? nil : spec.budget)
    }

    static func isAllocationName(_ name: String) -> Bool {
        guard (1...63).contains(name.count), let first = name.first, first != "-" else { return false }
        return name.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" }
    }

    private static func checkAllocation(
        _ allocation: Orrery_Orchestrator_V1_AllocationSpec, path: String, _ problem: (String, String) -> Void
    ) {
        switch allocation.executor {
        case .process:
            if !allocation.image.isEmpty { problem("\(path).image", "only for EXECUTOR_OCI") }
        case .oci:
            checkImage(allocation, path: path, problem)
            return
        case .unspecified: problem("\(path).executor", "required: EXECUTOR_PROCESS or EXECUTOR_OCI")
        case .UNRECOGNIZED(let value): problem("\(path).executor", "unknown executor \(value)")
        }
        checkArtifact(allocation, path: path, problem)
    }

    /// An OCI allocation: its image reference, and what the orchestrator resolved it to when that is already set.
    private static func checkImage(
        _ allocation: Orrery_Orchestrator_V1_AllocationSpec, path: String, _ problem: (String, String) -> Void
    ) {
        if allocation.image.isEmpty {
            problem("\(path).image", "required for EXECUTOR_OCI: REGISTRY/NAME[:TAG][@sha256:DIGEST]")
        } else {
            do { _ = try ImageReference(parsing: allocation.image) } catch {
                problem("\(path).image", error.description)
            }
        }
        if allocation.hasArtifact {
            problem("\(path).artifact", "an EXECUTOR_OCI allocation runs its image: no artifact")
        }
        if !allocation.imageDigest.isEmpty {
            do { _ = try OCIDigest(parsing: allocation.imageDigest) } catch {
                problem("\(path).image_digest", error.description)
            }
        }
        if allocation.imagePlatforms.count > maximumListEntries {
            problem("\(path).image_platforms", "at most \(maximumListEntries)")
        }
        for platform in allocation.imagePlatforms where ImagePlatforms.parse(platform) == nil {
            problem("\(path).image_platforms", "'\(platform.prefix(64))' is not OS/ARCH[/VARIANT]")
        }
        checkCommon(allocation, path: path, problem)
    }

    private static func checkArtifact(
        _ allocation: Orrery_Orchestrator_V1_AllocationSpec, path: String, _ problem: (String, String) -> Void
    ) {
        switch allocation.artifact.source {
        case nil:
            problem("\(path).artifact", "required: a url with its sha256, or inline text")
        case .url(let url):
            let parsed = URL(string: url)
            if parsed?.scheme != "https" && parsed?.scheme != "http" || parsed?.host == nil {
                problem("\(path).artifact.url", "an http(s) URL, got '\(url)'")
            }
            if !isSHA256(allocation.artifact.sha256) {
                problem("\(path).artifact.sha256", "required for a URL: 64 lowercase hex characters")
            }
        case .text(let text):
            if text.utf8.count > maximumInlineArtifactBytes {
                problem("\(path).artifact.text", "at most \(maximumInlineArtifactBytes) bytes; use a url")
            }
            if !allocation.artifact.sha256.isEmpty {
                let digest = Hex.sha256(Data(text.utf8))
                if digest != allocation.artifact.sha256 {
                    problem("\(path).artifact.sha256", "does not match the inline text (its sha256 is \(digest))")
                }
            }
        }
        if allocation.command.isEmpty, case .url = allocation.artifact.source {
            problem("\(path).command", "required with a url artifact (inline text runs as a script)")
        }
        checkCommon(allocation, path: path, problem)
    }

    /// What every executor's allocation is checked for: its command, arguments and environment, resources.
    private static func checkCommon(
        _ allocation: Orrery_Orchestrator_V1_AllocationSpec, path: String, _ problem: (String, String) -> Void
    ) {
        if allocation.command.count > 4096 { problem("\(path).command", "at most 4096 characters") }
        if allocation.args.count > 256 { problem("\(path).args", "at most 256") }
        if allocation.args.contains(where: { $0.utf8.count > 32_768 }) {
            problem("\(path).args", "each at most 32768 bytes")
        }
        if allocation.env.count > 256 { problem("\(path).env", "at most 256 variables, got \(allocation.env.count)") }
        for (key, value) in allocation.env where value.utf8.count > 32_768 {
            problem("\(path).env.\(key.prefix(128))", "at most 32768 bytes")
        }
        for key in allocation.env.keys.sorted().prefix(256) {
            let valid =
                !key.isEmpty && key.count <= 128 && !(key.first?.isNumber ?? true)
                && key.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }
            if !valid { problem("\(path).env.\(key)", "a name of letters, digits and '_', not starting with a digit") }
            if key.hasPrefix("ORRERY_") { problem("\(path).env.\(key)", "ORRERY_ names are set by the agent") }
        }
        let resources = allocation.resources
        if !(1...1024).contains(resources.cpuCores) {
            problem("\(path).resources.cpu_cores", "1…1024, got \(resources.cpuCores)")
        }
        if !(1...(16 << 20)).contains(resources.ramMib) {
            problem("\(path).resources.ram_mib", "1…16777216 (16 TiB), got \(resources.ramMib)")
        }
        if resources.diskMib > 1 << 30 { problem("\(path).resources.disk_mib", "at most 1073741824 (1 PiB)") }
        let gpu = resources.gpu
        if gpu.count > 64 { problem("\(path).resources.gpu.count", "at most 64") }
        if gpu.count == 0 && (!gpu.vendor.isEmpty || !gpu.model.isEmpty || gpu.vramMib > 0) {
            problem("\(path).resources.gpu.count", "0, yet a GPU is described: ask for at least 1")
        }
        if allocation.replicas > UInt32(maximumReplicas) {
            problem("\(path).replicas", "at most \(maximumReplicas), got \(allocation.replicas)")
        }
        if allocation.maxDurationSeconds > maximumDurationSeconds {
            problem("\(path).max_duration_seconds", "at most \(maximumDurationSeconds) (30 days)")
        }
        if allocation.outputs.count > 64 { problem("\(path).outputs", "at most 64") }
        for (index, output) in allocation.outputs.enumerated() {
            let parts = output.split(separator: "/", omittingEmptySubsequences: false)
            if output.isEmpty || output.hasPrefix("/") || parts.contains("..") || output.count > 1024 {
                problem("\(path).outputs[\(index)]", "a relative path inside the work directory, got '\(output)'")
            }
        }
        checkData(allocation, path: path, problem)
        checkService(allocation, path: path, problem)
        checkConstraints(allocation.constraints, path: "\(path).constraints", problem)
    }

    /// Inputs (names, sources, digests, where they appear) and where outputs go.
    private static func checkData(
        _ allocation: Orrery_Orchestrator_V1_AllocationSpec, path: String, _ problem: (String, String) -> Void
    ) {
        if allocation.inputs.count > InputRules.maximumInputs {
            problem("\(path).inputs", "at most \(InputRules.maximumInputs)")
            return
        }
        var names = Set<String>()
        for (index, input) in allocation.inputs.enumerated() {
            let field = "\(path).inputs[\(index)]"
            if !InputRules.isName(input.name) {
                problem("\(field).name", "1…63 of a-z, 0-9, '-', '_' and '.', not starting with '.' or '-'")
            } else if !names.insert(input.name).inserted {
                problem("\(field).name", "'\(input.name)' twice")
            }
            do { _ = try DataSource(parsing: input.source) } catch { problem("\(field).source", error.description) }
            if !isSHA256(input.sha256) { problem("\(field).sha256", "required: 64 lowercase hex characters") }
            do { _ = try InputRules.mountPath(name: input.name, mount: input.mount) } catch {
                problem("\(field).mount", error.description)
            }
        }
        do { _ = try InputRules.mountPaths(allocation.inputs.map { ($0.name, $0.mount) }) } catch {
            if names.count == allocation.inputs.count { problem("\(path).inputs", error.description) }
        }
        if !allocation.outputsTo.isEmpty {
            do { _ = try S3Location(parsing: allocation.outputsTo) } catch {
                problem("\(path).outputs_to", "s3://BUCKET/PREFIX: \(error)")
            }
            if allocation.outputs.isEmpty { problem("\(path).outputs_to", "given, yet no outputs are declared") }
        }
    }

    private static func checkConstraints(
        _ constraints: Orrery_Orchestrator_V1_Constraints, path: String, _ problem: (String, String) -> Void
    ) {
        let location = constraints.location
        let lists: [(String, Int)] = [
            ("location.countries", location.countries.count),
            ("location.reject_countries", location.rejectCountries.count),
            ("location.regions", location.regions.count), ("location.reject_regions", location.rejectRegions.count),
            ("latency", constraints.latency.count), ("labels", constraints.labels.count),
            ("allowed_providers", constraints.allowedProviders.count),
            ("denied_providers", constraints.deniedProviders.count),
        ]
        for (field, count) in lists where count > maximumListEntries {
            problem("\(path).\(field)", "at most \(maximumListEntries) entries, got \(count)")
        }
        for region in (location.regions + location.rejectRegions) where region.isEmpty || region.utf8.count > 128 {
            problem("\(path).location.regions", "each 1…128 bytes, got '\(region.prefix(40))…'")
            break
        }
        for (key, value) in constraints.labels where key.isEmpty || key.utf8.count > 63 || value.utf8.count > 256 {
            problem("\(path).labels.\(key.prefix(63))", "keys 1…63 bytes, values at most 256")
        }
        for (field, codes) in [("countries", location.countries), ("reject_countries", location.rejectCountries)] {
            for (index, code) in codes.enumerated()
            where code.count != 2 || !code.allSatisfy({ $0.isASCII && $0.isLetter }) {
                problem("\(path).location.\(field)[\(index)]", "an ISO 3166-1 alpha-2 code like 'DE', got '\(code)'")
            }
        }
        if location.hasWithin {
            checkPoint(location.within.center, path: "\(path).location.within.center", problem)
            if !(location.within.radiusKm > 0 && location.within.radiusKm <= 20_040) {
                problem("\(path).location.within.radius_km", "above 0 and at most 20040")
            }
        }
        for (index, target) in constraints.latency.enumerated() {
            let targetPath = "\(path).latency[\(index)]"
            switch target.place {
            case nil: problem(targetPath, "a point or a landmark is required")
            case .point(let point): checkPoint(point, path: "\(targetPath).point", problem)
            case .landmark(let landmark):
                if landmark.isEmpty || landmark.count > 256 { problem("\(targetPath).landmark", "1…256 characters") }
            }
            if !(target.maxRttMs > 0 && target.maxRttMs <= 60_000) {
                problem("\(targetPath).max_rtt_ms", "above 0 and at most 60000")
            }
        }
        if !(0...1).contains(constraints.minReputation) { problem("\(path).min_reputation", "0…1") }
        for (field, dids) in [
            ("allowed_providers", constraints.allowedProviders), ("denied_providers", constraints.deniedProviders),
        ] {
            for (index, did) in dids.enumerated() where (try? DID(did)) == nil {
                problem("\(path).\(field)[\(index)]", "not a did:key: '\(did)'")
            }
        }
        if case .UNRECOGNIZED(let value) = constraints.spread { problem("\(path).spread", "unknown value \(value)") }
    }

    private static func checkPoint(
        _ point: Orrery_Orchestrator_V1_GeoPoint, path: String, _ problem: (String, String) -> Void
    ) {
        if !(-90...90).contains(point.latitude) { problem("\(path).latitude", "-90…90") }
        if !(-180...180).contains(point.longitude) { problem("\(path).longitude", "-180…180") }
    }

    /// Ensemble and allocation constraints must be satisfiable together.
    private static func checkMerge(
        ensemble: Orrery_Orchestrator_V1_Constraints, allocation: Orrery_Orchestrator_V1_Constraints, path: String,
        _ problem: (String, String) -> Void
    ) {
        if ensemble.location.hasWithin && allocation.location.hasWithin {
            problem("\(path).constraints.location.within", "set a radius on the ensemble or the allocation, not both")
        }
        for (key, value) in allocation.labels.sorted(by: { $0.key < $1.key }) {
            if let other = ensemble.labels[key], other != value {
                problem(
                    "\(path).constraints.labels.\(key)", "'\(value)' contradicts the ensemble's '\(other)'")
            }
        }
        if !ensemble.location.countries.isEmpty && !allocation.location.countries.isEmpty
            && Set(ensemble.location.countries.map { $0.uppercased() }).isDisjoint(
                with: allocation.location.countries.map { $0.uppercased() })
        {
            problem("\(path).constraints.location.countries", "shares no country with the ensemble's countries")
        }
    }

    /// Both sets of constraints hold: accept lists intersect, reject lists and labels add up, the tighter bound wins.
    static func merged(
        _ ensemble: Orrery_Orchestrator_V1_Constraints, _ allocation: Orrery_Orchestrator_V1_Constraints
    ) -> HardConstraints {
        func accept(_ a: [String], _ b: [String], _ normalise: (String) -> String) -> Set<String> {
            let first = Set(a.map(normalise))
            let second = Set(b.map(normalise))
            if first.isEmpty { return second }
            if second.isEmpty { return first }
            return first.intersection(second)
        }
        let within = allocation.location.hasWithin ? allocation.location.within : ensemble.location.within
        let hasWithin = allocation.location.hasWithin || ensemble.location.hasWithin
        let ceilings = [ensemble.maxPricePerHour, allocation.maxPricePerHour].filter { $0 > 0 }
        let reputation = max(ensemble.minReputation, allocation.minReputation)
        return HardConstraints(
            acceptCountries: accept(ensemble.location.countries, allocation.location.countries) { $0.uppercased() },
            rejectCountries: Set(
                (ensemble.location.rejectCountries + allocation.location.rejectCountries).map { $0.uppercased() }),
            acceptRegions: accept(ensemble.location.regions, allocation.location.regions) { $0.lowercased() },
            rejectRegions: Set(
                (ensemble.location.rejectRegions + allocation.location.rejectRegions).map { $0.lowercased() }),
            within: hasWithin
                ? GeoCircle(
                    center: GeoPoint(latitude: within.center.latitude, longitude: within.center.longitude),
                    radiusKm: within.radiusKm) : nil,
            latencyTargets: (ensemble.latency + allocation.latency).compactMap(target),
            maxPricePerHour: ceilings.min(),
            requiredLabels: ensemble.labels.merging(allocation.labels) { _, mine in mine },
            allowedProviders: accept(ensemble.allowedProviders, allocation.allowedProviders) { $0 },
            deniedProviders: Set(ensemble.deniedProviders + allocation.deniedProviders),
            minReputation: reputation > 0 ? reputation : nil)
    }

    private static func target(_ target: Orrery_Orchestrator_V1_LatencyTarget) -> LatencyTarget? {
        switch target.place {
        case .point(let point):
            LatencyTarget(
                place: .point(GeoPoint(latitude: point.latitude, longitude: point.longitude)),
                maxRTTMilliseconds: target.maxRttMs)
        case .landmark(let name): LatencyTarget(place: .landmark(name), maxRTTMilliseconds: target.maxRttMs)
        case nil: nil
        }
    }

    private static func spread(_ spread: Orrery_Orchestrator_V1_Spread) -> SpreadPolicy {
        switch spread {
        case .acrossDevices: .spread
        case .pack: .pack
        default: .any
        }
    }

    static func isSHA256(_ text: String) -> Bool {
        text.utf8.count == 64 && text.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }
}
