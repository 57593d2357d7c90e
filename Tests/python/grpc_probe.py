"""Independent gRPC checks of an Orrery service with Python's grpcio, used by the Swift end-to-end tests.

  grpc_probe.py health ADDRESS [SERVICE]   prints the serving status name (SERVING, NOT_SERVING, ...)
  grpc_probe.py health-tls ADDRESS CA      the same over TLS, verifying the server against the PEM roots CA
  grpc_probe.py services ADDRESS           prints JSON {service: [method, ...]} learned through reflection
  grpc_probe.py operate ADDRESS            sends the settlement gateway's Operate stream three operations it must
                                           refuse one by one (no capability, a malformed one, no request), with
                                           message types learned through reflection; prints JSON
                                           [[tag, code, message], ...] in the order the answers came
  grpc_probe.py streams ADDRESS N          holds N Health.Watch streams open on one channel (each gets its first
                                           status), then makes one Info call past them and ends one watch; prints
                                           JSON {"watching": n, "info": "OK"|code, "alive": n}: a server that
                                           advertises SETTINGS_MAX_CONCURRENT_STREAMS lets the call queue instead of
                                           failing every stream
  grpc_probe.py idle ADDRESS WAIT         makes one Info call, then leaves the channel idle (answering the server's
                                           pings, as grpcio does) for up to WAIT seconds; prints JSON
                                           {"info": "OK"|code, "idle_after": seconds|null}: when the server's GOAWAY
                                           took the channel from READY to IDLE, counted from the call's end
  grpc_probe.py oversized ADDRESS BYTES    sends Identity.Info a request of BYTES bytes; prints the status code name
                                           and message it ends with
"""
import json
import sys

import grpc
from google.protobuf import descriptor_pool, message_factory
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


def streams(address: str, count: int) -> None:
    with grpc.insecure_channel(address) as channel:
        watch = channel.unary_stream("/grpc.health.v1.Health/Watch")
        watches = [watch(health_pb2.HealthCheckRequest().SerializeToString(), timeout=120) for _ in range(count)]
        watching = 0
        for call in watches:
            try:
                next(call)
                watching += 1
            except grpc.RpcError:
                pass
        # The queued call is a health check: it needs a stream slot and nothing else (a call that reads the database
        # could be refused UNAVAILABLE by the database gate on a loaded machine, which says nothing about streams).
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        future = check.future(health_pb2.HealthCheckRequest().SerializeToString(), timeout=60)
        watches[0].cancel()
        details = None
        try:
            future.result()
            outcome = "OK"
        except grpc.RpcError as error:
            outcome = error.code().name
            details = error.details()
        alive = sum(1 for call in watches[1:] if call.is_active())
        print(json.dumps({"watching": watching, "queued": outcome, "details": details, "alive": alive}))
        for call in watches:
            call.cancel()


def idle(address: str, wait: float) -> None:
    import threading
    import time

    with grpc.insecure_channel(address) as channel:
        info = channel.unary_unary("/orrery.identity.v1.Identity/Info")
        try:
            info(b"", timeout=30)
            outcome = "OK"
        except grpc.RpcError as error:
            outcome = error.code().name
        finished = time.monotonic()
        left_ready = threading.Event()
        seen = []

        def watch(state: grpc.ChannelConnectivity) -> None:
            seen.append(state)
            if state == grpc.ChannelConnectivity.READY:
                return
            if grpc.ChannelConnectivity.READY in seen and state == grpc.ChannelConnectivity.IDLE:
                left_ready.set()

        channel.subscribe(watch, try_to_connect=False)
        idle_after = round(time.monotonic() - finished, 2) if left_ready.wait(wait) else None
        channel.unsubscribe(watch)
        print(json.dumps({"info": outcome, "idle_after": idle_after}))


def oversized(address: str, size: int) -> None:
    with grpc.insecure_channel(address) as channel:
        info = channel.unary_unary("/orrery.identity.v1.Identity/Info")
        try:
            info(b"\x0a" + b"\xff" * (size - 1), timeout=60)
            print("OK")
        except grpc.RpcError as error:
            print(error.code().name, error.details())


def operate(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        pool.FindServiceByName("orrery.settlement.v1.Settlement")
        operation = message_factory.GetMessageClass(pool.FindMessageTypeByName("orrery.settlement.v1.Operation"))
        result = message_factory.GetMessageClass(pool.FindMessageTypeByName("orrery.settlement.v1.OperationResult"))
        call = channel.stream_stream(
            "/orrery.settlement.v1.Settlement/Operate",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=result.FromString,
        )
        unsigned = operation(tag=7)
        unsigned.escrow.contract_id = "ctr_" + "a" * 26
        unsigned.escrow.amount = 10
        malformed = operation(tag=8, authorization="Bearer not-a-container")
        malformed.deposit.did = "did:key:z6Mk"
        empty = operation(tag=9, authorization="Bearer x")
        answers = []
        for answer in call(iter([unsigned, malformed, empty]), timeout=20):
            which = answer.WhichOneof("outcome")
            if which == "error":
                answers.append([answer.tag, answer.error.code, answer.error.message])
            else:
                answers.append([answer.tag, 0, which or ""])
        print(json.dumps(answers))


if __name__ == "__main__":
    command, address = sys.argv[1], sys.argv[2]
    if command == "health":
        health(address, sys.argv[3] if len(sys.argv) > 3 else "")
    elif command == "health-tls":
        health(address, "", sys.argv[3])
    elif command == "services":
        services(address)
    elif command == "operate":
        operate(address)
    elif command == "oversized":
        oversized(address, int(sys.argv[3]))
    elif command == "idle":
        idle(address, float(sys.argv[3]))
    elif command == "streams":
        streams(address, int(sys.argv[3]))
    else:
        sys.exit(f"unknown command {command}")
