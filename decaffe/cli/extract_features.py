"""`decaffe extract_features WEIGHTS MODEL BLOB[,BLOB...] DB[,DB...] NUM_BATCHES [DB_TYPE]
[CPU|GPU [DEVICE_ID]]`: Caffe's extract_features.

Builds MODEL in the TEST phase with WEIGHTS, runs NUM_BATCHES forward passes, and stores
every example of each named blob as a float Datum (channels, height and width from the
blob's legacy shape, values in float_data, no label) under the key '%010d' (a running
index per blob) in a new database per blob. DB_TYPE (or -backend) is lmdb or leveldb.
"""

from __future__ import annotations

import sys
from typing import TextIO

import numpy as np

from .. import mode
from ..errors import DecaffeError
from ..proto import caffe_pb2
from .flags import FlagParser


def main(argv: list[str]) -> int:
    fp = FlagParser(argv[0], "Extract features of a net's blobs into databases.")
    fp.flag("backend", default=None, help="database type {lmdb, leveldb} (default lmdb)")
    fp.add_argument("weights", help="pretrained .caffemodel")
    fp.add_argument("model", help="feature extraction net prototxt (TEST phase)")
    fp.add_argument("blobs", help="blob names separated by ','")
    fp.add_argument("dbs", help="database names separated by ',' (one per blob)")
    fp.add_argument("num_batches", type=int, help="number of mini-batches to run")
    fp.add_argument("rest", nargs="*", help="[DB_TYPE] [CPU|GPU [DEVICE_ID]]")
    args = fp.parse(argv[1:])
    rest = list(args.rest)
    db_type = args.backend
    if rest and rest[0].lower() in ("lmdb", "leveldb"):
        positional = rest.pop(0)  # Caffe's sixth argument
        db_type = db_type or positional
    db_type = db_type or "lmdb"
    if rest and rest[0].upper() == "GPU":
        mode.set_mode_gpu()
        if len(rest) > 1:
            mode.set_device(int(rest[1]))
    elif rest and rest[0].upper() != "CPU":
        raise DecaffeError(f"unexpected argument {rest[0]!r} (expected CPU or GPU)")
    else:
        mode.set_mode_cpu()
    extract_features(args.weights, args.model, args.blobs.split(","), args.dbs.split(","),
                     args.num_batches, db_type)
    return 0


def extract_features(weights: str, model: str, blob_names: list[str], db_names: list[str],
                     num_batches: int, backend: str = "lmdb",
                     log: TextIO = sys.stderr) -> list[int]:
    """Run the extraction; returns how many examples each database received."""
    # decaffe.data imports cv2 and torch: loaded when run, not for -help
    from ..data.db import NEW, open_db
    from ..net import Net  # after parsing: -help loads no PyTorch

    if len(blob_names) != len(db_names):
        raise DecaffeError(f"the number of blob names ({len(blob_names)}) and database names "
                           f"({len(db_names)}) must be equal")
    if num_batches < 0:
        raise DecaffeError(f"the number of mini-batches must not be negative ({num_batches})")
    net = Net(model, mode.TEST, weights=weights)
    for name in blob_names:
        if name not in net.blobs:
            raise DecaffeError(f"unknown feature blob name '{name}' in the network {model}")
    dbs = [open_db(n, backend, NEW) for n in db_names]
    txns = [db.transaction() for db in dbs]
    counts = [0] * len(blob_names)
    print("Extracting Features", file=log)
    try:
        for _ in range(num_batches):
            net.forward()
            for i, name in enumerate(blob_names):
                blob = net.blobs[name]
                data = np.asarray(blob.data, np.float32)
                legacy = (blob.channels, blob.height, blob.width)
                for row in data.reshape(data.shape[0] if data.ndim else 1, -1):
                    d = caffe_pb2.Datum()
                    d.height, d.width, d.channels = legacy[1], legacy[2], legacy[0]
                    d.float_data.extend(row.tolist())
                    txns[i].put(f"{counts[i]:010d}", d.SerializeToString())
                    counts[i] += 1
                    if counts[i] % 1000 == 0:
                        txns[i].commit()
                        print(f"Extracted features of {counts[i]} query images for feature "
                              f"blob {name}", file=log)
        for i, name in enumerate(blob_names):
            if counts[i] % 1000 != 0:
                txns[i].commit()
            print(f"Extracted features of {counts[i]} query images for feature blob {name}",
                  file=log)
    finally:
        for db in dbs:
            db.close()
    print("Successfully extracted the features!", file=log)
    return counts
