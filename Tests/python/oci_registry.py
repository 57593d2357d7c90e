"""A real OCI registry on loopback for the tests: Debian's docker-registry (CNCF distribution 2.8) behind TLS, with
Basic authentication (htpasswd) or token authentication (a small token server here that the registry trusts
through `auth.token.rootcertbundle`), and images to pull, built with umoci and pushed with skopeo.

    python oci_registry.py serve DIR {basic|token}
        Writes DIR/ready.json ({"address", "ca", "users": {name: password}, "log"}) once the registry answers, then
        serves until SIGTERM. Users: "pusher" may push and pull everything, "reader" may pull, "other" may pull
        only repositories under other/.
    python oci_registry.py push DIR KIND REPOSITORY:TAG
        Builds an image of KIND and pushes it as pusher: busybox (umoci), multi (an index with amd64 and an arm64
        entry), whiteout, escape (a member written through a link out of the root), zstd, big (N MiB of random
        layers: KIND big:N), artifact:FILE (an OCI artifact whose one layer is FILE's bytes), arm64-busybox:FILE (an
        arm64-only index whose root holds the arm64 busybox FILE; Cmd: uname -m).
        Prints {"digest": manifest or index digest, "layers": [...]} as JSON.
    python oci_registry.py tamper DIR DIGEST
        Overwrites a stored blob's bytes (same size) in the registry's storage: it serves them unchecked.
"""
import base64
import datetime
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import bcrypt
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

