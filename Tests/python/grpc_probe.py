"""Independent gRPC checks of an Orrery service with Python's grpcio, used by the Swift end-to-end tests.

  grpc_probe.py health ADDRESS [SERVICE]   prints the serving status name (SERVING, NOT_SERVING, ...)
  grpc_probe.py health-tls ADDRESS CA      the same over TLS, verifying the server against the PEM roots CA
  grpc_probe.py services ADDRESS           prints JSON {service: [method, ...]} learned through reflection
"""
import json
import sys

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase


def health(address: str, service: str, ca: str = "") -> None:
    if ca:
        credentials = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
        channel = grpc.secure_channel(address, credentials)
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        print(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def services(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        result = {}
        for name in database.get_services():
            # Resolving the service pulls its file and every dependency through reflection.
            service = pool.FindServiceByName(name)
            result[name] = [method.name for method in service.methods]
        print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    command, address = sys.argv[1], sys.argv[2]
    if command == "health":
        health(address, sys.argv[3] if len(sys.argv) > 3 else "")
    elif command == "health-tls":
        health(address, "", sys.argv[3])
    elif command == "services":
        services(address)
    else:
        sys.exit(f"unknown command {command}")
