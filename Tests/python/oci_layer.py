"""Writes an OCI image layer (a tar stream, optionally gzip or zstd) from a JSON list of members on stdin.

Independent of Orrery's tar reader: Python's tarfile writes the archive. Members may be hostile on purpose
(paths with '..', links out of the root, device nodes, setuid bits): that is what the unpacker is tested on.

    python oci_layer.py OUT {none|gzip|zstd} [pax|gnu|ustar] < members.json

Prints the uncompressed stream's sha256 (the layer's diff ID) and the written file's sha256 and size, as JSON.
Each member: {"name", "type": file|dir|symlink|hardlink|fifo|chardev|blockdev, "data" (text),
"size_zeros" (a file of that many zero bytes), "mode", "target"}.
"""
import hashlib
import io
import json
import subprocess
import sys
import tarfile

TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "chardev": tarfile.CHRTYPE,
    "blockdev": tarfile.BLKTYPE,
}


class Zeros(io.RawIOBase):
    def __init__(self, size):
        self.left = size

    def readable(self):
        return True

    def readinto(self, buffer):
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


def main():
    out, compression = sys.argv[1], sys.argv[2]
    fmt = {"pax": tarfile.PAX_FORMAT, "gnu": tarfile.GNU_FORMAT, "ustar": tarfile.USTAR_FORMAT}[
        sys.argv[3] if len(sys.argv) > 3 else "pax"]
    members = json.load(sys.stdin)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as archive:
        for member in members:
            info = tarfile.TarInfo(member["name"])
            info.type = TYPES[member.get("type", "file")]
            info.mode = member.get("mode", 0o755 if info.type == tarfile.DIRTYPE else 0o644)
            info.mtime = member.get("mtime", 1_700_000_000)
            info.linkname = member.get("target", "")
            if info.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                info.devmajor, info.devminor = 1, 3
            body = None
            if info.type == tarfile.REGTYPE:
                if "size_zeros" in member:
                    info.size = member["size_zeros"]
                    body = Zeros(info.size)
                else:
                    data = member.get("data", "").encode()
                    info.size = len(data)
                    body = io.BytesIO(data)
            archive.addfile(info, body)
    stream = raw.getvalue()
    if compression == "gzip":
        import gzip
        written = gzip.compress(stream)
    elif compression == "zstd":
        written = subprocess.run(["zstd", "-q", "-c"], input=stream, stdout=subprocess.PIPE, check=True).stdout
    else:
        written = stream
    with open(out, "wb") as handle:
        handle.write(written)
    print(json.dumps({
        "diff_id": "sha256:" + hashlib.sha256(stream).hexdigest(),
        "digest": "sha256:" + hashlib.sha256(written).hexdigest(),
        "size": len(written),
    }))


if __name__ == "__main__":
    main()
