"""Key-value databases of records, as Caffe's db::DB: LMDB (the `lmdb` package) and LevelDB
(`plyvel`).

Modes are Caffe's: READ opens an existing database and never writes to it; NEW creates one
and fails if it exists; WRITE opens or creates one to add records. Readers go through a
:class:`Cursor` in key order (bytewise, as both databases sort keys) and wrap around to the
first record at the end, as Caffe's data layers do. Writers buffer puts in a
:class:`Transaction` and write them on ``commit()``.

LMDB is opened read-only and without LMDB's reader lock, so reading writes nothing at all
(read-only media work) and other readers are never locked out; as with Caffe, a database
should not be written while it is read. Readers in one process share one environment.
LevelDB allows one process to open a database and has no read-only mode (opening it
rewrites its own log and manifest, never its records); within a process readers share one
handle, and a database held by another process is read from a snapshot of its files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator

from ..errors import DataError

READ, WRITE, NEW = "read", "write", "new"
_BACKENDS = {"lmdb": "lmdb", "leveldb": "leveldb", 0: "leveldb", 1: "lmdb"}


def backend_name(backend) -> str:
    """'lmdb' or 'leveldb' from a name (any case) or DataParameter.DB value (0/1)."""
    key = backend.lower() if isinstance(backend, str) else backend
    try:
        return _BACKENDS[key]
    except (KeyError, TypeError):
        raise DataError(f"unknown database backend {backend!r} (use lmdb or leveldb)") from None


def open_db(path: str, backend="lmdb", mode: str = READ) -> DB:
    """Open a database (Caffe's db::GetDB + Open)."""
    name = backend_name(backend)
    path = os.fspath(path)
    if mode not in (READ, WRITE, NEW):
        raise ValueError(f"mode must be READ, WRITE or NEW, not {mode!r}")
    if name == "lmdb":
        return LMDB(path, mode)
    return LevelDB(path, mode)


class DB:
    """A database opened in one mode; close() releases it (also on garbage collection)."""

    backend = ""

    def __init__(self, path: str, mode: str):
        self.path, self.mode = path, mode

    def cursor(self) -> Cursor:
        raise NotImplementedError

    def transaction(self) -> Transaction:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
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

    def _missing(self, what: str, err) -> DataError:
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

    def take(self, n: int, keep=None) -> list[tuple[bytes, bytes]]:
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


def _bytes(key) -> bytes:
    return key.encode() if isinstance(key, str) else bytes(key)


# ----------------------------------------------------------------------------------------------
# LMDB
# ----------------------------------------------------------------------------------------------
# One environment per LMDB in a process (the lmdb package allows no second): readers share it.
_shared_lock = threading.Lock()
_shared_lmdb: dict[str, list] = {}  # real path -> [lmdb.Environment, users]


class LMDB(DB):
    backend = "LMDB"
    _INITIAL_MAP = 1 << 26  # grows by doubling when full, as Caffe's LMDBTransaction does

    def __init__(self, path: str, mode: str = READ):
        super().__init__(path, mode)
        import lmdb

        self._lmdb = lmdb
        self.env = None
        self._key = None
        if mode == READ:
            if not os.path.exists(path):
                raise self._missing("no such file or directory", "ENOENT")
            if os.path.isdir(path) and not os.path.exists(os.path.join(path, "data.mdb")):
                hint = " (it looks like a LevelDB: set backend: LEVELDB)" if _is_leveldb(path) \
                    else ""
                raise self._missing(f"no data.mdb in the folder{hint}", "not an LMDB")
            key = os.path.realpath(path)
            with _shared_lock:
                entry = _shared_lmdb.get(key)
                if entry is None:
                    entry = _shared_lmdb[key] = [self._open_readonly(path), 0]
                entry[1] += 1
            self._key = key
            self.env = entry[0]
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

    def _open_readonly(self, path: str):
        # No reader lock: nothing in the database's folder is ever written (not even
        # lock.mdb's reader table), read-only media work, and no reader is locked out.
        try:
            return self._lmdb.open(path, readonly=True, lock=False, subdir=os.path.isdir(path),
                                   readahead=False)
        except self._lmdb.Error as e:
            raise self._missing("not a readable LMDB", e) from None

    def __len__(self) -> int:
        return int(self.env.stat()["entries"])

    def cursor(self) -> LMDBCursor:
        if self.mode != READ:
            raise DataError(f"LMDB '{self.path}' was opened for writing, not reading")
        return LMDBCursor(self)

    def transaction(self) -> LMDBTransaction:
        if self.mode == READ:
            raise DataError(f"LMDB '{self.path}' was opened read-only")
        return LMDBTransaction(self)

    def close(self) -> None:
        env = getattr(self, "env", None)
        if env is None:
            return
        self.env = None
        if self._key is None:
            env.close()
            return
        with _shared_lock:
            entry = _shared_lmdb.get(self._key)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    entry[0].close()
                    del _shared_lmdb[self._key]

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


class LMDBCursor(Cursor):
    def __init__(self, db: LMDB):
        self._db = db
        self._txn = db.env.begin(write=False, buffers=False)
        self._cur = self._txn.cursor()
        self._valid = self._cur.first()

    def seek_to_first(self) -> None:
        self._valid = self._cur.first()

    def next(self) -> None:
        self._valid = self._cur.next()

    @property
    def valid(self) -> bool:
        return self._valid

    @property
    def key(self) -> bytes:
        return self._cur.key()

    @property
    def value(self) -> bytes:
        return self._cur.value()

    def take(self, n: int, keep=None) -> list[tuple[bytes, bytes]]:
        if keep is not None:
            return super().take(n, keep)
        # The common case in C: the cursor's own iterator, restarted at the end.
        out: list[tuple[bytes, bytes]] = []
        cur = self._cur
        while len(out) < n:
            out.append(cur.item())
            if not cur.next():
                cur.first()
        return out

    def close(self) -> None:
        if self._txn is not None:
            self._cur.close()
            self._txn.abort()
            self._txn = None


class LMDBTransaction(Transaction):
    def __init__(self, db: LMDB):
        self._db = db
        self._items: list[tuple[bytes, bytes]] = []

    def put(self, key, value: bytes) -> None:
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
_shared: dict[str, list] = {}  # real path -> [plyvel.DB, users, snapshot folder or None]


def _plyvel():
    try:
        import plyvel
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

    def __init__(self, path: str, mode: str = READ):
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
                    entry = _shared[key] = [db, 0, snap]
                entry[1] += 1
            self._key = key
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
                entry = _shared.get(self._key)
                if entry is not None:
                    entry[1] -= 1
                    if entry[1] <= 0:
                        entry[0].close()
                        if entry[2]:
                            shutil.rmtree(entry[2], ignore_errors=True)
                        del _shared[self._key]
        self.db = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class LevelDBCursor(Cursor):
    def __init__(self, db):
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
    def __init__(self, db):
        self._db = db
        self._batch = db.write_batch()

    def put(self, key, value: bytes) -> None:
        self._batch.put(_bytes(key), bytes(value))

    def commit(self) -> None:
        self._batch.write()
        self._batch = self._db.write_batch()