USERS = {"pusher": "push-secret-1", "reader": "read-secret-2", "other": "other-secret-3"}
SERVICE = "orrery-test-registry"
ISSUER = "orrery-test-token-issuer"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def self_signed(directory, name, ip=True):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=2)))
    if ip:
        import ipaddress
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
    builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    cert = builder.sign(key, hashes.SHA256())
    cert_path, key_path = os.path.join(directory, name + ".crt"), os.path.join(directory, name + ".key")
    with open(cert_path, "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return cert, key, cert_path, key_path


def allowed_actions(user, scope):
    kind, name, actions = scope.split(":", 2) if scope.count(":") >= 2 else ("", "", "")
    if kind != "repository":
        return None
    wanted = actions.split(",")
    if user == "pusher":
        granted = wanted
    elif user == "reader":
        granted = [action for action in wanted if action == "pull"]
    elif user == "other":
        granted = [action for action in wanted if action == "pull" and name.startswith("other/")]
    else:
        # Anyone, signed in or not, may pull what is under public/.
        granted = [action for action in wanted if action == "pull" and name.startswith("public/")]
    return {"type": "repository", "name": name, "actions": granted}


def token_server(directory, port, signing_cert, signing_key, log):
    x5c = [base64.b64encode(signing_cert.public_bytes(serialization.Encoding.DER)).decode()]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
            user = None
            header = self.headers.get("Authorization", "")
            if header.startswith("Basic "):
                name, _, password = base64.b64decode(header[6:]).decode().partition(":")
                if USERS.get(name) != password:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    log.write("token refused for %s\n" % name)
                    log.flush()
                    return
                user = name
            access = [a for a in (allowed_actions(user, s) for s in query.get("scope", [])) if a and a["actions"]]
            now = int(time.time())
            claims = {"iss": ISSUER, "sub": user or "", "aud": query.get("service", [SERVICE])[0], "iat": now,
                      "nbf": now - 5, "exp": now + 300, "jti": base64.b16encode(os.urandom(8)).decode(),
                      "access": access}
            token = jwt.encode(claims, signing_key, algorithm="ES256", headers={"x5c": x5c})
            body = json.dumps({"token": token, "expires_in": 300}).encode()
            log.write("token issued to %s for %s\n" % (user, query.get("scope")))
            log.flush()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.path.join(directory, "registry.crt"), os.path.join(directory, "registry.key"))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def serve(directory, mode):
    os.makedirs(directory, exist_ok=True)
    _, _, cert_path, key_path = self_signed(directory, "registry")
    port = free_port()
    config = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
        "storage": {"filesystem": {"rootdirectory": os.path.join(directory, "storage")}, "delete": {"enabled": True},
                    "maintenance": {"uploadpurging": {"enabled": False}}},
        "http": {"addr": "127.0.0.1:%d" % port, "tls": {"certificate": cert_path, "key": key_path},
                 "secret": base64.b16encode(os.urandom(16)).decode()},
    }
    log = open(os.path.join(directory, "token.log"), "a")
    token = None
    if mode == "basic":
        with open(os.path.join(directory, "htpasswd"), "w") as handle:
            for name, password in USERS.items():
                handle.write("%s:%s\n" % (name, bcrypt.hashpw(password.encode(), bcrypt.gensalt(5)).decode()))
        config["auth"] = {"htpasswd": {"realm": "orrery-test", "path": os.path.join(directory, "htpasswd")}}
    else:
        signing_cert, signing_key, signing_cert_path, _ = self_signed(directory, "token-signer", ip=False)
        token_port = free_port()
        token = token_server(directory, token_port, signing_cert, signing_key, log)
        config["auth"] = {"token": {"realm": "https://127.0.0.1:%d/token" % token_port, "service": SERVICE,
                                    "issuer": ISSUER, "rootcertbundle": signing_cert_path}}
    config_path = os.path.join(directory, "config.yml")
    with open(config_path, "w") as handle:
        json.dump(config, handle)  # JSON is YAML.
    registry_log = open(os.path.join(directory, "registry.log"), "ab")
    registry = subprocess.Popen(["docker-registry", "serve", config_path], stdout=registry_log,
                                stderr=subprocess.STDOUT, preexec_fn=lambda: _die_with_parent())

    def stop(*_):
        registry.terminate()
        try:
            registry.wait(10)
        except subprocess.TimeoutExpired:
            registry.kill()
        if token:
            token.shutdown()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # A test process may start its children with these signals blocked (its own stop handling): unblock them.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    context = ssl.create_default_context(cafile=cert_path)
    deadline = time.time() + 120
    while True:
        if registry.poll() is not None:
            sys.exit("docker-registry exited with %s; see %s" % (registry.returncode, registry_log.name))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    tls.sendall(b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                    if tls.recv(64).startswith(b"HTTP/1.1 401"):
                        break
        except OSError:
            pass
        if time.time() > deadline:
            sys.exit("docker-registry did not answer in 120 s")
        time.sleep(0.2)
    ready = {"address": "127.0.0.1:%d" % port, "ca": cert_path, "users": USERS, "log": registry_log.name,
             "storage": os.path.join(directory, "storage"), "mode": mode}
    with open(os.path.join(directory, "ready.json.tmp"), "w") as handle:
        json.dump(ready, handle)
    os.rename(os.path.join(directory, "ready.json.tmp"), os.path.join(directory, "ready.json"))
    print("READY " + json.dumps(ready), flush=True)
    while True:
        if registry.poll() is not None:
            sys.exit("docker-registry exited with %s" % registry.returncode)
        time.sleep(1)


def _die_with_parent():
    import ctypes
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def tar_layer(members):
    """A gzip tar layer from (name, type, data/target, mode) tuples; returns (compressed, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, kind, payload, mode in members:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = mode, 1_700_000_000
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, payload
                archive.addfile(info)
            else:
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
    stream = raw.getvalue()
    import gzip
    return gzip.compress(stream, mtime=0), "sha256:" + hashlib.sha256(stream).hexdigest()


def write_blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as handle:
        handle.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def layout_image(layout, layers, arch="amd64", variant=None, cmd=None, layer_type="application/vnd.oci.image.layer.v1.tar+gzip"):
    """Writes an image (layers: [(compressed, diff_id)]) into an OCI layout; returns its manifest descriptor."""
    config = {"architecture": arch, "os": "linux", "config": {"Cmd": cmd or ["/bin/sh"], "Env": ["PATH=/bin"]},
              "rootfs": {"type": "layers", "diff_ids": [diff for _, diff in layers]}}
    if variant:
        config["variant"] = variant
    config_descriptor = dict(write_blob(layout, json.dumps(config).encode()),
                             mediaType="application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_descriptor,
                "layers": [dict(write_blob(layout, blob), mediaType=layer_type) for blob, _ in layers]}
    descriptor = dict(write_blob(layout, json.dumps(manifest).encode()),
                      mediaType="application/vnd.oci.image.manifest.v1+json")
    descriptor["platform"] = {"architecture": arch, "os": "linux", **({"variant": variant} if variant else {})}
    return descriptor


def new_layout(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(os.path.join(path, "blobs", "sha256"))
    with open(os.path.join(path, "oci-layout"), "w") as handle:
        json.dump({"imageLayoutVersion": "1.0.0"}, handle)


def tag_layout(layout, descriptor, tag):
    entry = dict(descriptor, annotations={"org.opencontainers.image.ref.name": tag})
    with open(os.path.join(layout, "index.json"), "w") as handle:
        json.dump({"schemaVersion": 2, "manifests": [entry]}, handle)


def busybox_rootfs_members(binary="/bin/busybox"):
    with open(binary, "rb") as handle:
        busybox = handle.read()
    return [("bin", "dir", None, 0o755), ("bin/busybox", "file", busybox, 0o755), ("bin/sh", "symlink", "busybox", 0o777),
            ("bin/echo", "symlink", "busybox", 0o777), ("bin/cat", "symlink", "busybox", 0o777),
            ("bin/ls", "symlink", "busybox", 0o777), ("bin/id", "symlink", "busybox", 0o777)]


def push(directory, kind, target):
    ready = json.load(open(os.path.join(directory, "ready.json")))
    work = os.path.join(directory, "build-" + base64.b16encode(os.urandom(4)).decode())
    layout = os.path.join(work, "layout")
    os.makedirs(work)
    tag = "build"
    copy_all = False
    if kind == "busybox":
        run(["umoci", "init", "--layout", layout])
        run(["umoci", "new", "--image", layout + ":" + tag])
        bundle = os.path.join(work, "bundle")
        run(["umoci", "unpack", "--rootless", "--image", layout + ":" + tag, bundle])
        rootfs = os.path.join(bundle, "rootfs")
        os.makedirs(os.path.join(rootfs, "bin"))
        shutil.copy("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
        for applet in ["sh", "echo", "cat", "ls", "id", "sleep", "env", "pwd", "touch", "mkdir", "head", "wc", "dd"]:
            os.symlink("busybox", os.path.join(rootfs, "bin", applet))
        os.makedirs(os.path.join(rootfs, "etc"))
        with open(os.path.join(rootfs, "etc", "greeting"), "w") as handle:
            handle.write("hello from the image\n")
        run(["umoci", "repack", "--image", layout + ":" + tag, bundle])
        run(["umoci", "config", "--image", layout + ":" + tag, "--config.cmd", "/bin/cat",
             "--config.cmd", "/etc/greeting", "--config.env", "PATH=/bin", "--config.env", "GREETING=image",
             "--config.workingdir", "/"])
    else:
        new_layout(layout)
        base = tar_layer(busybox_rootfs_members())
        if kind == "multi":
            amd = layout_image(layout, [base], arch="amd64")
            arm = layout_image(layout, [tar_layer([("marker", "file", b"arm64", 0o644)])], arch="arm64", variant="v8")
            index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                     "manifests": [amd, arm]}
            descriptor = dict(write_blob(layout, json.dumps(index).encode()),
                              mediaType="application/vnd.oci.image.index.v1+json")
            copy_all = True
        elif kind.startswith("arm64-busybox:"):
            # A runnable arm64 image (for QEMU user emulation): the arm64 busybox-static at the path given.
            arm = layout_image(layout, [tar_layer(busybox_rootfs_members(kind.split(":", 1)[1]) +
                                                  [("bin/uname", "symlink", "busybox", 0o777)])],
                               arch="arm64", variant="v8", cmd=["/bin/uname", "-m"])
            index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [arm]}
            descriptor = dict(write_blob(layout, json.dumps(index).encode()),
                              mediaType="application/vnd.oci.image.index.v1+json")
            copy_all = True
        elif kind == "arm-only":
            arm = layout_image(layout, [tar_layer([("marker", "file", b"arm64", 0o644)])], arch="arm64", variant="v8")
            index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [arm]}
            descriptor = dict(write_blob(layout, json.dumps(index).encode()),
                              mediaType="application/vnd.oci.image.index.v1+json")
            copy_all = True
        elif kind == "whiteout":
            lower = tar_layer([("data", "dir", None, 0o755), ("data/old", "file", b"old", 0o644),
                               ("data/keep", "file", b"keep", 0o644), ("cache", "dir", None, 0o755),
                               ("cache/stale", "file", b"stale", 0o644)])
            upper = tar_layer([("data/.wh.old", "file", b"", 0o644), ("cache/.wh..wh..opq", "file", b"", 0o644),
                               ("cache/fresh", "file", b"fresh", 0o644)])
            descriptor = layout_image(layout, [base, lower, upper])
        elif kind == "escape":
            evil = tar_layer([("escape", "symlink", "../../../../../../../../tmp", 0o777),
                              ("escape/orrery-escaped", "file", b"pwned", 0o644)])
            descriptor = layout_image(layout, [base, evil])
        elif kind == "zstd":
            raw = io.BytesIO()
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
                info = tarfile.TarInfo("zstd-marker")
                data = b"zstd layer"
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            stream = raw.getvalue()
            compressed = subprocess.run(["zstd", "-q", "-c"], input=stream, stdout=subprocess.PIPE, check=True).stdout
            zstd_layer = (compressed, "sha256:" + hashlib.sha256(stream).hexdigest())
            config_layers = [base, zstd_layer]
            descriptor = layout_image(layout, [base], arch="amd64")
            # Rewritten with the zstd layer's own media type.
            manifest_path = os.path.join(layout, "blobs", "sha256", descriptor["digest"].split(":")[1])
            manifest = json.load(open(manifest_path))
            config = json.load(open(os.path.join(layout, "blobs", "sha256", manifest["config"]["digest"].split(":")[1])))
            config["rootfs"]["diff_ids"] = [diff for _, diff in config_layers]
            manifest["config"] = dict(write_blob(layout, json.dumps(config).encode()),
                                      mediaType="application/vnd.oci.image.config.v1+json")
            manifest["layers"].append(dict(write_blob(layout, compressed),
                                           mediaType="application/vnd.oci.image.layer.v1.tar+zstd"))
            descriptor = dict(write_blob(layout, json.dumps(manifest).encode()),
                              mediaType="application/vnd.oci.image.manifest.v1+json")
        elif kind == "many-layers":
            # One small layer 257 times over: more layers than a device accepts.
            descriptor = layout_image(layout, [tar_layer([("marker", "file", b"x", 0o644)])] * 257)
        elif kind.startswith("artifact:"):
            # An OCI artifact (a data set): an empty config and one layer, the file's bytes as they are.
            with open(kind.split(":", 1)[1], "rb") as handle:
                data = handle.read()
            empty = dict(write_blob(layout, b"{}"), mediaType="application/vnd.oci.empty.v1+json")
            manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "artifactType": "application/vnd.orrery.data.v1", "config": empty,
                        "layers": [dict(write_blob(layout, data), mediaType="application/octet-stream")]}
            descriptor = dict(write_blob(layout, json.dumps(manifest).encode()),
                              mediaType="application/vnd.oci.image.manifest.v1+json")
        elif kind.startswith("big:"):
            mebibytes = int(kind.split(":")[1])
            layers = [base]
            per_layer = max(1, mebibytes // 4)
            for index in range(4):
                layers.append(tar_layer([("big/part%d" % index, "file", os.urandom(per_layer << 20), 0o644)]))
            descriptor = layout_image(layout, layers)
        else:
            sys.exit("unknown kind " + kind)
        tag_layout(layout, descriptor, tag)
    certs = os.path.join(work, "certs")
    os.makedirs(certs)
    shutil.copy(ready["ca"], os.path.join(certs, "ca.crt"))
    command = ["skopeo", "copy", "-q", "--dest-creds", "pusher:" + USERS["pusher"], "--dest-cert-dir", certs]
    if copy_all:
        command.append("--all")
    command += ["oci:" + layout + ":" + tag, "docker://" + ready["address"] + "/" + target]
    run(command)
    index = json.load(open(os.path.join(layout, "index.json")))
    top = index["manifests"][0]
    blob = lambda digest: json.load(open(os.path.join(layout, "blobs", "sha256", digest.split(":")[1])))
    content = blob(top["digest"])
    layers = [layer["digest"] for layer in content.get("layers", [])]
    print(json.dumps({"digest": top["digest"], "layers": layers,
                      "config": content.get("config", {}).get("digest")}))
    shutil.rmtree(work, ignore_errors=True)


def tamper(directory, digest):
    ready = json.load(open(os.path.join(directory, "ready.json")))
    hexdigest = digest.split(":")[1]
    path = os.path.join(ready["storage"], "docker", "registry", "v2", "blobs", "sha256", hexdigest[:2], hexdigest, "data")
    with open(path, "r+b") as handle:
        data = bytearray(handle.read())
        data[len(data) // 2] ^= 0xFF
        handle.seek(0)
        handle.write(data)


def run(command):
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        sys.exit("%s failed (%d): %s" % (command[0], result.returncode, result.stdout.decode(errors="replace")))


if __name__ == "__main__":
    verb = sys.argv[1]
    if verb == "serve":
        serve(sys.argv[2], sys.argv[3])
    elif verb == "push":
        push(sys.argv[2], sys.argv[3], sys.argv[4])
    elif verb == "tamper":
        tamper(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
