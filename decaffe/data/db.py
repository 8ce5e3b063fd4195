"""Key-value databases of records, as Caffe's db::DB: LMDB (the `lmdb` package) and LevelDB
(`plyvel`).

Modes are Caffe's: READ opens an existing database and never writes to it; NEW creates one
and fails if it exists; WRITE opens or creates one to add records. Readers go through a
:class:`Cursor` in key order (bytewise, as both databases sort keys) and wrap around to the
first record at the end, as Caffe's data layers do. Writers buffer puts in a
:class:`Transaction` and write them on ``commit()``.

LMDB is opened read-only and without LMDB's reader lock, so reading writes nothing at all
(read-only media work) and other readers are never locked out; as with Caffe, a database
should not be written while it is read. Each LMDB reader is a process of its own
(``lmdb_server.py``), so a script's own ``lmdb`` handle never collides with decaffe's and no
handle outlives its reader or the files it read. LevelDB allows one process to open a
database and has no read-only mode (opening it rewrites its own log and manifest, never its
records); within a process readers share one handle while the folder's files are the same
ones, and a database held by another process is read from a snapshot of its files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

import lmdb

if TYPE_CHECKING:
    import plyvel

from ..errors import DataError

READ, WRITE, NEW = "read", "write", "new"
_BACKENDS = {"lmdb": "lmdb", "leveldb": "leveldb", 0: "leveldb", 1: "lmdb"}


def backend_name(backend: str | int) -> str:
    """'lmdb' or 'leveldb' from a name (any case) or DataParameter.DB value (0/1)."""
    key = backend.lower() if isinstance(backend, str) else backend
    try:
        return _BACKENDS[key]
    except (KeyError, TypeError):
        raise DataError(f"unknown database backend {backend!r} (use lmdb or leveldb)") from None


def open_db(path: str, backend: str | int = "lmdb", mode: str = READ) -> DB:
    """Open a database (Caffe's db::GetDB + Open)."""
    name = backend_name(backend)
    path = os.fspath(path)
    if "\0" in path:
        raise DataError(f"database path {path!r} holds a NUL byte")
    if mode not in (READ, WRITE, NEW):
        raise ValueError(f"mode must be READ, WRITE or NEW, not {mode!r}")
    if name == "lmdb":
        return LMDB(path, mode)
    return LevelDB(path, mode)


class RecordKeep(Protocol):
    """A solver's record filter (data.sources.SolverKeep): called once per record passed
    over, says whether to keep it; every size-th record from rank on, offset counting."""

    size: int
    rank: int
    offset: int

    def __call__(self) -> bool: ...


# Makes the error for a database that cannot be used: (what went wrong, the cause)
Fail = Callable[[str, Exception | str], DataError]


class DB:
    """A database opened in one mode; close() releases it (also on garbage collection)."""

    backend = ""

    def __init__(self, path: str, mode: str) -> None:
        self.path, self.mode = path, mode

    def cursor(self) -> Cursor:
        raise NotImplementedError

    def transaction(self) -> Transaction:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: object) -> bool:
        self.close()
        return False

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) once, in key order."""
        cur = self.cursor()
        try:
            while cur.valid:
                yield cur.key, cur.value
                cur.next()
        finally:
            cur.close()

    def _missing(self, what: str, err: Exception | str) -> DataError:
        return DataError(f"cannot open {self.backend} database '{self.path}': {what} ({err})")


class Cursor:
    """A position in a database, moving in key order (Caffe's db::Cursor)."""

    def seek_to_first(self) -> None:
        raise NotImplementedError

    def next(self) -> None:
        raise NotImplementedError

    @property
    def valid(self) -> bool:
        raise NotImplementedError

    @property
    def key(self) -> bytes:
        raise NotImplementedError

    @property
    def value(self) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def advance(self) -> bool:
        """Next record, wrapping to the first at the end; True when it wrapped."""
        self.next()
        if not self.valid:
            self.seek_to_first()
            return True
        return False

    def take(self, n: int, keep: RecordKeep | None = None) -> list[tuple[bytes, bytes]]:
        """The next n records (wrapping around), leaving the cursor after the last one.

        keep() -> bool, when given, is asked once for every record passed over and says
        whether to keep it (Caffe's Skip/Next when several solvers share a database).
        """
        out = []
        while len(out) < n:
            if keep is None or keep():
                out.append((self.key, self.value))
            self.advance()
        return out


class Transaction:
    """Buffered puts, written by commit() (Caffe's db::Transaction)."""

    def put(self, key: bytes | str, value: bytes) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError


def _bytes(key: bytes | str) -> bytes:
    return key.encode() if isinstance(key, str) else bytes(key)


# ----------------------------------------------------------------------------------------------
# LMDB
# ----------------------------------------------------------------------------------------------
_FRAME = struct.Struct("<I")
_PAIR = struct.Struct("<II")
_TAKE = struct.Struct("<qqqq")
_Q = struct.Struct("<q")
_SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lmdb_server.py")


def _stop_reader(proc: subprocess.Popen[bytes]) -> None:
    """End a reader process: close its input (it exits at end of input), then wait."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(2.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for f in (proc.stdin, proc.stdout):
        with contextlib.suppress(OSError):
            f.close()


class _Reader:
    """The parent's end of one reader process (lmdb_server.py): framed requests, replies."""

    def __init__(self, path: str, fail: Fail) -> None:
        self._fail = fail
        self._lock = threading.Lock()
        env = dict(os.environ)
        env.pop("PYTHONSTARTUP", None)
        try:
            self.proc = subprocess.Popen([sys.executable, "-u", _SERVER, path],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         env=env, close_fds=True)
        except OSError as e:
            raise fail("cannot start the LMDB reader process", e) from None
        # Ends the process when this object goes away, and at interpreter exit.
        self._finalizer = weakref.finalize(self, _stop_reader, self.proc)
        ok, payload = self._reply()
        if not ok:
            self.close()
            raise fail(payload.decode("utf-8", "replace"), "not an LMDB")

    def _reply(self) -> tuple[bool, bytes]:
        head = self._read(4)
        body = self._read(_FRAME.unpack(head)[0])
        return body[:1] == b"K", body[1:]

    def _read(self, n: int) -> bytes:
        out = self.proc.stdout
        buf = out.read(n) if n else b""
        while len(buf) < n:
            more = out.read(n - len(buf))
            if not more:
                raise self._fail("the LMDB reader process ended unexpectedly",
                                 f"exit status {self.proc.poll()}")
            buf += more
        return buf

    def ask(self, op: bytes, arg: bytes = b"") -> bytes:
        with self._lock:
            if not self._finalizer.alive:
                raise self._fail("the database was closed", "closed")
            try:
                self.proc.stdin.write(_FRAME.pack(1 + len(arg)) + op + arg)
                self.proc.stdin.flush()
            except (OSError, ValueError):
                raise self._fail("the LMDB reader process ended unexpectedly",
                                 f"exit status {self.proc.poll()}") from None
            ok, payload = self._reply()
        if not ok:
            raise self._fail(payload.decode("utf-8", "replace"), "read error")
        return payload

    def close(self) -> None:
        self._finalizer()


def _records(payload: bytes, start: int = 8) -> list[tuple[bytes, bytes]]:
    out, pos, view = [], start, memoryview(payload)
    n = len(payload)
    while pos < n:
        klen, vlen = _PAIR.unpack_from(payload, pos)
        pos += 8
        out.append((bytes(view[pos:pos + klen]), bytes(view[pos + klen:pos + klen + vlen])))
        pos += klen + vlen
    return out


class LMDB(DB):
    """An LMDB. Read (mode READ) in a reader process of its own (``lmdb_server.py``): the
    ``lmdb`` package refuses a second handle on one environment in a process, and a script's
    own handle and decaffe's never meet this way. Each open starts its own reader, so no
    handle outlives close(), a failure, or the files it read (a database rebuilt at the same
    path is read afresh)."""

    backend = "LMDB"
    _INITIAL_MAP = 1 << 26  # grows by doubling when full, as Caffe's LMDBTransaction does

    def __init__(self, path: str, mode: str = READ) -> None:
        super().__init__(path, mode)
        self._lmdb = lmdb
        self.env = None
        self._reader = None
        if mode == READ:
            if not os.path.exists(path):
                raise self._missing("no such file or directory", "ENOENT")
            if os.path.isdir(path) and not os.path.exists(os.path.join(path, "data.mdb")):
                hint = " (it looks like a LevelDB: set backend: LEVELDB)" if _is_leveldb(path) \
                    else ""
                raise self._missing(f"no data.mdb in the folder{hint}", "not an LMDB")
            self._reader = _Reader(path, self._missing)
        else:
            if mode == NEW:
                try:
                    os.mkdir(path, 0o755)
                except FileExistsError:
                    raise DataError(f"cannot create LMDB '{path}': it already exists") from None
                except OSError as e:
                    raise DataError(f"cannot create LMDB '{path}': {e.strerror}") from None
            else:
                os.makedirs(path, exist_ok=True)
            try:
                self.env = lmdb.open(path, map_size=self._INITIAL_MAP, subdir=True,
                                     meminit=False, map_async=True)
            except lmdb.Error as e:
                raise DataError(f"cannot open LMDB '{path}' for writing: {e}") from None

    def __len__(self) -> int:
        if self._reader is not None:
            return _Q.unpack(self._reader.ask(b"L"))[0]
        return int(self.env.stat()["entries"])

    def cursor(self) -> LMDBCursor:
        if self.mode != READ:
            raise DataError(f"LMDB '{self.path}' was opened for writing, not reading")
        if self._reader is None:
            raise DataError(f"LMDB '{self.path}' is closed")
        return LMDBCursor(self._reader)

    def transaction(self) -> LMDBTransaction:
        if self.mode == READ:
            raise DataError(f"LMDB '{self.path}' was opened read-only")
        return LMDBTransaction(self)

    def close(self) -> None:
        reader = getattr(self, "_reader", None)
        if reader is not None:
            self._reader = None
            reader.close()
        env = getattr(self, "env", None)
        if env is not None:
            self.env = None
            env.close()

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        if self._reader is None:
            yield from super().items()
            return
        left = len(self)
        cur = self.cursor()
        while left > 0:
            chunk = cur.take(min(left, 1024))
            left -= len(chunk)
            yield from chunk

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


class LMDBCursor(Cursor):
    """A cursor kept in the reader process; batches of records cross in one reply."""

    def __init__(self, reader: _Reader) -> None:
        self._reader = reader
        self._next_key = None
        self.seek_to_first()

    def seek_to_first(self) -> None:
        self._valid = bool(self._reader.ask(b"F")[0])
        self._item = None
        self._next_key = None

    def seek(self, key: bytes) -> bool:
        """Go to key (or the first record after it, wrapping); True when key itself is there."""
        exact = bool(self._reader.ask(b"S", bytes(key))[0])
        self._item = None
        self._next_key = None
        return exact

    def _current(self) -> tuple[bytes, bytes]:
        if self._item is None:
            self._item = _records(self._reader.ask(b"C"))[0]
        return self._item

    def next(self) -> None:
        # Caffe's cursor stops at the end; the reader wraps, so detect the wrap by the key.
        key = self._current()[0]
        self._reader.ask(b"N", _Q.pack(1))
        self._item = self._next_key = None
        self._valid = self._current()[0] > key

    def advance(self) -> bool:
        key = self._current()[0]
        self._reader.ask(b"N", _Q.pack(1))
        self._item = self._next_key = None
        self._valid = True
        return self._current()[0] <= key

    def skip(self, n: int) -> None:
        """Pass over n records (wrapping around)."""
        self._reader.ask(b"N", _Q.pack(int(n)))
        self._item = self._next_key = None

    @property
    def valid(self) -> bool:
        return self._valid

    @property
    def key(self) -> bytes:
        if self._item is None and self._next_key is not None:
            return self._next_key
        return self._current()[0]

    @property
    def value(self) -> bytes:
        return self._current()[1]

    def take(self, n: int, keep: RecordKeep | None = None) -> list[tuple[bytes, bytes]]:
        size, rank, offset = (1, 0, 0) if keep is None else (keep.size, keep.rank, keep.offset)
        payload = self._reader.ask(b"T", _TAKE.pack(int(n), size, rank, offset))
        if keep is not None:
            keep.offset = _Q.unpack_from(payload)[0]
        klen = _FRAME.unpack_from(payload, 8)[0]
        self._item = None
        self._next_key = payload[12:12 + klen]
        self._valid = True
        return _records(payload, 12 + klen)

    def close(self) -> None:
        self._item = None


class LMDBTransaction(Transaction):
    def __init__(self, db: LMDB) -> None:
        self._db = db
        self._items: list[tuple[bytes, bytes]] = []

    def put(self, key: bytes | str, value: bytes) -> None:
        self._items.append((_bytes(key), bytes(value)))

    def commit(self) -> None:
        lmdb = self._db._lmdb
        env = self._db.env
        while True:
            try:
                with env.begin(write=True) as txn:
                    txn.cursor().putmulti(self._items)
                break
            except lmdb.MapFullError:
                env.set_mapsize(env.info()["map_size"] * 2)
        env.sync(True)
        self._items = []


def _is_leveldb(path: str) -> bool:
    return os.path.exists(os.path.join(path, "CURRENT"))


# ----------------------------------------------------------------------------------------------
# LevelDB
# ----------------------------------------------------------------------------------------------
_shared_lock = threading.Lock()
_shared: dict[str, list] = {}  # real path -> [plyvel.DB, users, snapshot folder or None, files]


def _leveldb_identity(path: str):
    """Which files a LevelDB folder holds: the folder's and its LOCK file's identity (a
    database rebuilt at the same path has others; opening one never changes them)."""
    out = []
    for p in (path, os.path.join(path, "LOCK")):
        try:
            st = os.stat(p)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_dev, st.st_ino, st.st_ctime_ns))
    return tuple(out)


