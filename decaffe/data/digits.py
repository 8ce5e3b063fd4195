"""The bundled dataset: scikit-learn's 8×8 handwritten digits as Caffe LMDBs.

scikit-learn ships the 1,797 images (16 gray levels, 0..16) inside its package, so nothing
is downloaded. They become Datums of 1×8×8 uint8 pixels, scaled to 0..255 by
round(v·255/16), with the digit as label. The split is fixed: the first 1,437 images train
(stored in a fixed interleaved order, so consecutive records mix writers and digits) and the
last 360 test, keys '%08d' in storage order. Install with ``pip install 'decaffe[digits]'``.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

from ..errors import DecaffeError
from ..proto import caffe_pb2
from .db import NEW, open_db

NUM_TRAIN = 1437
NUM_TEST = 360
TRAIN_DB = "digits_train_lmdb"
TEST_DB = "digits_test_lmdb"


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images N×1×8×8 uint8 in 0..255, labels N int64) in scikit-learn's order."""
    try:
        # scikit-learn is optional (the digits extra)
        from sklearn.datasets import load_digits as _load
    except ImportError:
        raise DecaffeError("the bundled digits need scikit-learn: "
                           "pip install 'decaffe[digits]'") from None
    d = _load()
    images = np.rint(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return images[:, None], d.target.astype(np.int64)


def split() -> tuple[np.ndarray, np.ndarray]:
    """Indices of the train images (in storage order) and of the test images."""
    train = (np.arange(NUM_TRAIN) * 7919) % NUM_TRAIN  # 7919 is prime to 1437: a permutation
    test = np.arange(NUM_TRAIN, NUM_TRAIN + NUM_TEST)
    return train, test


def write_lmdb(path: str, images: np.ndarray, labels: np.ndarray) -> None:
    """A new LMDB of raw uint8 Datums, keys '%08d' in the given order."""
    with open_db(path, "lmdb", NEW) as db:
        txn = db.transaction()
        for i, (img, label) in enumerate(zip(images, labels)):
            d = caffe_pb2.Datum()
            d.channels, d.height, d.width = (int(s) for s in img.shape)
            d.data = np.ascontiguousarray(img).tobytes()
            d.label = int(label)
            d.encoded = False
            txn.put(f"{i:08d}", d.SerializeToString())
        txn.commit()


def ensure_digits(root: str) -> tuple[str, str]:
    """The (train, test) LMDB paths under root, building them on first use."""
    root = os.fspath(root)
    train_db, test_db = os.path.join(root, TRAIN_DB), os.path.join(root, TEST_DB)
    if os.path.exists(os.path.join(train_db, "data.mdb")) and \
            os.path.exists(os.path.join(test_db, "data.mdb")):
        return train_db, test_db
    images, labels = load_digits()
    train_idx, test_idx = split()
    os.makedirs(root, exist_ok=True)
    for path, idx in ((train_db, train_idx), (test_db, test_idx)):
        if os.path.exists(os.path.join(path, "data.mdb")):
            continue
        # Built aside and renamed in, so an interrupted build leaves no half database.
        tmp = tempfile.mkdtemp(prefix=".digits-", dir=root)
        try:
            write_lmdb(os.path.join(tmp, "db"), images[idx], labels[idx])
            if os.path.exists(path):
                shutil.rmtree(path)
            os.replace(os.path.join(tmp, "db"), path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return train_db, test_db
