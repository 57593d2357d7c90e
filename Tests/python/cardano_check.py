"""Independent Cardano checks with pycardano, PyNaCl and hashlib: reads a job (JSON) that the Swift tests wrote and
prints one JSON object with what those libraries make of it.

job = {
  "cose": [{"signature": hex, "key": hex}],       -> pycardano cip8.verify: verified, message, address
  "transactions": [hex],                          -> pycardano decode + PyNaCl witness checks over blake2b-256(body)
  "addresses": [{"seed": hex, "testnet": bool}],  -> bech32 enterprise address
}
"""
import hashlib
import json
import sys

import cbor2
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from pycardano import Address, Network, PaymentSigningKey, Transaction
from pycardano.cip import cip8


def verify_cose(item):
    try:
        result = cip8.verify({"signature": item["signature"], "key": item["key"]})
        return {"verified": bool(result["verified"]), "message": result["message"],
                "address": str(result["signing_address"])}
    except Exception as error:
        return {"verified": False, "error": type(error).__name__}


def decode_transaction(raw_hex):
    raw = bytes.fromhex(raw_hex)
    transaction = Transaction.from_cbor(raw)
    body = transaction.transaction_body
    body_bytes = cbor2.dumps(cbor2.loads(raw)[0])
    body_hash = hashlib.blake2b(body_bytes, digest_size=32).digest()
    witnesses = []
    for witness in transaction.transaction_witness_set.vkey_witnesses or []:
        try:
            VerifyKey(witness.vkey.payload).verify(body_hash, witness.signature)
            witnesses.append(True)
        except BadSignatureError:
            witnesses.append(False)
    outputs = []
    for output in body.outputs:
        assets = {}
        for policy, names in output.amount.multi_asset.items():
            for name, quantity in names.items():
                assets[policy.payload.hex() + "." + name.payload.hex()] = quantity
        outputs.append({"address": str(output.address), "lovelace": output.amount.coin, "assets": assets})
    return {
        "id": str(body.id),
        "blake2b": body_hash.hex(),
        "fee": body.fee,
        "ttl": body.ttl,
        "inputs": [f"{i.transaction_id.payload.hex()}#{i.index}" for i in body.inputs],
        "outputs": outputs,
        "witnesses": witnesses,
    }


def address(item):
    key = PaymentSigningKey.from_primitive(bytes.fromhex(item["seed"]))
    network = Network.TESTNET if item["testnet"] else Network.MAINNET
    return str(Address(key.to_verification_key().hash(), network=network))


job = json.load(open(sys.argv[1]))
print(json.dumps({
    "cose": [verify_cose(item) for item in job.get("cose", [])],
    "transactions": [decode_transaction(raw) for raw in job.get("transactions", [])],
    "addresses": [address(item) for item in job.get("addresses", [])],
}))
