"""A stand-in for cardano-submit-api on loopback: POST /api/submit/tx with a CBOR transaction; it is decoded with
pycardano, its vkey witnesses checked with PyNaCl over blake2b-256 of the body; 202 and the id as JSON when they
hold, 400 with the reason otherwise. Prints its port as the first line."""
import hashlib
import json
from http.server import BaseHTTPRequestHandler, HTTPServer

import cbor2
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from pycardano import Transaction


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        status, body = 202, None
        if self.path != "/api/submit/tx" or self.headers.get("Content-Type") != "application/cbor":
            status, body = 415, "POST application/cbor to /api/submit/tx"
        else:
            try:
                transaction = Transaction.from_cbor(raw)
                digest = hashlib.blake2b(cbor2.dumps(cbor2.loads(raw)[0]), digest_size=32).digest()
                witnesses = transaction.transaction_witness_set.vkey_witnesses or []
                if not witnesses:
                    raise ValueError("no witness")
                for witness in witnesses:
                    VerifyKey(witness.vkey.payload).verify(digest, witness.signature)
                body = str(transaction.transaction_body.id)
            except (BadSignatureError, ValueError, Exception) as error:
                status, body = 400, f"{type(error).__name__}: {error}"
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *arguments):
        pass


server = HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
