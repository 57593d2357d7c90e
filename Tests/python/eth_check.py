"""Independent Ethereum checks with eth-account: reads a job (JSON) that the Swift tests wrote, prints one JSON
object with what eth-account makes of it.

job = {
  "typed": [{"data": <eth_signTypedData_v4 JSON>, "signature": "0x…"}],      -> recovered signer, digest
  "transactions": ["0x02…"],                                                 -> sender and decoded fields
  "sign": [{"data": <typed data JSON>, "key": "0x…"}],                       -> eth-account's signature
  "addresses": ["0x…private key"],                                           -> checksummed address
}
"""
import json
import sys

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.typed_transactions import TypedTransaction
from eth_utils import keccak
from hexbytes import HexBytes


def recover_typed(item):
    message = encode_typed_data(full_message=item["data"])
    digest = keccak(b"\x19" + message.version + message.header + message.body)
    try:
        signer = Account.recover_message(message, signature=bytes.fromhex(item["signature"][2:]))
    except Exception as error:  # a tampered signature may not recover at all
        signer = "error: " + type(error).__name__
    return {"signer": signer, "digest": "0x" + digest.hex()}


def decode_transaction(raw):
    data = bytes.fromhex(raw[2:])
    try:
        sender = Account.recover_transaction(data)
    except Exception as error:  # a tampered signature may not recover at all
        return {"sender": "error: " + type(error).__name__}
    fields = TypedTransaction.from_bytes(HexBytes(data)).as_dict()
    return {
        "sender": sender,
        "type": data[0],
        "chainId": fields["chainId"],
        "nonce": fields["nonce"],
        "maxPriorityFeePerGas": str(fields["maxPriorityFeePerGas"]),
        "maxFeePerGas": str(fields["maxFeePerGas"]),
        "gas": fields["gas"],
        "to": fields["to"].hex() if isinstance(fields["to"], bytes) else fields["to"],
        "value": str(fields["value"]),
        "data": "0x" + bytes(fields["data"]).hex(),
        "hash": "0x" + keccak(data).hex(),
    }


def sign_typed(item):
    signed = Account.sign_message(encode_typed_data(full_message=item["data"]), private_key=item["key"])
    return "0x" + bytes(signed.signature).hex()


job = json.load(open(sys.argv[1]))
result = {
    "typed": [recover_typed(item) for item in job.get("typed", [])],
    "transactions": [decode_transaction(raw) for raw in job.get("transactions", [])],
    "sign": [sign_typed(item) for item in job.get("sign", [])],
    "addresses": [Account.from_key(key).address for key in job.get("addresses", [])],
}
print(json.dumps(result))
