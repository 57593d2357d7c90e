internal import Foundation
internal import GRPCCore
internal import OrreryProto
internal import PostgresNIO

/// `QueryDevices` filters as one parameterised SQL statement over the typed, indexed columns.
struct DeviceQuery {
    let sql: String
    let binds: PostgresBindings
    let pageSize: Int

    /// - Throws: `RPCError(.invalidArgument)` naming the bad filter.
    init(_ request: Orrery_Registry_V1_QueryDevicesRequest) throws {
        var conditions: [String] = []
        var binds = PostgresBindings()
        func bind(_ value: some PostgresEncodable & Sendable) throws -> String {
            try binds.append(value)
            return "$\(binds.count)"
        }
        let statuses = request.statuses.isEmpty ? [.online] : request.statuses
        let statusNames = try statuses.map { status -> String in
            switch status {
            case .online: return "online"
            case .suspect: return "suspect"
            case .offline: return "offline"
            case .left: return "left"
            default: throw RPCError(code: .invalidArgument, message: "statuses: \(status) is not a device status")
            }
        }
        conditions.append("status = ANY(\(try bind(statusNames))::text[])")
        if request.minCpuCores > 0 { conditions.append("cpu_cores >= \(try bind(Int64(request.minCpuCores)))") }
        if request.minRamBytes > 0 {
            conditions.append("ram_bytes >= \(try bind(Int64(clamping: request.minRamBytes)))")
        }
        if request.minDiskBytes > 0 {
            conditions.append("disk_bytes >= \(try bind(Int64(clamping: request.minDiskBytes)))")
        }
        if !request.architecture.isEmpty { conditions.append("architecture = \(try bind(request.architecture))") }
        if !request.gpuModel.isEmpty { conditions.append("gpu_model = \(try bind(request.gpuModel))") }
        if request.minGpuCount > 0 { conditions.append("gpu_count >= \(try bind(Int64(request.minGpuCount)))") }
        if request.minGpuVramBytes > 0 {
            conditions.append("gpu_vram_bytes >= \(try bind(Int64(clamping: request.minGpuVramBytes)))")
        }
        for (name, countries) in [("countries", request.countries), ("reject_countries", request.rejectCountries)] {
            for country in countries where country.count != 2 || country != country.uppercased() {
                throw RPCError(
                    code: .invalidArgument, message: "\(name): '\(country)' is not an ISO 3166-1 alpha-2 code")
            }
        }
        if !request.countries.isEmpty { conditions.append("country = ANY(\(try bind(request.countries))::text[])") }
        if !request.rejectCountries.isEmpty {
            conditions.append("(country IS NULL OR NOT country = ANY(\(try bind(request.rejectCountries))::text[]))")
        }
        if !request.regions.isEmpty { conditions.append("region = ANY(\(try bind(request.regions))::text[])") }
        if request.maxPricePerCoreHour > 0 {
            conditions.append("price_core_hour <= \(try bind(Int64(clamping: request.maxPricePerCoreHour)))")
        }
        if !request.labels.isEmpty {
            let labels = String(
                decoding: try JSONSerialization.data(withJSONObject: request.labels, options: [.sortedKeys]),
                as: UTF8.self)
            conditions.append("labels @> \(try bind(labels))::jsonb")
        }
        guard (0...1000).contains(request.pageSize) else {
            throw RPCError(code: .invalidArgument, message: "page_size: 1…1000, or 0 for 100")
        }
        pageSize = request.pageSize == 0 ? 100 : Int(request.pageSize)
        if !request.pageToken.isEmpty {
            guard let after = Data(base64Encoded: request.pageToken).map({ String(decoding: $0, as: UTF8.self) }),
                after.hasPrefix("did:")
            else {
                throw RPCError(code: .invalidArgument, message: "page_token: not a token this registry returned")
            }
            conditions.append("did > \(try bind(after))")
        }
        sql =
            "SELECT \(DeviceStore.columns) FROM devices WHERE \(conditions.joined(separator: " AND ")) ORDER BY did LIMIT \(pageSize + 1)"
        self.binds = binds
    }

    static func token(after did: String) -> String { Data(did.utf8).base64EncodedString() }
}
