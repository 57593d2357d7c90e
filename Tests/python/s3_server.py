"""An S3-compatible server on loopback for the tests (moto in server mode), and boto3/botocore as the independent
S3 implementation our presigned URLs and uploads are checked against.

    python s3_server.py serve DIR
        Serves moto on a free loopback port, logging every request ("METHOD PATH?QUERY STATUS RANGE" per line) to
        DIR/access.log; prints READY {"endpoint", "access_key", "secret_key", "region", "log"} once it answers,
        then serves until SIGTERM.
    python s3_server.py put ENDPOINT BUCKET KEY FILE [public]
        Creates the bucket when missing and uploads FILE with boto3 (readable by anyone with "public");
        prints {"sha256", "size"}.
    python s3_server.py get ENDPOINT BUCKET KEY FILE
        Downloads an object with boto3 into FILE; prints {"sha256", "size"}.
    python s3_server.py timed-put ENDPOINT BUCKET KEY FILE
        Uploads FILE with boto3's upload_file (its default transfer: multipart, 10 threads) and prints the seconds
        it took (the interpreter's start not counted).
    python s3_server.py presign ENDPOINT REGION ACCESS_KEY SECRET_KEY METHOD BUCKET KEY EXPIRES UNIX_TIME [TOKEN]
        Prints the URL botocore presigns (SigV4 query authentication, path-style) at that moment.
"""
import datetime
import hashlib
import json
import os
import signal
import socket
import sys
import urllib.parse

ACCESS_KEY = "orrery-test-access"
SECRET_KEY = "orrery-test-secret"
REGION = "us-east-1"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def client(endpoint):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY, config=Config(s3={"addressing_style": "path"}))


def digest_of(path):
    hasher = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
            size += len(chunk)
    return {"sha256": hasher.hexdigest(), "size": size}


def serve(directory):
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    os.makedirs(directory, exist_ok=True)
    log_path = os.path.join(directory, "access.log")
    log = open(log_path, "a", buffering=1)
    app = DomainDispatcherApplication(create_backend_app)

    def logged(environ, start_response):
        line = environ["REQUEST_METHOD"] + " " + environ.get("PATH_INFO", "")
        if environ.get("QUERY_STRING"):
            line += "?" + environ["QUERY_STRING"]

        def start(status, headers, exc_info=None):
            log.write(line + " " + status.split(" ")[0] + " " + environ.get("HTTP_RANGE", "-") + "\n")
            return start_response(status, headers, exc_info)

        return app(environ, start)

    port = free_port()
    server = make_server("127.0.0.1", port, logged, threaded=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    ready = {
        "endpoint": f"http://127.0.0.1:{port}", "access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
        "region": REGION, "log": log_path,
    }
    print("READY " + json.dumps(ready), flush=True)
    server.serve_forever()


def put(endpoint, bucket, key, path, public=None):
    s3 = client(endpoint)
    existing = [entry["Name"] for entry in s3.list_buckets().get("Buckets", [])]
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)
    s3.upload_file(path, bucket, key, ExtraArgs={"ACL": "public-read"} if public == "public" else None)
    print(json.dumps(digest_of(path)))


def timed_put(endpoint, bucket, key, path):
    import time

    s3 = client(endpoint)
    if bucket not in [entry["Name"] for entry in s3.list_buckets().get("Buckets", [])]:
        s3.create_bucket(Bucket=bucket)
    start = time.monotonic()
    s3.upload_file(path, bucket, key)
    print("%.6f" % (time.monotonic() - start))


def get(endpoint, bucket, key, path):
    client(endpoint).download_file(bucket, key, path)
    print(json.dumps(digest_of(path)))


def presign(endpoint, region, access_key, secret_key, method, bucket, key, expires, unix_time, token=None):
    import botocore.auth
    from botocore.auth import S3SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    moment = datetime.datetime.fromtimestamp(int(unix_time), tz=datetime.timezone.utc).replace(tzinfo=None)
    botocore.auth.get_current_datetime = lambda *args, **kwargs: moment
    url = endpoint.rstrip("/") + "/" + bucket + "/" + urllib.parse.quote(key, safe="/~")
    request = AWSRequest(method=method, url=url)
    S3SigV4QueryAuth(Credentials(access_key, secret_key, token), "s3", region, expires=int(expires)).add_auth(request)
    print(request.prepare().url)


if __name__ == "__main__":
    command, arguments = sys.argv[1], sys.argv[2:]
    {"serve": serve, "put": put, "timed-put": timed_put, "get": get, "presign": presign}[command](*arguments)
