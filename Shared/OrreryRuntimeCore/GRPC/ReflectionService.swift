#if canImport(FoundationEssentials)
    internal import FoundationEssentials
#else
    internal import Foundation
#endif
internal import OrreryBasics
public import GRPCCore
public import OrreryProto
internal import SwiftProtobuf

/// gRPC server reflection, v1: lists the services this server registers and answers descriptor requests from
/// a `DescriptorIndex`, so `grpcurl` and Python's reflection client work without the protos at hand.
public struct ReflectionService: Grpc_Reflection_V1_ServerReflection.SimpleServiceProtocol {
    private let index: DescriptorIndex
    private let serviceNames: [String]

    /// - Parameters:
    ///   - index: Descriptors of every proto the server uses.
    ///   - serviceNames: Fully qualified names of the services the server registers.
    public init(index: DescriptorIndex, serviceNames: [String]) {
        self.index = index
        self.serviceNames = serviceNames.sorted()
    }

    public func serverReflectionInfo(
        request: RPCAsyncSequence<Grpc_Reflection_V1_ServerReflectionRequest, any Error>,
        response: RPCWriter<Grpc_Reflection_V1_ServerReflectionResponse>,
        context: ServerContext
    ) async throws {
        for try await message in request {
            try await response.write(answer(message))
        }
    }

    /// The response to one reflection request.
    func answer(_ request: Grpc_Reflection_V1_ServerReflectionRequest) -> Grpc_Reflection_V1_ServerReflectionResponse {
        var response = Grpc_Reflection_V1_ServerReflectionResponse()
        response.validHost = request.host
        response.originalRequest = request
        func notFound(_ message: String) {
            response.errorResponse = .with {
                $0.errorCode = Int32(RPCError.Code.notFound.rawValue)
                $0.errorMessage = message
            }
        }
        func files(named name: String?) {
            if let name, let files = index.fileWithDependencies(named: name) {
                response.fileDescriptorResponse = .with { $0.fileDescriptorProto = files }
            } else {
                notFound("no file named '\(name ?? "")'")
            }
        }
        switch request.messageRequest {
        case .listServices:
            response.listServicesResponse = .with { list in
                list.service = serviceNames.map { name in .with { $0.name = name } }
            }
        case .fileByFilename(let name):
            files(named: name)
        case .fileContainingSymbol(let symbol):
            if let name = index.fileName(containingSymbol: symbol) {
                files(named: name)
            } else {
                notFound("no symbol named '\(symbol)'")
            }
        case .fileContainingExtension(let request):
            if let name = index.fileName(containingExtension: request.extensionNumber, of: request.containingType) {
                files(named: name)
            } else {
                notFound("no extension \(request.extensionNumber) of '\(request.containingType)'")
            }
        case .allExtensionNumbersOfType(let type):
            if let numbers = index.extensionNumbers(of: type) {
                response.allExtensionNumbersResponse = .with {
                    $0.baseTypeName = type
                    $0.extensionNumber = numbers
                }
            } else {
                notFound("no type named '\(type)'")
            }
        case nil:
            response.errorResponse = .with {
                $0.errorCode = Int32(RPCError.Code.invalidArgument.rawValue)
                $0.errorMessage = "the request names no reflection query"
            }
        }
        return response
    }
}

/// gRPC server reflection, v1alpha. Its messages are wire-identical to v1's (same fields, same numbers), so each
/// request is re-read as v1, answered by the v1 service, and the answer re-read as v1alpha.
public struct ReflectionServiceV1Alpha: Grpc_Reflection_V1alpha_ServerReflection.SimpleServiceProtocol {
    private let v1: ReflectionService

    public init(v1: ReflectionService) {
        self.v1 = v1
    }

    public func serverReflectionInfo(
        request: RPCAsyncSequence<Grpc_Reflection_V1alpha_ServerReflectionRequest, any Error>,
        response: RPCWriter<Grpc_Reflection_V1alpha_ServerReflectionResponse>,
        context: ServerContext
    ) async throws {
        for try await message in request {
            let asV1 = try Grpc_Reflection_V1_ServerReflectionRequest(
                serializedBytes: try message.serializedBytes() as [UInt8])
            let answer = v1.answer(asV1)
            try await response.write(
                try Grpc_Reflection_V1alpha_ServerReflectionResponse(
                    serializedBytes: try answer.serializedBytes() as [UInt8])
            )
        }
    }
}
