# A tiny client of the Orrery mailbox protocol (newline-delimited JSON over $ORRERY_MAILBOX), for test workloads.
import base64, json, os, socket, time

class Mailbox:
    def __init__(self):
        path = os.environ["ORRERY_MAILBOX"]
        for _ in range(200):
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                time.sleep(0.05)
        self.file = self.sock.makefile("rwb")

    def call(self, **request):
        self.file.write((json.dumps(request) + "\n").encode())
        self.file.flush()
        return json.loads(self.file.readline())

    def send(self, to, behavior, payload, reply_to=None, ident="x"):
        request = {"op": "send", "id": ident, "to": to, "behavior": behavior,
                   "payload": base64.b64encode(payload.encode()).decode()}
        if reply_to:
            request["reply_to"] = reply_to
        return self.call(**request)

    def receive(self):
        return self.call(op="receive")

def text(line):
    return base64.b64decode(line.get("payload", "")).decode()
