"""LMDB and LevelDB readers and writers (decaffe.data.db) and Datum helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import lmdb
import numpy as np
import pytest
from data_helpers import datum_bytes, images, write_lmdb

from decaffe.data import datum as dm
from decaffe.data.db import NEW, READ, WRITE, backend_name, open_db
from decaffe.errors import DataError
from decaffe.proto import caffe_pb2

BACKENDS = ["lmdb", "leveldb"]


def _fill(path, backend, items, mode=NEW):
    with open_db(path, backend, mode) as db:
        txn = db.transaction()
        for k, v in items:
            txn.put(k, v)
        txn.commit()


@pytest.mark.parametrize("backend", BACKENDS)
def test_write_then_read_in_key_order_wrapping(tmp_path, backend):
    path = str(tmp_path / "db")
    items = [(f"{i:03d}".encode(), bytes([i]) * 3) for i in (5, 1, 9, 3)]  # put unsorted
    _fill(path, backend, items)
    with open_db(path, backend, READ) as db:
        assert len(db) == 4
        assert list(db.items()) == sorted(items)
        cur = db.cursor()
        got = cur.take(10)  # wraps around twice and a half
        assert got == (sorted(items) * 3)[:10]
        assert cur.key == sorted(items)[10 % 4][0]
        cur.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_new_refuses_an_existing_database(tmp_path, backend):
    path = str(tmp_path / "db")
    _fill(path, backend, [(b"a", b"1")])
    with pytest.raises(DataError, match="already exists"):
        open_db(path, backend, NEW)
    _fill(path, backend, [(b"b", b"2")], mode=WRITE)  # WRITE adds to it
    with open_db(path, backend) as db:
        assert [k for k, _ in db.items()] == [b"a", b"b"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_database_is_a_data_error_and_nothing_is_created(tmp_path, backend):
    path = tmp_path / "nope"
    with pytest.raises(DataError, match="nope"):
        open_db(str(path), backend, READ)
    assert not path.exists()


def test_wrong_backend_gives_a_hint(tmp_path):
    path = str(tmp_path / "db")
    _fill(path, "lmdb", [(b"a", b"1")])
    with pytest.raises(DataError, match="LMDB"):
        open_db(path, "leveldb", READ)
    path2 = str(tmp_path / "db2")
    _fill(path2, "leveldb", [(b"a", b"1")])
    with pytest.raises(DataError, match="LevelDB"):
        open_db(path2, "lmdb", READ)


def test_backend_names():
    assert backend_name("LMDB") == "lmdb" and backend_name(1) == "lmdb"
    assert backend_name("leveldb") == "leveldb" and backend_name(0) == "leveldb"
    with pytest.raises(DataError, match="unknown database backend"):
        backend_name("rocksdb")


def test_read_only_open_never_writes(tmp_path):
    path = write_lmdb(str(tmp_path / "db"), [(b"k", b"v")])
    import inspect

    from decaffe.data import lmdb_server

    src = inspect.getsource(lmdb_server.serve)
    assert "readonly=True" in src and "lock=False" in src
    files = {n: open(os.path.join(path, n), "rb").read() for n in os.listdir(path)}
    with open_db(path, "lmdb", READ) as db:
        assert list(db.items()) == [(b"k", b"v")]
        with pytest.raises(DataError, match="read-only"):
            db.transaction()
    # nothing in the folder changed, lock.mdb included
    assert {n: open(os.path.join(path, n), "rb").read() for n in os.listdir(path)} == files


def test_lmdb_readers_are_independent_and_coexist_with_a_client_handle(tmp_path):
    path = write_lmdb(str(tmp_path / "db"), [(b"a", b"1"), (b"b", b"2")])
    client = lmdb.open(path, readonly=True)  # the script's own handle, held throughout
    a, b = open_db(path), open_db(path)
    ca, cb = a.cursor(), b.cursor()
    ca.next()
    assert (ca.key, cb.key) == (b"b", b"a")  # independent positions
    ca.close(), cb.close()
    a.close()
    assert list(b.items()) == [(b"a", b"1"), (b"b", b"2")]
    b.close()
    assert client.stat()["entries"] == 2
    client.close()


def test_lmdb_reader_process_ends_on_close_and_collection(tmp_path):
    path = write_lmdb(str(tmp_path / "db"), [(b"a", b"1")])
    db = open_db(path)
    proc = db._reader.proc
    db.close()
    assert proc.poll() is not None
    db = open_db(path)
    proc = db._reader.proc
    del db
    import gc

    gc.collect()
    assert proc.wait(5) is not None
    with pytest.raises(DataError, match="NUL"):
        open_db(str(tmp_path / "d\0b"))


def test_lmdb_cursor_wraps_skips_and_seeks(tmp_path):
    items = [(b"%02d" % i, b"v%d" % i) for i in range(5)]
    path = write_lmdb(str(tmp_path / "db"), items)
    with open_db(path) as db:
        cur = db.cursor()
        assert cur.take(7) == items + items[:2]
        assert cur.key == b"02"
        cur.skip(4)
        assert cur.key == b"01"
        assert cur.seek(b"03") and cur.value == b"v3"
        assert not cur.seek(b"031") and cur.key == b"04"
        assert not cur.seek(b"99") and cur.key == b"00"  # past the end: wraps
        assert cur.advance() is False and cur.key == b"01"
        cur.skip(3)
        assert cur.advance() is True and cur.key == b"00"


def test_leveldb_rebuilt_at_the_same_path_is_read_afresh(tmp_path):
    pytest.importorskip("plyvel")
    import shutil

    path = str(tmp_path / "ldb")
    _fill(path, "leveldb", [(b"a", b"old")])
    old = open_db(path, "leveldb")
    assert list(old.items()) == [(b"a", b"old")]
    shutil.rmtree(path)
    # rebuilt by another process (LevelDB refuses a writer here while `old` is open)
    subprocess.run([sys.executable, "-c", f"import plyvel; d = plyvel.DB({path!r}, "
                    "create_if_missing=True); d.put(b'a', b'new'); d.close()"], check=True)
    with open_db(path, "leveldb") as new:
        assert list(new.items()) == [(b"a", b"new")]
    old.close()


def test_lmdb_map_grows_when_full(tmp_path, monkeypatch):
    from decaffe.data import db as dbmod

    monkeypatch.setattr(dbmod.LMDB, "_INITIAL_MAP", 1 << 16)
    path = str(tmp_path / "db")
    items = [(f"{i:05d}".encode(), os.urandom(4000)) for i in range(100)]  # ~400 KB
    _fill(path, "lmdb", items)
    with open_db(path) as db:
        assert list(db.items()) == items


def test_leveldb_readers_share_and_survive_another_process(tmp_path):
    path = str(tmp_path / "ldb")
    _fill(path, "leveldb", [(b"a", b"1"), (b"b", b"2")])
    a, b = open_db(path, "leveldb"), open_db(path, "leveldb")
    assert a.db is b.db
    a.close(), b.close()
    # another process holds LevelDB's exclusive lock: we read a snapshot instead
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import plyvel, sys, time
        db = plyvel.DB({path!r})
        print("held", flush=True)
        sys.stdin.readline()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with open_db(path, "leveldb") as db:
            assert list(db.items()) == [(b"a", b"1"), (b"b", b"2")]
    finally:
        holder.stdin.close()
        holder.wait(30)


def test_datum_helpers_raw_float_encoded():
    x = images(1)[0]
    d = dm.parse_datum(datum_bytes(x, 3))
    np.testing.assert_array_equal(dm.datum_array(d), x)
    f = np.linspace(-1, 1, 2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(dm.datum_array(dm.parse_datum(datum_bytes(f, 0))), f)
    e = dm.parse_datum(datum_bytes(x, 0, ".png"))
    np.testing.assert_array_equal(dm.datum_array(e), x)  # PNG is lossless, BGR kept
    gray = dm.datum_array(e, color=False)
    assert gray.shape == (1,) + x.shape[1:]


def test_datum_errors_name_the_record():
    with pytest.raises(DataError, match="record 'k7' of 'src'"):
        dm.parse_datum(b"\xff\xff\xff", b"k7", "src")
    bad = caffe_pb2.Datum(channels=1, height=2, width=2, data=b"abc")
    with pytest.raises(DataError, match="record 'k1'.*3 data bytes"):
        dm.datum_array(bad, b"k1")
    enc = caffe_pb2.Datum(encoded=True, data=b"not an image")
    with pytest.raises(DataError, match="record 'k2'.*could not decode"):
        dm.datum_array(enc, b"k2")


def test_read_image_to_datum_keeps_file_bytes_when_unchanged(tmp_path):
    import cv2

    img = images(1, h=5, w=9)[0].transpose(1, 2, 0).copy()
    path = str(tmp_path / "a.png")
    cv2.imwrite(path, img)
    d = dm.read_image_to_datum(path, 4, encoding="png")
    assert d.encoded and d.data == open(path, "rb").read() and d.label == 4
    assert not d.HasField("channels")  # as Caffe's convert_imageset writes encoded datums
    d2 = dm.read_image_to_datum(path, 4, 3, 4, encoding="png")  # resized: re-encoded
    assert cv2.imdecode(np.frombuffer(d2.data, np.uint8), -1).shape == (3, 4, 3)
    raw = dm.read_image_to_datum(path, 1)
    assert (raw.channels, raw.height, raw.width) == (3, 5, 9) and raw.HasField("encoded")
    np.testing.assert_array_equal(dm.datum_array(raw), img.transpose(2, 0, 1))
    assert dm.read_image_to_datum(str(tmp_path / "missing.png"), 0) is None