def _plyvel():
    try:
        import plyvel  # plyvel is optional (the leveldb extra)
    except ImportError:
        raise DataError("LevelDB databases need the plyvel package: "
                        "pip install 'decaffe[leveldb]'") from None
    return plyvel


def _snapshot_copy(path: str) -> str:
    """A private copy of a LevelDB folder (table files hard-linked: they never change)."""
    tmp = tempfile.mkdtemp(prefix="decaffe-leveldb-")
    for name in os.listdir(path):
        if name == "LOCK":
            continue
        src, dst = os.path.join(path, name), os.path.join(tmp, name)
        if name.endswith((".ldb", ".sst")):
            try:
                os.link(src, dst)
                continue
            except OSError:
                pass
        shutil.copy2(src, dst)
    return tmp


class LevelDB(DB):
    backend = "LevelDB"

    def __init__(self, path: str, mode: str = READ) -> None:
        super().__init__(path, mode)
        plyvel = _plyvel()
        self._key = None
        if mode == READ:
            if not os.path.isdir(path):
                raise self._missing("no such folder", "ENOENT")
            if not _is_leveldb(path):
                hint = " (it looks like an LMDB: set backend: LMDB)" if os.path.exists(
                    os.path.join(path, "data.mdb")) else ""
                raise self._missing(f"no CURRENT file in the folder{hint}", "not a LevelDB")
            key = os.path.realpath(path)
            with _shared_lock:
                entry = _shared.get(key)
                if entry is not None and entry[3] != _leveldb_identity(path):
                    # Rebuilt at the same path: the old handle (still used by someone) is
                    # theirs; this reader gets a handle on the new files.
                    del _shared[key]
                    entry[3] = None
                    entry = None
                if entry is None:
                    snap = None
                    try:
                        db = plyvel.DB(path, create_if_missing=False, max_open_files=100)
                    except plyvel.IOError as e:
                        if "lock" not in str(e).lower():
                            raise self._missing("cannot be read", e) from None
                        # Held by another process: read a snapshot of its files.
                        snap = _snapshot_copy(path)
                        db = plyvel.DB(snap, create_if_missing=False, max_open_files=100)
                    except plyvel.Error as e:
                        raise self._missing("corrupt or unreadable", e) from None
                    entry = _shared[key] = [db, 0, snap, _leveldb_identity(path)]
                entry[1] += 1
            self._key = key
            self._entry = entry
            self.db = entry[0]
        else:
            try:
                self.db = plyvel.DB(path, create_if_missing=True, error_if_exists=(mode == NEW),
                                    write_buffer_size=268435456, block_size=65536,
                                    max_open_files=100)
            except plyvel.Error as e:
                if mode == NEW and "exists" in str(e):
                    raise DataError(f"cannot create LevelDB '{path}': it already exists") from None
                raise DataError(f"cannot open LevelDB '{path}' for writing: {e}") from None

    def __len__(self) -> int:
        return sum(1 for _ in self.db.iterator(include_value=False))

    def cursor(self) -> LevelDBCursor:
        if self.mode != READ:
            raise DataError(f"LevelDB '{self.path}' was opened for writing, not reading")
        return LevelDBCursor(self.db)

    def transaction(self) -> LevelDBTransaction:
        if self.mode == READ:
            raise DataError(f"LevelDB '{self.path}' was opened read-only")
        return LevelDBTransaction(self.db)

    def close(self) -> None:
        if getattr(self, "db", None) is None:
            return
        if self._key is None:
            self.db.close()
        else:
            with _shared_lock:
                entry = self._entry
                entry[1] -= 1
                if entry[1] <= 0:
                    entry[0].close()
                    if entry[2]:
                        shutil.rmtree(entry[2], ignore_errors=True)
                    if _shared.get(self._key) is entry:
                        del _shared[self._key]
        self.db = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class LevelDBCursor(Cursor):
    def __init__(self, db: plyvel.DB) -> None:
        self._db = db
        self._it = db.iterator()
        self.seek_to_first()

    def seek_to_first(self) -> None:
        self._it.seek_to_start()
        self._fetch()

    def _fetch(self) -> None:
        try:
            self._item = next(self._it)
        except StopIteration:
            self._item = None

    def next(self) -> None:
        self._fetch()

    @property
    def valid(self) -> bool:
        return self._item is not None

    @property
    def key(self) -> bytes:
        return self._item[0]

    @property
    def value(self) -> bytes:
        return self._item[1]

    def close(self) -> None:
        self._it.close()


class LevelDBTransaction(Transaction):
    def __init__(self, db: plyvel.DB) -> None:
        self._db = db
        self._batch = db.write_batch()

    def put(self, key: bytes | str, value: bytes) -> None:
        self._batch.put(_bytes(key), bytes(value))

    def commit(self) -> None:
        self._batch.write()
        self._batch = self._db.write_batch()
