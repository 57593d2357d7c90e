"""An independent RFC 6962 Merkle tree (the specification's recursive definitions, with hashlib) that checks the
roots and proofs the Swift notary produced. Input: a JSON file with hex leaves (the entries' bytes), and the roots,
inclusion proofs and consistency proofs to check. Prints one JSON verdict per check; exits 1 on any mismatch."""
import hashlib
import json
import sys


def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves):
    if len(leaves) == 0:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = split(len(leaves))
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def path(m, leaves):
    if len(leaves) <= 1:
        return []
    k = split(len(leaves))
    if m < k:
        return path(m, leaves[:k]) + [mth(leaves[k:])]
    return path(m - k, leaves[k:]) + [mth(leaves[:k])]


def subproof(m, leaves, complete):
    n = len(leaves)
    if m == n:
        return [] if complete else [mth(leaves)]
    k = split(n)
    if m <= k:
        return subproof(m, leaves[:k], complete) + [mth(leaves[k:])]
    return subproof(m - k, leaves[k:], False) + [mth(leaves[:k])]


def proof(m, leaves):
    if m == 0 or m == len(leaves):
        return []
    return subproof(m, leaves, True)


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    leaves = [bytes.fromhex(x) for x in job["leaves"]]
    failures = 0
    for check in job.get("roots", []):
        ok = mth(leaves[: check["size"]]).hex() == check["root"]
        failures += not ok
        print(json.dumps({"root": check["size"], "ok": ok}))
    for check in job.get("inclusion", []):
        expected = [h.hex() for h in path(check["index"], leaves[: check["size"]])]
        ok = expected == check["path"]
        failures += not ok
        print(json.dumps({"inclusion": [check["index"], check["size"]], "ok": ok}))
    for check in job.get("consistency", []):
        expected = [h.hex() for h in proof(check["old"], leaves[: check["new"]])]
        ok = expected == check["path"]
        failures += not ok
        print(json.dumps({"consistency": [check["old"], check["new"]], "ok": ok}))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
