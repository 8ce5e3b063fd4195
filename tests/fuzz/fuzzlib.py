"""decaffe's own fuzzing: a seeded mutator for every file decaffe reads, and a runner that
feeds the mutants to decaffe in isolated worker processes (a memory cap through
RLIMIT_AS, a time limit per case) and classifies how each case ended.

A case must end ``loaded`` or with a decaffe error (``DecaffeError``) that names its source
(the file, or for nets and solvers the layer or field). Anything else is a fault:
``other`` (an exception that is not decaffe's), ``crash`` (the worker died), ``hang`` (no
answer within the time limit), ``overcap`` (an allocation the memory cap refused:
decaffe must refuse impossible sizes itself, before allocating).

Mutations (all drawn from ``random.Random(f"{seed}:{format}:{index}")``, so a case repeats
exactly): byte flips, truncation, insertion of random or special bytes, duplication of a
slice, and field mutations that keep the file's structure (protobuf wire fields set to
extreme values, dropped, duplicated or retyped; prototxt numbers and strings replaced,
lines dropped or duplicated; HDF5 datasets retyped, reshaped, emptied, grown without data,
replaced by groups).

Used by tests/fuzz/test_fuzz.py (a small count in CI) and tools/fuzz.py (thousands, a
table per format). Run as a worker: ``python fuzzlib.py --worker SEED_DIR``.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MEMORY_CAP = 3 << 30  # bytes of address space per worker
OUTCOMES = ("loaded", "named", "unnamed", "other", "crash", "hang", "overcap")
FAULTS = ("unnamed", "other", "crash", "hang", "overcap")

# ---------------------------------------------------------------------------------------------
# seed files (valid inputs the mutants start from)
# ---------------------------------------------------------------------------------------------
NET = """name: "fuzz"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 stride: 1 pad: 1
    weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "norm" type: "LRN" bottom: "pool" top: "norm" lrn_param { local_size: 3 } }
