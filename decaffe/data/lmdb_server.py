"""The LMDB reader process: serves one LMDB's records, in key order, over its stdin/stdout.

decaffe reads LMDBs here, in a child process of its own, because the ``lmdb`` package allows
one handle per environment in a process: a script that holds its own handle on a database
(to write it, count its entries, peek at a Datum) and a Data layer reading it would
otherwise refuse each other, in whichever order they open it. Caffe's C++ reader never met
pycaffe's handle either. This file imports nothing of decaffe (it starts in milliseconds).

Frames, both ways: a 4-byte little-endian length, then the payload. Requests start with one
opcode byte; replies with ``K`` (ok) or ``E`` (an error message follows, UTF-8).

- ``L``: the number of records (8 bytes).
- ``F``: seek to the first record; reply 1 byte, whether the database holds any.
- ``S`` key: seek to the first record >= key, wrapping to the first; reply 1 byte, whether
  the key itself was found.
- ``C``: the current record, as one record of ``T``'s reply.
- ``T`` n size rank offset (4 × 8 bytes): the next n records kept by a solver of ``rank``
  out of ``size`` (every record whose running ``offset`` % size == rank; size 1 keeps all),
  wrapping around at the end; reply the new offset (8 bytes), the next record's key (its
  length in 4 bytes, then the key), then per record its key and value lengths (4 bytes
  each), key, value.
- ``N`` n: pass over n records (wrapping).
- ``Q``: end. End of input ends the process too, so it never outlives its parent.
"""

from __future__ import annotations

import os
import struct
import sys
from typing import BinaryIO

import lmdb

_LEN = struct.Struct("<I")
_TAKE = struct.Struct("<qqqq")
_Q = struct.Struct("<q")


def _read_exact(f: BinaryIO, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _send(out: BinaryIO, payload: bytes) -> None:
    out.write(_LEN.pack(len(payload)))
    out.write(payload)
    out.flush()


def serve(path: str, inp: BinaryIO, out: BinaryIO) -> int:
    try:
        env = lmdb.open(path, readonly=True, lock=False, subdir=os.path.isdir(path),
                        readahead=False)
        txn = env.begin(write=False, buffers=False)
        cur = txn.cursor()
        valid = cur.first()
    except lmdb.Error as e:
        _send(out, b"E" + f"not a readable LMDB ({e})".encode("utf-8", "replace"))
        return 1
    _send(out, b"K")
    while True:
        head = _read_exact(inp, 4)
        if head is None:
            return 0
        req = _read_exact(inp, _LEN.unpack(head)[0])
        if not req:
            return 0
        op, arg = req[:1], req[1:]
        try:
            if op == b"Q":
                return 0
            if op == b"L":
                _send(out, b"K" + _Q.pack(int(env.stat()["entries"])))
            elif op == b"F":
                valid = cur.first()
                _send(out, b"K" + bytes([valid]))
            elif op == b"S":
                found = cur.set_range(arg)
                exact = found and cur.key() == arg
                valid = found or cur.first()
                _send(out, b"K" + bytes([exact]))
            elif not valid:
                _send(out, b"E" + b"the database is empty")
            elif op == b"C":
                k, v = cur.item()
                _send(out, b"K" + _Q.pack(0) + _LEN.pack(len(k)) + _LEN.pack(len(v)) + k + v)
            elif op == b"N":
                for _ in range(_Q.unpack(arg)[0]):
                    if not cur.next():
                        cur.first()
                _send(out, b"K")
            elif op == b"T":
                n, size, rank, offset = _TAKE.unpack(arg)
                parts = [b"K", b""]
                got = 0
                while got < n:
                    if size <= 1 or offset % size == rank:
                        k, v = cur.item()
                        parts.append(_LEN.pack(len(k)) + _LEN.pack(len(v)))
                        parts.append(k)
                        parts.append(v)
                        got += 1
                    offset += 1
                    if not cur.next():
                        cur.first()
                nxt = cur.key()
                parts[1] = _Q.pack(offset) + _LEN.pack(len(nxt)) + nxt
                _send(out, b"".join(parts))
            else:
                _send(out, b"E" + b"unknown request " + op)
        except lmdb.Error as e:
            _send(out, b"E" + str(e).encode("utf-8", "replace"))


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1],
                   sys.stdin.buffer, sys.stdout.buffer))
