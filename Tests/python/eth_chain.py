"""An offline Ethereum chain for the settlement tests: eth-tester with the py-evm backend behind a small loopback
JSON-RPC endpoint. At start it compiles Deploy/ethereum/*.vy with vyper, deploys the NTX token and the channel
contract, funds the accounts named on the command line with ETH and mints NTX to them, prints one JSON line
({"rpc", "chainId", "token", "channels"}) and serves until killed.

Usage: eth_chain.py ADDRESS=ETH_WEI:NTX_BASE_UNITS ...

Besides the standard eth_* methods (answered by eth-tester through web3's provider) it understands:
  test_timeTravel [timestamp]        moves the chain's clock (then mines a block)
  test_setAutoMine [bool]            stops/starts mining each transaction as it arrives (to hold one pending)
  test_mine [count]                  mines blocks
"""
import json
from collections.abc import Mapping
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

import vyper
from eth_tester import EthereumTester, PyEVMBackend
from web3 import Web3
from web3.providers.eth_tester import EthereumTesterProvider

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
tester = EthereumTester(PyEVMBackend())
w3 = Web3(EthereumTesterProvider(tester))
deployer = w3.eth.accounts[0]


def compiled(name):
    with open(os.path.join(root, "Deploy", "ethereum", name + ".vy")) as source:
        output = vyper.compile_code(source.read(), output_formats=["abi", "bytecode"])
    return w3.eth.contract(abi=output["abi"], bytecode=output["bytecode"])


def deploy(factory, *arguments):
    receipt = w3.eth.wait_for_transaction_receipt(factory.constructor(*arguments).transact({"from": deployer}))
    return w3.eth.contract(address=receipt.contractAddress, abi=factory.abi)


token = deploy(compiled("NTXToken"))
channels = deploy(compiled("OrreryChannels"), token.address)
for argument in sys.argv[1:]:
    address, amounts = argument.split("=")
    wei, ntx = amounts.split(":")
    address = Web3.to_checksum_address(address)
    if int(wei):
        w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction({"from": deployer, "to": address, "value": int(wei)}))
    if int(ntx):
        w3.eth.wait_for_transaction_receipt(token.functions.mint(address, int(ntx)).transact({"from": deployer}))


def answer(request):
    method, params = request.get("method"), request.get("params") or []
    if method == "test_timeTravel":
        tester.time_travel(int(params[0]))
        return True
    if method == "test_setAutoMine":
        (tester.enable_auto_mine_transactions if params[0] else tester.disable_auto_mine_transactions)()
        return True
    if method == "test_mine":
        return tester.mine_blocks(int(params[0]) if params else 1)
    if method == "eth_getLogs" and params and isinstance(params[0].get("address"), str):
        params = [{**params[0], "address": [params[0]["address"]]}]  # web3 would take a lone string for an ENS name
    return w3.manager.request_blocking(method, params)


class RPCError(Exception):
    def __init__(self, error):
        self.error = error if isinstance(error, dict) else {"code": -32000, "message": str(error)}


def camel(key):
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


def plain(value):
    """eth-tester answers in Python terms (ints, bytes, snake_case keys); JSON-RPC wants 0x quantities and data
    and camelCase keys."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return {camel(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body = {"jsonrpc": "2.0", "id": request.get("id")}
        try:
            body["result"] = plain(answer(request))
        except RPCError as error:
            body["error"] = error.error
        except Exception as error:  # eth-tester raises for invalid transactions, reverts, unknown methods
            body["error"] = {"code": -32000, "message": f"{type(error).__name__}: {error}"}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *arguments):
        pass


server = HTTPServer(("127.0.0.1", 0), Handler)
print(json.dumps({
    "rpc": f"http://127.0.0.1:{server.server_address[1]}",
    "chainId": w3.eth.chain_id,
    "token": token.address,
    "channels": channels.address,
}), flush=True)
server.serve_forever()
