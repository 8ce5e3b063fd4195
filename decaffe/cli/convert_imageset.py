"""`decaffe convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME`: Caffe's convert_imageset.

Reads 'FILENAME LABEL' lines from LISTFILE, loads ROOTFOLDER + FILENAME through OpenCV
(colour BGR, or gray with -gray), optionally resizes (bilinear) to -resize_height x
-resize_width, and stores each as a Datum under the key '%08d_FILENAME' (its line's index)
in a new LMDB or LevelDB: raw pixels, or with -encoded / -encode_type the encoded image
(the file's own bytes when nothing changes them). Unreadable images are skipped with a
warning, as Caffe does; records are committed every 1000 images.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

import numpy as np

from ..errors import DataError
from .flags import FlagParser


def main(argv: list[str]) -> int:
    fp = FlagParser(argv[0], "Convert a set of images to the leveldb/lmdb format used as input "
                    "for Caffe.")
    fp.bool_flag("gray", False, "treat images as grayscale ones")
    fp.bool_flag("shuffle", False, "randomly shuffle the order of images and their labels")
    fp.flag("backend", default="lmdb", help="the backend {lmdb, leveldb} for storing the result")
    fp.flag("resize_width", type=int, default=0, help="width images are resized to")
    fp.flag("resize_height", type=int, default=0, help="height images are resized to")
    fp.bool_flag("check_size", False, "check that all the datum have the same size")
    fp.bool_flag("encoded", False, "store the encoded image in the datum")
    fp.flag("encode_type", default="", help="what type to encode the image as ('png','jpg',...)")
    fp.add_argument("root_folder", help="folder the list's file names are relative to "
                    "(joined as a string: end it with /)")
    fp.add_argument("listfile", help="text file of 'FILENAME LABEL' lines")
    fp.add_argument("db_name", help="the database to create")
    args = fp.parse(argv[1:])
    convert_imageset(args.root_folder, args.listfile, args.db_name, backend=args.backend,
                     gray=args.gray, shuffle=args.shuffle, resize_height=args.resize_height,
                     resize_width=args.resize_width, check_size=args.check_size,
                     encoded=args.encoded, encode_type=args.encode_type)
    return 0


def convert_imageset(root_folder: str, listfile: str, db_name: str, *, backend: str = "lmdb",
                     gray: bool = False, shuffle: bool = False, resize_height: int = 0,
                     resize_width: int = 0, check_size: bool = False, encoded: bool = False,
                     encode_type: str = "", log: TextIO = sys.stderr) -> int:
    """Build the database; returns the number of images stored."""
    # decaffe.data imports cv2 and torch: loaded when run, not for -help
    from ..data.datum import read_image_to_datum
    from ..data.db import NEW, open_db
    from ..data.sources import read_image_list

    lines = read_image_list(listfile)
    if shuffle:
        print("Shuffling data", file=log)
        order = np.random.default_rng().permutation(len(lines))
        lines = [lines[i] for i in order]
    print(f"A total of {len(lines)} images.", file=log)
    if encode_type and not encoded:
        print("encode_type specified, assuming encoded=true.", file=log)
    resize_height = max(0, resize_height)
    resize_width = max(0, resize_width)
    db = open_db(db_name, backend, NEW)
    txn = db.transaction()
    count = 0
    data_size = None
    try:
        for line_id, (name, label) in enumerate(lines):
            enc = encode_type
            if encoded and not enc:
                # the encoding from the file name's extension
                enc = os.path.splitext(name)[1][1:].lower()
                if not enc:
                    print(f"Failed to guess the encoding of '{name}'", file=log)
            path = root_folder + name
            datum = read_image_to_datum(path, label, resize_height, resize_width, not gray, enc)
            if datum is None:
                print(f"Could not open or find file {path}", file=log)
                continue
            if check_size:
                size = datum.channels * datum.height * datum.width
                if data_size is None:
                    data_size = size
                elif len(datum.data) != data_size:
                    raise DataError(f"{path}: incorrect data field size {len(datum.data)} "
                                    f"(the first image has {data_size})")
            txn.put(f"{line_id:08d}_{name}", datum.SerializeToString())
            count += 1
            if count % 1000 == 0:
                txn.commit()
                print(f"Processed {count} files.", file=log)
        if count % 1000 != 0:
            txn.commit()
            print(f"Processed {count} files.", file=log)
    finally:
        db.close()
    return count