layer { name: "ip" type: "InnerProduct" bottom: "norm" top: "ip"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "mvn" type: "MVN" bottom: "ip" top: "mvn" }
layer { name: "prob" type: "Softmax" bottom: "mvn" top: "prob" }
"""

TRAIN_NET = """name: "fuzz_train"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } shape { dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""

SOLVER = """net: "{net}"
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
lr_policy: "step"
gamma: 0.1
stepsize: 100
max_iter: 10
display: 0
snapshot: 0
snapshot_prefix: "{prefix}"
random_seed: 1
type: "SGD"
"""


def _datum(rng: random.Random, encoded: bool = False) -> bytes:
    import cv2
    import numpy as np

    from decaffe.proto import caffe_pb2

    arr = np.asarray([rng.randrange(256) for _ in range(3 * 6 * 6)], np.uint8).reshape(3, 6, 6)
    d = caffe_pb2.Datum(channels=3, height=6, width=6, label=rng.randrange(10))
    if encoded:
        d.data = cv2.imencode(".png", arr.transpose(1, 2, 0))[1].tobytes()
        d.encoded = True
    else:
        d.data = arr.tobytes()
    return d.SerializeToString()


LABEL_MAP = """item { name: "none_of_the_above" label: 0 display_name: "background" }
item { name: "cat" label: 1 display_name: "Cat" }
item { name: "dog" label: 2 display_name: "Dog" }
"""


def _annotated(rng: random.Random) -> bytes:
    """An SSD AnnotatedDatum: a PNG-encoded 3x12x12 image (distort_param needs encoded ones)
    and two groups of normalised boxes."""
    import cv2
    import numpy as np

    from decaffe.proto import caffe_pb2

    arr = np.asarray([rng.randrange(256) for _ in range(3 * 12 * 12)],
                     np.uint8).reshape(3, 12, 12)
    ad = caffe_pb2.AnnotatedDatum(type=caffe_pb2.AnnotatedDatum.BBOX)
    d = ad.datum
    d.channels, d.height, d.width, d.label = 3, 12, 12, -1
    d.data = cv2.imencode(".png", arr.transpose(1, 2, 0))[1].tobytes()
    d.encoded = True
    for label in (1, 2):
        g = ad.annotation_group.add(group_label=label)
        for inst in range(rng.randint(1, 2)):
            x0, y0 = rng.random() * 0.5, rng.random() * 0.5
            b = g.annotation.add(instance_id=inst).bbox
            b.xmin, b.ymin, b.xmax, b.ymax = x0, y0, x0 + 0.4, y0 + 0.4
            b.difficult = rng.random() < 0.3
    return ad.SerializeToString()


def _lane_record(rng: random.Random) -> bytes:
    """A MobileNet-YOLO lane record: a PNG-encoded 12x16 image and three lanes of points,
    one annotation group per lane (Annotation.lanes: normalised x, y)."""
    import cv2
    import numpy as np

    from decaffe.proto import caffe_pb2

    arr = np.asarray([rng.randrange(256) for _ in range(12 * 16 * 3)],
                     np.uint8).reshape(12, 16, 3)
    ad = caffe_pb2.AnnotatedDatum(type=caffe_pb2.AnnotatedDatum.LANE)
    ad.datum.channels, ad.datum.height, ad.datum.width, ad.datum.label = 3, 12, 16, -1
    ad.datum.data, ad.datum.encoded = cv2.imencode(".png", arr)[1].tobytes(), True
    for lane in range(3):
        g = ad.annotation_group.add(group_label=1)
        x0, x1 = rng.random(), rng.random()
        for k in range(5):
            a = g.annotation.add(instance_id=k)
            a.lanes.x, a.lanes.y, a.lanes.id = x0 + (x1 - x0) * k / 4, 0.9 - 0.15 * k, lane
    return ad.SerializeToString()


def _voc_xml(rng: random.Random) -> str:
    objs = "".join(
        f"<object><name>{rng.choice(['cat', 'dog'])}</name><difficult>{rng.randint(0, 1)}"
        f"</difficult><bndbox><xmin>{x}</xmin><ymin>{y}</ymin><xmax>{x + 5}</xmax>"
        f"<ymax>{y + 4}</ymax></bndbox></object>"
        for x, y in [(rng.randrange(8), rng.randrange(6)) for _ in range(2)])
    return (f"<annotation><filename>x</filename><size><width>16</width><height>12</height>"
            f"<depth>3</depth></size>{objs}</annotation>")


def make_seeds(folder: str) -> dict:
    """Write the valid seed files into folder; returns {name: path or value}."""
    import cv2
    import h5py
    import numpy as np

    import decaffe
    from decaffe.formats.binaryproto import write_blobproto
    from decaffe.solvers import snapshot as snap

    os.makedirs(folder, exist_ok=True)
    seeds: dict = {}
    rng = random.Random(0)
    p = lambda name: os.path.join(folder, name)  # noqa: E731
    with open(p("net.prototxt"), "w") as f:
        f.write(NET)
    with open(p("train.prototxt"), "w") as f:
        f.write(TRAIN_NET)
    with open(p("solver.prototxt"), "w") as f:
        f.write(SOLVER.format(net=p("train.prototxt"), prefix=p("snap")))
    decaffe.set_random_seed(1)
    net = decaffe.Net(p("net.prototxt"), decaffe.TEST)
    net.save(p("w.caffemodel"))
    net.save_hdf5(p("w.caffemodel.h5"))
    write_blobproto(np.random.default_rng(0).random((1, 3, 8, 8), np.float32) * 255,
                    p("mean.binaryproto"))
    solver = decaffe.get_solver(p("solver.prototxt"))
    solver.step(2)
    solver.param.snapshot_prefix = p("snap")
    solver.snapshot()
    solver.param.snapshot_format = decaffe.caffe_pb2.SolverParameter.HDF5
    solver.snapshot()
    seeds["solverstate"] = p("snap_iter_2.solverstate")
    seeds["solverstate_h5"] = p("snap_iter_2.solverstate.h5")
    assert snap.read_state(seeds["solverstate"]).learned_net
    seeds["datums"] = [_datum(rng, encoded=(i % 3 == 2)) for i in range(6)]
    seeds["annotated"] = [_annotated(rng) for i in range(4)]
    seeds["lanes"] = [_lane_record(rng) for i in range(4)]
    with open(p("labelmap.prototxt"), "w") as f:
        f.write(LABEL_MAP)
    for i in range(2):
        with open(p(f"anno{i}.xml"), "w") as f:
            f.write(_voc_xml(rng))
    imgs = []
    for i in range(3):
        arr = np.asarray([rng.randrange(256) for _ in range(8 * 8 * 3)], np.uint8).reshape(8, 8, 3)
        name = p(f"img{i}.{'png' if i != 1 else 'jpg'}")
        cv2.imwrite(name, arr)
        imgs.append(name)
    seeds["images"] = imgs
    with open(p("list.txt"), "w") as f:
        f.write("".join(f"{os.path.basename(n)} {i}\n" for i, n in enumerate(imgs)))
    with h5py.File(p("data.h5"), "w") as f:
        f["data"] = np.random.default_rng(1).random((5, 3, 4, 4), np.float32)
        f["label"] = np.arange(5, dtype=np.float32)
    for name in ("net.prototxt", "solver.prototxt", "w.caffemodel", "w.caffemodel.h5",
                 "mean.binaryproto", "list.txt", "data.h5", "train.prototxt",
                 "labelmap.prototxt", "anno0.xml", "anno1.xml"):
        seeds[name] = p(name)
    seeds["folder"] = folder
    return seeds


# ---------------------------------------------------------------------------------------------
# mutations
# ---------------------------------------------------------------------------------------------
SPECIAL_BYTES = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff\xff\xff\x0f",
                 b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\n", b"{", b"}", b'"', b"\\"]
EXTREME_INTS = [0, 1, -1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, -2**31, -2**63,
                65536, 1 << 40, 99999999]
EXTREME_TEXT = ["0", "-1", "2147483647", "2147483648", "4294967296", "9223372036854775807",
                "-9223372036854775808", "1e308", "-1e308", "nan", "inf", "-inf", "1e-320",
                "0.0", "1", "1000000", "65536", "3.5", '""', '"\\0"', '"/nonexistent"', "true",
                "{", "}", ":", "#", '"\\xff"']


def byte_mutation(data: bytes, r: random.Random) -> bytes:
    """One of: flip bits, truncate, insert bytes, duplicate a slice, overwrite with special
    bytes; applied 1-4 times."""
    b = bytearray(data)
    for _ in range(r.randint(1, 4)):
        op = r.choice(["flip", "truncate", "insert", "duplicate", "special"])
        n = len(b)
        if op == "flip" and n:
            for _ in range(r.randint(1, 8)):
                b[r.randrange(n)] ^= 1 << r.randrange(8)
        elif op == "truncate" and n:
            del b[r.randrange(n):]
        elif op == "insert":
            at = r.randint(0, n)
            b[at:at] = bytes(r.randrange(256) for _ in range(r.randint(1, 16)))
        elif op == "duplicate" and n:
            a = r.randrange(n)
            e = min(n, a + r.randint(1, 64))
            at = r.randint(0, n)
            b[at:at] = b[a:e]
        elif op == "special":
            at = r.randint(0, n)
            s = r.choice(SPECIAL_BYTES)
            b[at:at + len(s)] = s
    return bytes(b)


def _enc_varint(n: int) -> bytes:
    """n as a protobuf varint (negative numbers as their 64-bit two's complement)."""
    # lazily, as this module's other decaffe imports: its worker starts without decaffe
    from decaffe.formats.wire import encode_varint

    return encode_varint(n)


def _wire_fields(buf: bytes, start: int = 0, end: int | None = None, depth: int = 0):
    """(start, end, number, wire, value span) of each field, nested messages too (best
    effort: stops where the bytes stop parsing)."""
    end = len(buf) if end is None else end
    pos, out = start, []

    def varint(p):
        shift = v = 0
        while p < end and shift < 70:
            c = buf[p]
            p += 1
            v |= (c & 0x7F) << shift
            if c < 0x80:
                return v, p
            shift += 7
        raise ValueError

    try:
        while pos < end:
            f0 = pos
            tag, pos = varint(pos)
            wire, number = tag & 7, tag >> 3
            if wire == 0:
                v0 = pos
                _, pos = varint(pos)
            elif wire == 1:
                v0, pos = pos, pos + 8
            elif wire == 5:
                v0, pos = pos, pos + 4
            elif wire == 2:
                length, v0 = varint(pos)
                pos = v0 + length
            else:
                break
            if pos > end:
                break
            out.append((f0, pos, number, wire, v0))
            if wire == 2 and depth < 3 and pos - v0 > 1:
                out.extend(_wire_fields(buf, v0, pos, depth + 1))
    except (ValueError, IndexError):
        pass
    return out


def protobuf_mutation(data: bytes, r: random.Random) -> bytes:
    """A field-level change to a binary protobuf: a varint set to an extreme value, a field
    dropped, duplicated or given another wire type, a length changed, a float made special."""
    fields = _wire_fields(data)
    if not fields:
        return byte_mutation(data, r)
    f0, f1, number, wire, v0 = r.choice(fields)
    op = r.choice(["extreme", "drop", "duplicate", "retype", "length", "float"])
    if op == "extreme" and wire == 0:
        return data[:v0] + _enc_varint(r.choice(EXTREME_INTS)) + data[f1:]
    if op == "drop":
        return data[:f0] + data[f1:]
    if op == "duplicate":
        return data[:f1] + data[f0:f1] + data[f1:]
    if op == "retype":
        tag = _enc_varint((number << 3) | r.choice([0, 1, 2, 3, 4, 5, 6, 7]))
        return data[:f0] + tag + data[v0 if wire != 2 else v0:]
    if op == "length" and wire == 2:
        tag = _enc_varint((number << 3) | 2)
        payload = data[v0:f1]
        return (data[:f0] + tag + _enc_varint(r.choice([0, len(payload) + 1,
                                                        max(0, len(payload) - 1), 2**31 - 1,
                                                        2**32 + 5]))
                + payload + data[f1:])
    if op == "float" and wire in (1, 5, 2) and f1 - v0 >= 4:
        at = r.randrange(v0, f1 - 3)
        val = struct.pack("<f", r.choice([float("nan"), float("inf"), -float("inf"), 3e38,
                                          -0.0, 1e-45]))
        return data[:at] + val + data[at + 4:]
    return byte_mutation(data, r)


def text_mutation(data: bytes, r: random.Random) -> bytes:
    """A prototxt- or list-level change: a number or string replaced by an extreme one, a
    line dropped, duplicated or swapped, a token inserted."""
    import re

    text = data.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    op = r.choice(["value", "value", "drop", "duplicate", "swap", "insert"])
    if op == "value":
        tokens = list(re.finditer(r'-?\d+(?:\.\d+)?(?:e-?\d+)?|"[^"\n]*"|\b[A-Z_]{2,}\b', text))
        if tokens:
            m = r.choice(tokens)
            return (text[:m.start()] + r.choice(EXTREME_TEXT) + text[m.end():]).encode(
                "utf-8", "surrogateescape")
    if op == "drop" and lines:
        del lines[r.randrange(len(lines))]
    elif op == "duplicate" and lines:
        i = r.randrange(len(lines))
        lines.insert(i, lines[i])
    elif op == "swap" and len(lines) > 1:
        i, j = r.randrange(len(lines)), r.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif op == "insert":
        i = r.randrange(len(lines) + 1)
        lines.insert(i, r.choice(EXTREME_TEXT + ["layer {", "}", "dim: 0", "top: \"x\"",
                                                 "bottom: \"nowhere\"", "name: \"conv\""]))
    return "\n".join(lines).encode("utf-8", "surrogateescape")


def mutate(data: bytes, r: random.Random, kind: str) -> bytes:
    """kind: 'text', 'protobuf' or 'bytes' (what field mutations understand)."""
    choice = r.random()
    if kind == "text" and choice < 0.6:
        out = text_mutation(data, r)
        return byte_mutation(out, r) if r.random() < 0.2 else out
    if kind == "protobuf" and choice < 0.6:
        out = protobuf_mutation(data, r)
        return protobuf_mutation(out, r) if r.random() < 0.3 else out
    return byte_mutation(data, r)


def hdf5_mutation(src: str, dst: str, r: random.Random) -> None:
    """A structural change to an HDF5 file, made with h5py (or a byte mutation): a dataset
    retyped, reshaped, emptied, grown huge without data, replaced by a group or removed, an
    attribute or extra dataset added, a scalar given a wrong type."""

    if r.random() < 0.35:
        with open(src, "rb") as f:
            data = f.read()
        with open(dst, "wb") as f:
            f.write(byte_mutation(data, r))
        return
    shutil.copyfile(src, dst)
    try:
        _hdf5_structural(dst, r)
    except Exception:  # noqa: BLE001 - an op that does not apply here: mutate the bytes
        with open(src, "rb") as f:
            data = f.read()
        with open(dst, "wb") as f:
            f.write(byte_mutation(data, r))


def _hdf5_structural(dst: str, r: random.Random) -> None:
    import h5py
    import numpy as np

    with h5py.File(dst, "a") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        if not names:
            return
        name = r.choice(names)
        ds = f[name]
        try:
            old = ds[()]
        except Exception:  # noqa: BLE001 - a seed that h5py cannot read: leave it
            return
        op = r.choice(["retype", "reshape", "empty", "huge", "group", "remove", "scalar",
                       "string", "values", "compound", "rows"])
        del f[name]
        if op == "retype":
            dt = r.choice(["i1", "u8", "f8", "f2", "?", "c8"])
            f[name] = np.asarray(old).astype(dt)
        elif op == "reshape":
            arr = np.asarray(old).reshape(-1)
            shape = r.choice([(arr.size,), (1, arr.size), (arr.size, 1, 1, 1, 1, 1)])
            f[name] = arr.reshape(shape)
        elif op == "empty":
            f.create_dataset(name, shape=r.choice([(0,), (0, 3, 4, 4), ()]), dtype="f4")
        elif op == "huge":
            shape = r.choice([(2**31, 4), (2**20, 2**20), (10**6, 3, 64, 64), (2**40,)])
            f.create_dataset(name, shape=shape, dtype="f4", chunks=True,
                             maxshape=(None,) * len(shape))
        elif op == "group":
            f.create_group(name)
        elif op == "remove":
            pass
        elif op == "scalar":
            f[name] = np.float32(r.choice([-1, 0, 3.5, 1e30]))
        elif op == "string":
            f[name] = np.bytes_(r.choice([b"abc", b"\xff\xfe", b""]))
        elif op == "values":
            arr = np.array(old, copy=True)
            if arr.dtype.kind in "fiu" and arr.size:
                arr.reshape(-1)[r.randrange(arr.size)] = r.choice([-1, 2**31 - 1, 0]) \
                    if arr.dtype.kind in "iu" else r.choice([np.nan, np.inf, -1e38])
            f[name] = arr
        elif op == "compound":
            f[name] = np.zeros(3, dtype=[("a", "f4"), ("b", "i4")])
        elif op == "rows":
            arr = np.asarray(old)
            if arr.ndim:
                f[name] = arr[: max(0, arr.shape[0] - 1)]
            else:
                f[name] = arr


# ---------------------------------------------------------------------------------------------
# formats: how to make a case, and how the worker loads it
# ---------------------------------------------------------------------------------------------
@dataclass
class Case:
    fmt: str
    index: int
    folder: str
    path: str  # what the worker loads; named in the error it must raise
    extra: dict = field(default_factory=dict)


def _write_bytes(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _case_net(seeds, r, folder):
    path = os.path.join(folder, "net.prototxt")
    _write_bytes(path, mutate(_read(seeds["net.prototxt"]), r, "text"))
    return path, {}


def _case_solver(seeds, r, folder):
    path = os.path.join(folder, "solver.prototxt")
    text = _read(seeds["solver.prototxt"]).replace(
        seeds["folder"].encode() + b"/snap", folder.encode() + b"/snap")
    _write_bytes(path, mutate(text, r, "text"))
    return path, {}


def _case_copy(name, kind):
    def make(seeds, r, folder):
        path = os.path.join(folder, os.path.basename(seeds[name]))
        _write_bytes(path, mutate(_read(seeds[name]), r, kind))
        return path, {}
    return make


def _case_h5(name):
    def make(seeds, r, folder):
        path = os.path.join(folder, os.path.basename(seeds[name]))
        hdf5_mutation(seeds[name], path, r)
        return path, {}
    return make


def _mutated_records(seeds, r):
    recs = list(seeds["datums"])
    for _ in range(r.randint(1, 3)):
        i = r.randrange(len(recs))
        recs[i] = mutate(recs[i], r, "protobuf")
    if r.random() < 0.1:
        recs = recs[: r.randrange(len(recs) + 1)]
    return [(b"%08d" % i, v) for i, v in enumerate(recs)]


def _case_lmdb(seeds, r, folder):
    import lmdb

    path = os.path.join(folder, "db")
    env = lmdb.open(path, map_size=1 << 24)
    with env.begin(write=True) as txn:
        for k, v in _mutated_records(seeds, r):
            txn.put(k, v)
    env.close()
    if r.random() < 0.15:  # the database file itself, read by decaffe's reader process
        data_file = os.path.join(path, "data.mdb")
        _write_bytes(data_file, byte_mutation(_read(data_file), r))
    return path, {"backend": "LMDB"}


def _records_lmdb(name: str, recs: list, r: random.Random, folder: str) -> str:
    """An LMDB of the records with one of them mutated."""
    import lmdb

    recs = list(recs)
    i = r.randrange(len(recs))
    recs[i] = mutate(recs[i], r, "protobuf")
    path = os.path.join(folder, name)
    env = lmdb.open(path, map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, v in enumerate(recs):
            txn.put(b"%08d" % i, v)
    env.close()
    return path


def _case_lmdb_annotated(seeds, r, folder):
    return _records_lmdb("adb", seeds["annotated"], r, folder), {}


def _case_lmdb_lane(seeds, r, folder):
    return _records_lmdb("lanedb", seeds["lanes"], r, folder), {}


def _case_label_map(seeds, r, folder):
    path = os.path.join(folder, "labelmap.prototxt")
    _write_bytes(path, mutate(_read(seeds["labelmap.prototxt"]), r, "text"))
    return path, {}


def _case_voc_xml(seeds, r, folder):
    for i in range(2):
        shutil.copy(seeds[f"anno{i}.xml"], folder)
        shutil.copy(seeds["images"][i], os.path.join(folder, f"img{i}.png"))
    victim = os.path.join(folder, f"anno{r.randrange(2)}.xml")
    _write_bytes(victim, mutate(_read(victim), r, "text"))
    lst = os.path.join(folder, "list.txt")
    _write_bytes(lst, b"img0.png anno0.xml\nimg1.png anno1.xml\n")
    return victim, {"list": lst, "label_map": seeds["labelmap.prototxt"]}


def _case_leveldb(seeds, r, folder):
    import plyvel

    path = os.path.join(folder, "ldb")
    db = plyvel.DB(path, create_if_missing=True)
    for k, v in _mutated_records(seeds, r):
        db.put(k, v)
    db.close()
    return path, {"backend": "LEVELDB"}


def _case_hdf5_data(seeds, r, folder):
    h5 = os.path.join(folder, "data.h5")
    hdf5_mutation(seeds["data.h5"], h5, r)
    lst = os.path.join(folder, "h5list.txt")
    _write_bytes(lst, (h5 + "\n").encode())
    return h5, {"list": lst}


def _case_image_list(seeds, r, folder):
    for img in seeds["images"]:
        shutil.copy(img, folder)
    path = os.path.join(folder, "list.txt")
    _write_bytes(path, mutate(_read(seeds["list.txt"]), r, "text"))
    return path, {}


def _case_image(seeds, r, folder):
    for img in seeds["images"]:
        shutil.copy(img, folder)
    victim = os.path.join(folder, os.path.basename(r.choice(seeds["images"])))
    _write_bytes(victim, byte_mutation(_read(victim), r))
    shutil.copy(seeds["list.txt"], folder)
    return victim, {"list": os.path.join(folder, "list.txt")}


MAKERS = {
    "net_prototxt": _case_net,
    "solver_prototxt": _case_solver,
    "caffemodel": _case_copy("w.caffemodel", "protobuf"),
    "caffemodel_h5": _case_h5("w.caffemodel.h5"),
    "binaryproto": _case_copy("mean.binaryproto", "protobuf"),
    "solverstate": _case_copy("solverstate", "protobuf"),
    "solverstate_h5": _case_h5("solverstate_h5"),
    "lmdb_datum": _case_lmdb,
    "leveldb_datum": _case_leveldb,
    "hdf5_data": _case_hdf5_data,
    "image_list": _case_image_list,
    "image": _case_image,
    # the forks' formats: SSD's AnnotatedDatum records, LabelMap and VOC XML (convert_annoset),
    # MobileNet-YOLO's lane records
    "lmdb_annotated": _case_lmdb_annotated,
    "lmdb_lane": _case_lmdb_lane,
    "label_map": _case_label_map,
    "voc_xml": _case_voc_xml,
}
FORMATS = list(MAKERS)


def available_formats() -> list[str]:
    out = []
    for fmt in FORMATS:
        if fmt == "leveldb_datum":
            try:
                import plyvel  # noqa: F401
            except ImportError:
                continue
        out.append(fmt)
    return out


def make_case(seeds: dict, fmt: str, seed: int, index: int, root: str) -> Case:
    r = random.Random(f"{seed}:{fmt}:{index}")
    folder = os.path.join(root, f"{fmt}-{index}")
    os.makedirs(folder, exist_ok=True)
    if fmt.startswith("selftest_"):
        return Case(fmt, index, folder, os.path.join(folder, "x"), {})
    path, extra = MAKERS[fmt](seeds, r, folder)
    return Case(fmt, index, folder, path, extra)


# ---------------------------------------------------------------------------------------------
# the worker: loads cases, reports outcomes (runs under the memory cap)
# ---------------------------------------------------------------------------------------------
def _data_net(layer: str) -> str:
    return (f'layer {{ name: "d" {layer} top: "data" top: "label" }} '
            'layer { name: "s" type: "Silence" bottom: "data" bottom: "label" }')


def _run_train_net(text: str, nets: list, passes: int = 4) -> None:
    """Build a TRAIN net (kept in nets, to be closed) and run passes forwards."""
    import decaffe

    net = decaffe.Net(text, decaffe.TRAIN)
    nets.append(net)
    for _ in range(passes):
        net.forward()


def _load(case: dict, seeds: dict, cache: dict) -> None:
    import decaffe

    fmt, path, extra = case["fmt"], case["path"], case["extra"]
    nets = []
    try:
        if fmt == "net_prototxt":
            net = decaffe.Net(path, decaffe.TEST)
            nets.append(net)
            net.forward()
        elif fmt == "solver_prototxt":
            s = decaffe.get_solver(path)
            nets += [s.net, *s.test_nets]
            s.step(1)
        elif fmt in ("caffemodel", "caffemodel_h5"):
            net = decaffe.Net(seeds["net.prototxt"], path, decaffe.TEST)
            nets.append(net)
            net.forward()
        elif fmt == "binaryproto":
            from decaffe.data.transformer import load_mean_file

            load_mean_file(path)
        elif fmt in ("solverstate", "solverstate_h5"):
            solver = cache.get("solver")
            if solver is None:
                solver = cache["solver"] = decaffe.get_solver(seeds["solver.prototxt"])
            solver.restore(path)
            solver.step(1)
        elif fmt in ("lmdb_datum", "leveldb_datum"):
            text = _data_net(f'type: "Data" transform_param {{ mirror: true crop_size: 4 }} '
                             f'data_param {{ source: "{path}" backend: {extra["backend"]} '
                             'batch_size: 2 }')
            _run_train_net(text, nets)
        elif fmt == "hdf5_data":
            text = _data_net(f'type: "HDF5Data" hdf5_data_param {{ source: "{extra["list"]}" '
                             'batch_size: 2 shuffle: true }')
            _run_train_net(text, nets)
        elif fmt in ("image_list", "image"):
            lst = path if fmt == "image_list" else extra["list"]
            folder = os.path.dirname(lst) + "/"
            text = _data_net(f'type: "ImageData" transform_param {{ mirror: true }} '
                             f'image_data_param {{ source: "{lst}" root_folder: "{folder}" '
                             'batch_size: 2 shuffle: true }')
            _run_train_net(text, nets)
        elif fmt == "lmdb_annotated":
            text = _data_net(
                'type: "AnnotatedData" transform_param { mirror: true resize_param { '
                'prob: 1 resize_mode: WARP height: 10 width: 10 } emit_constraint { '
                'emit_type: CENTER } distort_param { brightness_prob: 0.5 '
                'brightness_delta: 32 } expand_param { prob: 0.5 max_expand_ratio: 2 } } '
                f'data_param {{ source: "{path}" backend: LMDB batch_size: 2 }} '
                'annotated_data_param { batch_sampler { max_sample: 1 max_trials: 1 } '
                'batch_sampler { sampler { min_scale: 0.3 max_scale: 1 min_aspect_ratio: 0.5 '
                'max_aspect_ratio: 2 } sample_constraint { min_jaccard_overlap: 0.1 } '
                'max_sample: 1 max_trials: 10 } }')
            _run_train_net(text, nets)
        elif fmt == "lmdb_lane":
            text = ('layer { name: "d" type: "LaneData" top: "data" top: "label" '
                    'top: "seg_label" transform_param { mirror: true resize_param { prob: 1 '
                    'resize_mode: WARP height: 8 width: 8 } distort_param { brightness_prob: '
                    f'0.5 brightness_delta: 32 }} }} data_param {{ source: "{path}" '
                    'backend: LMDB batch_size: 2 } annotated_data_param { yolo_data_type: 1 '
                    'yolo_data_jitter: 0.3 seg_scales: 2 } } layer { name: "s" '
                    'type: "Silence" bottom: "data" bottom: "label" bottom: "seg_label" }')
            _run_train_net(text, nets)
        elif fmt == "label_map":
            from decaffe.cli.convert_annoset import name_to_label, read_label_map

            name_to_label(read_label_map(path), True, path)
        elif fmt == "voc_xml":
            from decaffe.cli.convert_annoset import convert_annoset

            folder = os.path.dirname(path)
            db = os.path.join(folder, "out_db")
            with open(os.devnull, "w") as log:
                convert_annoset(folder + "/", extra["list"], db, anno_type="detection",
                                label_map_file=extra["label_map"], check_label=True, log=log)
            text = _data_net(f'type: "AnnotatedData" data_param {{ source: "{db}" '
                             'backend: LMDB batch_size: 2 }')
            _run_train_net(text, nets, passes=3)
        elif fmt == "warmup":  # imports and a first net, before any case is timed
            net = decaffe.Net(seeds["net.prototxt"], decaffe.TEST)
            nets.append(net)
            net.forward()
        elif fmt.startswith("selftest_"):  # the harness's own check of its outcomes
            kind = fmt[len("selftest_"):]
            if kind == "crash":
                os.abort()
            elif kind == "hang":
                time.sleep(3600)
            elif kind == "overcap":
                import numpy as np

                np.ones(MEMORY_CAP // 4 + (1 << 30), np.float32)
            elif kind == "other":
                {}["missing"]
            elif kind == "unnamed":
                raise decaffe.errors.DecaffeError("something went wrong")
            elif kind == "named":
                raise decaffe.errors.FormatError(f"{path}: bad")
        else:
            raise ValueError(f"unknown format {fmt}")
    finally:
        for net in nets:
            try:
                net.close()
            except Exception:  # noqa: BLE001 - closing must not hide the outcome
                pass


def _names_source(e: BaseException, case: dict) -> bool:
    from decaffe.errors import NetError, ParseError, SolverError

    msg = str(e)
    path = case["path"]
    candidates = {path, os.path.basename(path), os.path.dirname(path)}
    if "list" in case["extra"]:
        candidates.add(os.path.basename(case["extra"]["list"]))
    if any(c and c in msg for c in candidates):
        return True
    if case["fmt"] in ("net_prototxt", "solver_prototxt"):
        # a net's or solver's own errors name the layer or the field, as Caffe's do
        return (isinstance(e, NetError) and e.layer is not None) or isinstance(
            e, (SolverError, ParseError))
    if isinstance(e, NetError) and e.layer is not None and case["fmt"] in (
            "caffemodel", "caffemodel_h5", "image_list", "image", "hdf5_data", "lmdb_datum",
            "leveldb_datum", "lmdb_annotated", "lmdb_lane"):
        # the layer that read it, and the record or item inside it
        return "record" in msg or "image" in msg or "HDF5" in msg or "blob" in msg
    return False


def _is_overcap(e: BaseException) -> bool:
    if isinstance(e, MemoryError):
        return True
    text = f"{type(e).__name__}: {e}"
    return "can't allocate memory" in text or "DefaultCPUAllocator" in text or (
        "out of memory" in text.lower())


def worker_main(seed_dir: str) -> int:
    import gc
    import logging
    import traceback

    from decaffe.errors import DecaffeError  # torch loads with the first net (one thread)

    logging.disable(logging.WARNING)
    with open(os.path.join(seed_dir, "seeds.json")) as f:
        seeds = json.load(f)
    cache: dict = {}
    out = sys.stdout
    sys.stdout = sys.stderr  # decaffe's own prints never mix with the replies
    for line in sys.stdin:
        case = json.loads(line)
        reply = {"index": case["index"]}
        try:
            _load(case, seeds, cache)
            reply["outcome"] = "loaded"
        except DecaffeError as e:
            if _is_overcap(e.__cause__ or e) and not isinstance(e.__cause__, DecaffeError):
                reply["outcome"] = "overcap"
            else:
                reply["outcome"] = "named" if _names_source(e, case) else "unnamed"
            reply["detail"] = f"{type(e).__name__}: {e}"[:400]
        except BaseException as e:  # noqa: BLE001 - the fuzz records every kind
            reply["outcome"] = "overcap" if _is_overcap(e) else "other"
            reply["detail"] = "".join(traceback.format_exception(e))[-1500:]
            if isinstance(e, KeyboardInterrupt):
                raise
        # a full collection costs ~90 ms with torch loaded: young generations each case,
        # everything every 64 cases, so cycles a failed case left cannot pile up
        gc.collect(1 if case["index"] % 64 else 2)
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


# ---------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------
def _cap_memory(cap: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


class Worker:
    """A worker process under the memory cap; restarted after a crash or a hang."""

    def __init__(self, seed_dir: str, cap: int, warm: bool = True):
        self.seed_dir, self.cap, self.warm = seed_dir, cap, warm
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env.setdefault("OMP_NUM_THREADS", "1")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", self.seed_dir],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, preexec_fn=_cap_memory(self.cap), cwd=self.seed_dir)
        if not self.warm:
            return
        # Start-up (torch's import, on a busy machine) is not part of any case's time.
        res = self._ask({"fmt": "warmup", "index": -1, "path": "", "extra": {}}, 600.0)
        if res.get("outcome") != "loaded":
            raise RuntimeError(f"the fuzz worker does not start: {res}")

    def run(self, case: Case, timeout: float) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        msg = {"fmt": case.fmt, "index": case.index, "path": case.path, "extra": case.extra}
        return self._ask(msg, timeout)

    def _ask(self, msg: dict, timeout: float) -> dict:
        import selectors

        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return self._died()
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout)
        sel.close()
        if not ready:
            self.stop()
            return {"outcome": "hang", "detail": f"no answer in {timeout:.0f} s"}
        line = self.proc.stdout.readline()
        if not line:
            return self._died()
        return json.loads(line)

    def _died(self) -> dict:
        code = self.proc.wait()
        self.proc = None
        return {"outcome": "crash", "detail": f"worker ended with status {code}"}

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            for f in (self.proc.stdin, self.proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
            self.proc = None


@dataclass
class Report:
    counts: dict = field(default_factory=dict)  # fmt -> Counter of outcomes
    faults: list = field(default_factory=list)  # (fmt, index, outcome, detail)
    seconds: dict = field(default_factory=dict)

    def table(self) -> str:
        head = f"{'format':<16}" + "".join(f"{o:>9}" for o in OUTCOMES) + f"{'cases':>8}{'s':>7}"
        rows = [head, "-" * len(head)]
        total = Counter()
        for fmt, c in self.counts.items():
            total.update(c)
            rows.append(f"{fmt:<16}" + "".join(f"{c.get(o, 0):>9}" for o in OUTCOMES)
                        + f"{sum(c.values()):>8}{self.seconds.get(fmt, 0):>7.0f}")
        rows.append("-" * len(head))
        rows.append(f"{'all':<16}" + "".join(f"{total.get(o, 0):>9}" for o in OUTCOMES)
                    + f"{sum(total.values()):>8}{sum(self.seconds.values()):>7.0f}")
        return "\n".join(rows)


def prepare_seeds(folder: str) -> dict:
    import contextlib
    import io

    with contextlib.redirect_stderr(io.StringIO()):  # the solver's set-up log
        seeds = make_seeds(os.path.join(folder, "seeds"))
    with open(os.path.join(seeds["folder"], "seeds.json"), "w") as f:
        json.dump(seeds, f, default=lambda b: None)
    # the datums are bytes: keep them for the runner; the worker does not need them
    return seeds


def run(formats: list[str], count: int, seed: int, *, timeout: float = 30.0,
        cap: int = MEMORY_CAP, keep: str | None = None, deadline: float | None = None,
        progress=None) -> Report:
    """Fuzz `count` cases of each format with `seed`; returns the report. Cases live in a
    temporary folder (or `keep`), each removed after it ran unless it was a fault."""
    root = keep or tempfile.mkdtemp(prefix="decaffe-fuzz-")
    report = Report()
    try:
        seeds = prepare_seeds(root)
        worker = Worker(seeds["folder"], cap)
        try:
            for fmt in formats:
                c = report.counts.setdefault(fmt, Counter())
                t0 = time.time()
                for i in range(count):
                    if deadline is not None and time.time() > deadline:
                        break
                    case = make_case(seeds, fmt, seed, i, root)
                    res = worker.run(case, timeout)
                    c[res["outcome"]] += 1
                    if res["outcome"] in FAULTS:
                        report.faults.append((fmt, i, res["outcome"], res.get("detail", "")))
                    else:
                        shutil.rmtree(case.folder, ignore_errors=True)
                    if progress is not None:
                        progress(fmt, i, res)
                report.seconds[fmt] = time.time() - t0
        finally:
            worker.stop()
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return report


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2]))
    print(__doc__)
    sys.exit(2)
