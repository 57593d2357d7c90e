"""UCAN 1.0 tokens checked and made by independent Python libraries (dag-cbor, PyNaCl, multiformats, base58),
for the Swift interoperability tests.

  ucan_interop.py verify HEX [HEX ...]   prints one JSON line per token: its CID, tag, issuer and whether the
                                          signature verifies (over the re-encoded signature payload)
  ucan_interop.py make                   prints JSON with a delegation and an invocation made here, hex-encoded
"""
import json
import os
import sys
import time

import base58
import dag_cbor
import nacl.exceptions
import nacl.signing
from multiformats import CID, multihash

ED25519_HEADER = bytes([0x34, 0x01, 0xED, 0x01, 0xED, 0x01, 0x13, 0x71])


def did_of(verify_key: nacl.signing.VerifyKey) -> str:
    return "did:key:z" + base58.b58encode(b"\xed\x01" + bytes(verify_key)).decode()


def key_of(did: str) -> nacl.signing.VerifyKey:
    raw = base58.b58decode(did[len("did:key:z"):])
    if raw[:2] != b"\xed\x01":
        raise ValueError("not an Ed25519 did:key")
    return nacl.signing.VerifyKey(raw[2:])


def cid_of(token: bytes) -> str:
    return str(CID("base32", 1, "dag-cbor", multihash.digest(token, "sha2-256")))


def verify(token: bytes) -> dict:
    signature, sig_payload = dag_cbor.decode(token)
    tag = next(key for key in sig_payload if key != "h")
    payload = sig_payload[tag]
    valid = sig_payload["h"] == ED25519_HEADER
    try:
        key_of(payload["iss"]).verify(dag_cbor.encode(sig_payload), signature)
    except (nacl.exceptions.BadSignatureError, ValueError):
        valid = False
    return {"cid": cid_of(token), "tag": tag, "iss": payload["iss"], "cmd": payload["cmd"], "valid": valid,
            "canonical": dag_cbor.encode(dag_cbor.decode(token)) == token}


def sign(key: nacl.signing.SigningKey, tag: str, payload: dict) -> bytes:
    sig_payload = {"h": ED25519_HEADER, tag: payload}
    signature = key.sign(dag_cbor.encode(sig_payload)).signature
    return dag_cbor.encode([signature, sig_payload])


def make() -> dict:
    owner, invoker = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    owner_did, invoker_did = did_of(owner.verify_key), did_of(invoker.verify_key)
    now = int(time.time())
    delegation = sign(owner, "ucan/dlg@1.0.0", {
        "iss": owner_did, "aud": invoker_did, "sub": owner_did, "cmd": "/orrery/identity",
        "pol": [["<=", ".budget", 500]], "nonce": os.urandom(12), "exp": now + 3600,
    })
    delegation_cid = CID.decode(cid_of(delegation))
    invocation = sign(invoker, "ucan/inv@1.0.0", {
        "iss": invoker_did, "sub": owner_did, "aud": owner_did, "cmd": "/orrery/identity/list-revocations",
        "args": {"budget": 400}, "prf": [delegation_cid], "nonce": os.urandom(12), "exp": now + 120, "iat": now,
    })
    return {"owner": owner_did, "invoker": invoker_did, "delegation": delegation.hex(), "invocation": invocation.hex(),
            "delegation_cid": cid_of(delegation), "invocation_cid": cid_of(invocation)}


if __name__ == "__main__":
    if sys.argv[1] == "verify":
        for token in sys.argv[2:]:
            print(json.dumps(verify(bytes.fromhex(token))))
    elif sys.argv[1] == "make":
        print(json.dumps(make()))
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
