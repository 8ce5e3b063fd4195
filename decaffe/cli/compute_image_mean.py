"""`decaffe compute_image_mean [-backend lmdb|leveldb] INPUT_DB [OUTPUT_FILE]`: Caffe's
compute_image_mean.

The mean of every Datum in the database (encoded ones decoded as stored), accumulated in
single precision record by record exactly as Caffe's float BlobProto accumulates, divided
by the count, written as a 1×C×H×W BlobProto (legacy num/channels/height/width fields);
each channel's mean value is printed.
"""

from __future__ import annotations

import sys

import numpy as np

from ..errors import DataError
from ..formats.atomic import atomic_write
from ..proto import caffe_pb2
from .flags import FlagParser


def main(argv: list[str]) -> int:
    fp = FlagParser(argv[0], "Compute the mean image of a set of images given by a "
                    "leveldb/lmdb.")
    fp.flag("backend", default="lmdb", help="the backend {leveldb, lmdb} containing the images")
    fp.add_argument("input_db")
    fp.add_argument("output_file", nargs="?", default=None)
    args = fp.parse(argv[1:])
    mean = compute_image_mean(args.input_db, args.backend)
    if args.output_file:
        print(f"Write to {args.output_file}", file=sys.stderr)
        write_mean(mean, args.output_file)
    c = mean.shape[0]
    print(f"Number of channels: {c}", file=sys.stderr)
    for i in range(c):
        s = np.float32(0)
        for v in mean[i].ravel():  # float accumulation, as Caffe prints it
            s = np.float32(s + v)
        print(f"mean_value channel [{i}]: {float(s) / mean[i].size:g}", file=sys.stderr)
    return 0


def compute_image_mean(db_path: str, backend: str = "lmdb") -> np.ndarray:
    """The C×H×W float32 mean of a database's Datums, as Caffe computes it."""
    # decaffe.data imports cv2 and torch: loaded when run, not for -help
    from ..data.datum import datum_array, parse_datum
    from ..data.db import READ, open_db

    total = None
    count = 0
    with open_db(db_path, backend, READ) as db:
        for key, value in db.items():
            arr = datum_array(parse_datum(value, key, db_path), key, db_path)
            if total is None:
                total = np.zeros(arr.shape, np.float32)
            elif arr.size != total.size:
                raise DataError(f"record '{key.decode(errors='replace')}' of '{db_path}': "
                                f"incorrect data field size {arr.size} (the first has "
                                f"{total.size})")
            # Caffe adds each record into float32 sums, rounding at every addition.
            total += arr.reshape(total.shape).astype(np.float32)
            count += 1
            if count % 10000 == 0:
                print(f"Processed {count} files.", file=sys.stderr)
    if total is None:
        raise DataError(f"the database '{db_path}' is empty")
    if count % 10000 != 0:
        print(f"Processed {count} files.", file=sys.stderr)
    return total / np.float32(count)


def write_mean(mean: np.ndarray, path: str) -> None:
    """Write a C×H×W mean as Caffe does: a BlobProto with num 1 and legacy dimensions."""
    blob = caffe_pb2.BlobProto()
    blob.num = 1
    blob.channels, blob.height, blob.width = (int(s) for s in mean.shape)
    blob.data.extend(mean.astype(np.float32).ravel().tolist())
    with atomic_write(path) as f:
        f.write(blob.SerializeToString())
