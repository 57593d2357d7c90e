# A tiny client of the Orrery mailbox protocol (newline-delimited JSON over $ORRERY_MAILBOX), for workloads.
# When the agent restarts, the connection breaks: the client connects again and repeats the request it was waiting
# on. A send is repeated under the same id, and the agent answers a repeated id with the first send's envelope
# instead of sending it twice — so each send gets its own id.
import base64, json, os, socket, time, uuid

class Mailbox:
    def __init__(self, patience=60):
        self.path = os.environ["ORRERY_MAILBOX"]
        self.patience = patience
        self._connect()

    def _connect(self):
        deadline = time.monotonic() + self.patience
        while True:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(self.path)
                self.sock = sock
                self.file = sock.makefile("rwb")
                return
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def call(self, **request):
        line = (json.dumps(request) + "\n").encode()
        while True:
            try:
                self.file.write(line)
                self.file.flush()
                answer = self.file.readline()
                if answer:
                    return json.loads(answer)
            except (OSError, ValueError):
                pass
            # The agent went away (it restarts): connect again and repeat the request.
            try:
                self.sock.close()
            except OSError:
                pass
            self._connect()

    def send(self, to, behavior, payload, reply_to=None, ident=None):
        request = {"op": "send", "id": ident or uuid.uuid4().hex, "to": to, "behavior": behavior,
                   "payload": base64.b64encode(payload.encode()).decode()}
        if reply_to:
            request["reply_to"] = reply_to
        return self.call(**request)

    def receive(self):
        return self.call(op="receive")

def text(line):
    return base64.b64decode(line.get("payload", "")).decode()
