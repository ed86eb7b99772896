"""The sealed backup format (store/sealed.h) written by an independent implementation (Python's
cryptography package, following only the header comment) and checked by `gantry cluster
backup-verify`: the contract and the C decoder agree, and the decoder refuses what the contract
says it must.

Run: /usr/bin/python3 test_sealed_interop.py            (GANTRY_CLI: path of gantry)
     /usr/bin/python3 test_sealed_interop.py --seeds DIR
        write the seed corpus of tests/fuzz/fuzz_sealed_backup.c (sealed under its key) into DIR
Exit 77 (skipped) when the cryptography package is missing.
"""

import hashlib
import hmac
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError:
    print("python3-cryptography is not installed: skipped")
    sys.exit(77)

FUZZ_KEY = b"gantry-fuzz-sealed-backup-key-01"


def seal(key, plain, chunk=4096, salt=None, cid="interop-cluster", rev=42, final_index=None, order=None):
    salt = salt if salt is not None else os.urandom(8)
    kid = hmac.new(key, b"gantry sealed backup v1 key id", hashlib.sha256).digest()[:8].hex()
    header = ("GANTRY-SEALED-BACKUP 1\ncluster %s\nrevision %d\nschema 23\ncreated_ms 1796000000000\n"
              "key_id %s\nsalt %s\nchunk %d\n\n" % (cid, rev, kid, salt.hex(), chunk)).encode()
    hh = hashlib.sha256(header).digest()
    g = AESGCM(hmac.new(key, b"gantry sealed backup v1 data key" + salt, hashlib.sha256).digest())
    recs = []
    pieces = [plain[i:i + chunk] for i in range(0, len(plain), chunk)]
    for i, p in enumerate(pieces):
        recs.append(struct.pack(">I", len(p)) + g.encrypt(salt + struct.pack(">I", i), p, hh + struct.pack(">IB", i, 0)))
    if order is not None:
        recs = [recs[i] for i in order]
    n = len(pieces) if final_index is None else final_index
    summary = struct.pack(">Q", len(plain)) + hashlib.sha256(plain).digest()
    final = struct.pack(">I", 40 | 0x80000000) + g.encrypt(salt + struct.pack(">I", n), summary,
                                                           hh + struct.pack(">IB", n, 1))
    return header + b"".join(recs) + final


def archive(files):
    out = b"GANTRY-BACKUP 1\n"
    for name, data in files:
        out += b"F %s %d\n" % (name.encode(), len(data)) + data + b"\n"
    return out + b"END\n"


def seeds(d):
    os.makedirs(d, exist_ok=True)
    arch = archive([("db", b"hello")])
    for name, blob in (("empty", seal(FUZZ_KEY, b"", salt=bytes(range(8)))),
                       ("small", seal(FUZZ_KEY, arch, salt=bytes(range(8)))),
                       ("three_records", seal(FUZZ_KEY, bytes(range(256)) * 40, salt=bytes(range(8))))):
        for mode, prefix in (("keyed", b"\x01"), ("structure", b"\x00")):
            with open(os.path.join(d, "%s_%s" % (name, mode)), "wb") as f:
                f.write(prefix + blob)


def main():
    cli = os.environ.get("GANTRY_CLI", "")
    work = tempfile.mkdtemp(prefix="sealed-interop-")
    key = os.urandom(32)
    keyfile = os.path.join(work, "k")
    fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, key.hex().encode() + b"\n")
    os.close(fd)
    failures = []

    def verify(name, blob, want_rc, want_text, args=("--key-file", keyfile)):
        path = os.path.join(work, name)
        with open(path, "wb") as f:
            f.write(blob)
        p = subprocess.run([cli, "cluster", "backup-verify", path] + list(args), capture_output=True, timeout=60,
                           env=dict(os.environ, GANTRY_BACKUP_KEY=""))
        text = p.stdout.decode() + p.stderr.decode()
        ok = p.returncode == want_rc and want_text in text
        print("%-28s rc %d %s" % (name, p.returncode, "ok" if ok else "UNEXPECTED: " + text.strip()))
        if not ok:
            failures.append(name)

    arch = archive([("db", os.urandom(9000)), ("db-wal", os.urandom(70000))])
    good = seal(key, arch)
    verify("python-sealed", good, 0, "sealed backup OK: cluster interop-cluster, revision 42, schema 23")
    verify("python-sealed-no-key", good, 0, "STRUCTURE ONLY", args=())
    verify("empty-archive", seal(key, archive([])), 0, "sealed backup OK")
    verify("other-key", seal(os.urandom(32), arch), 1, "is not the backup's key")
    n = (len(arch) + 4095) // 4096
    verify("swapped-records", seal(key, arch, order=[1, 0] + list(range(2, n))), 1, "fails authentication")
    verify("dropped-record", seal(key, arch, order=[0] + list(range(2, n))), 1, "fails authentication")
    verify("final-index-early", seal(key, arch, final_index=3), 1, "fails authentication")
    verify("not-an-archive-inside", seal(key, b"x" * 5000), 1, "the archive inside")
    verify("chunk-too-small", seal(key, arch, chunk=1024), 1, "malformed header")
    lower = seal(key, arch, salt=bytes.fromhex("abcdef0123456789"))
    verify("uppercase-salt", lower.replace(b"salt abcdef0123456789", b"salt ABCDEF0123456789"), 1,
           "malformed header")
    verify("trailing-byte", good + b"\0", 1, "after the final record")
    verify("truncated", good[:-1], 1, "truncated")
    verify("plain-archive", arch, 0, "UNENCRYPTED")
    # -o json, for scripts: how far the check went, and what the header and final record say.
    path = os.path.join(work, "python-sealed")
    for args, checked in ((["--key-file", keyfile], "authenticated"), ([], "structure_only")):
        p = subprocess.run([cli, "-o", "json", "cluster", "backup-verify", path] + args, capture_output=True,
                           timeout=60, env=dict(os.environ, GANTRY_BACKUP_KEY=""))
        doc = json.loads(p.stdout) if p.returncode == 0 else {}
        want = {"checked": checked, "cluster_id": "interop-cluster", "revision": 42, "schema_version": 23}
        if checked == "authenticated":
            want.update(archive_size=len(arch), archive_files=2, archive_sha256=hashlib.sha256(arch).hexdigest())
        ok = all(doc.get(k) == v for k, v in want.items()) and (checked != "structure_only" or
                                                               "archive_sha256" not in doc)
        print("%-28s rc %d %s" % ("json-" + checked, p.returncode, "ok" if ok else "UNEXPECTED: %r" % doc))
        if not ok:
            failures.append("json-" + checked)
    if failures:
        print("FAIL: %s" % ", ".join(failures))
        return 1
    print("the C decoder agrees with an independent implementation of store/sealed.h")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--seeds":
        seeds(sys.argv[2])
        sys.exit(0)
    sys.exit(main())
