"""Helpers for the data tests: small databases, images and nets made on the fly."""

from __future__ import annotations

import os

import cv2
import lmdb
import numpy as np

import decaffe
from decaffe.proto import caffe_pb2

GOLDEN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "golden")


def datum_bytes(arr: np.ndarray, label: int, encode: str | None = None) -> bytes:
    """A serialized Datum of a C×H×W array (uint8 raw, float, or encoded as .png/.jpg)."""
    d = caffe_pb2.Datum()
    d.channels, d.height, d.width = arr.shape
    if encode:
        hwc = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
        d.data = cv2.imencode(encode, np.ascontiguousarray(hwc))[1].tobytes()
        d.encoded = True
    elif arr.dtype == np.uint8:
        d.data = arr.tobytes()
    else:
        d.float_data.extend(arr.astype(np.float32).ravel().tolist())
    d.label = int(label)
    return d.SerializeToString()


def write_lmdb(path: str, records: list[tuple[bytes, bytes]]) -> str:
    """An LMDB written with the lmdb package directly (independent of decaffe's writer)."""
    env = lmdb.open(path, map_size=1 << 26)
    with env.begin(write=True) as txn:
        for k, v in records:
            txn.put(k, v)
    env.close()
    return path


def images(n: int, c: int = 3, h: int = 6, w: int = 7, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, c, h, w), dtype=np.uint8)


def image_lmdb(path: str, arrs: np.ndarray, labels=None, encode: str | None = None) -> str:
    labels = range(len(arrs)) if labels is None else labels
    return write_lmdb(path, [(f"{i:08d}".encode(), datum_bytes(a, int(l), encode))
                             for i, (a, l) in enumerate(zip(arrs, labels))])


def data_net(source: str, *, batch: int = 4, backend: str = "LMDB", transform: str = "",
             extra: str = "", tops=("data", "label"), phase=decaffe.TEST) -> decaffe.Net:
    top_text = " ".join(f'top: "{t}"' for t in tops)
    text = (f'layer {{ name: "d" type: "Data" {top_text} transform_param {{ {transform} }} '
            f'data_param {{ source: "{source}" batch_size: {batch} backend: {backend} '
            f"{extra} }} }}")
    return decaffe.Net(text, phase)


def reference_transform(x: np.ndarray, *, scale=1.0, mean=None, mean_values=(), h_off=0,
                        w_off=0, crop=0, mirror=False) -> np.ndarray:
    """Caffe's DataTransformer for one C×H×W example, element by element."""
    c, h, w = x.shape
    ch, cw = (crop, crop) if crop else (h, w)
    mv = list(mean_values) * (c if len(mean_values) == 1 else 1)
    out = np.zeros((c, ch, cw), np.float32)
    for ci in range(c):
        for hi in range(ch):
            for wi in range(cw):
                src = np.float32(x[ci, h_off + hi, w_off + wi])
                if mean is not None:
                    v = (src - np.float32(mean[ci, h_off + hi, w_off + wi])) * np.float32(scale)
                elif mv:
                    v = (src - np.float32(mv[ci])) * np.float32(scale)
                else:
                    v = src * np.float32(scale)
                out[ci, hi, cw - 1 - wi if mirror else wi] = v
    return out


def write_mean(path: str, mean: np.ndarray) -> str:
    blob = caffe_pb2.BlobProto()
    blob.num = 1
    blob.channels, blob.height, blob.width = mean.shape
    blob.data.extend(mean.astype(np.float32).ravel().tolist())
    with open(path, "wb") as f:
        f.write(blob.SerializeToString())
    return path
