import Foundation
import OrreryProto
@testable import OrreryRuntime
@testable import OrreryRuntimeCore
import SwiftProtobuf
import Testing

@Suite("Server reflection answers from the embedded descriptor set")
struct ReflectionTests {
    let index: DescriptorIndex

    init() throws {
        index = try DescriptorIndex(descriptorSet: try #require(Data(base64Encoded: OrreryDescriptorSet.base64)))
    }

    func fileNames(_ files: [Data]) throws -> [String] {
        try files.map { try Google_Protobuf_FileDescriptorProto(serializedBytes: $0).name }
    }

    @Test("a file comes with its transitive dependencies, the requested one first")
    func fileWithDependencies() throws {
        let files = try #require(index.fileWithDependencies(named: "orrery/registry/v1/registry.proto"))
        let names = try fileNames(files)
        #expect(names.first == "orrery/registry/v1/registry.proto")
        #expect(
            Set(names) == [
                "orrery/registry/v1/registry.proto", "orrery/common/v1/common.proto", "google/protobuf/timestamp.proto",
            ])
        #expect(index.fileWithDependencies(named: "nope.proto") == nil)
    }

    @Test("symbols resolve to their files: services, methods, messages, nested enums, fields")
    func symbols() {
        #expect(index.fileName(containingSymbol: "orrery.registry.v1.Registry") == "orrery/registry/v1/registry.proto")
        #expect(
            index.fileName(containingSymbol: "orrery.registry.v1.Registry.Heartbeats")
                == "orrery/registry/v1/registry.proto")
        #expect(index.fileName(containingSymbol: ".orrery.common.v1.Signed") == "orrery/common/v1/common.proto")
        #expect(
            index.fileName(containingSymbol: "grpc.health.v1.HealthCheckResponse.ServingStatus")
                == "grpc/health/v1/health.proto")
        #expect(index.fileName(containingSymbol: "orrery.common.v1.Signed.payload") == "orrery/common/v1/common.proto")
        #expect(index.fileName(containingSymbol: "orrery.nothing.Here") == nil)
        #expect(index.extensionNumbers(of: "orrery.common.v1.Signed") == [])
        #expect(index.extensionNumbers(of: "orrery.nothing.Here") == nil)
    }

    @Test("read-only methods carry idempotency_level = NO_SIDE_EFFECTS, mutating ones do not")
    func idempotencyLevels() throws {
        let files = try #require(index.fileWithDependencies(named: "orrery/registry/v1/registry.proto"))
        let registry = try Google_Protobuf_FileDescriptorProto(serializedBytes: files[0])
        let methods = Dictionary(
            uniqueKeysWithValues: registry.service[0].method.map { ($0.name, $0.options.idempotencyLevel) })
        #expect(methods["Info"] == .noSideEffects)
        #expect(methods["GetDevice"] == .noSideEffects)
        #expect(methods["CompleteJoin"] == .idempotencyUnknown)
    }

    @Test("the v1 service answers every query kind, with NOT_FOUND for unknown names")
    func answers() async throws {
        let service = ReflectionService(
            index: index, serviceNames: ["orrery.registry.v1.Registry", "grpc.health.v1.Health"])
        var request = Grpc_Reflection_V1_ServerReflectionRequest()
        request.host = "h"
        request.listServices = ""
        let list = service.answer(request)
        #expect(
            list.listServicesResponse.service.map(\.name) == ["grpc.health.v1.Health", "orrery.registry.v1.Registry"])
        #expect(list.validHost == "h")
        #expect(list.originalRequest == request)

        request.fileContainingSymbol = "orrery.registry.v1.Registry"
        let symbol = service.answer(request)
        #expect(
            try fileNames(symbol.fileDescriptorResponse.fileDescriptorProto).first
                == "orrery/registry/v1/registry.proto")

        request.fileByFilename = "missing.proto"
        let missing = service.answer(request)
        #expect(missing.errorResponse.errorCode == 5)

        request.allExtensionNumbersOfType = "orrery.common.v1.Signed"
        let extensions = service.answer(request)
        #expect(extensions.allExtensionNumbersResponse.baseTypeName == "orrery.common.v1.Signed")

        request.messageRequest = nil
        let empty = service.answer(request)
        #expect(empty.errorResponse.errorCode == 3)
    }
}
