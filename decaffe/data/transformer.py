"""Caffe's DataTransformer, over whole batches at once.

For each C×H×W example (a Datum's pixels or a decoded image, channels in BGR order) Caffe
computes, in single precision,

    top[c, h, w] = (x[c, h_off + h, w_off + w] - mean[...]) * scale

with ``mean`` the mean file's value at the same source position (so a crop takes the mean
at its own place) or the channel's ``mean_value`` (one value for every channel, or one per
channel), or no subtraction at all. With ``crop_size`` the output is crop×crop: a random
crop in TRAIN, the centre crop ((H - crop) / 2, rounding down) in TEST. With ``mirror`` each
example is flipped left-right with probability ½ (in both phases, as in Caffe). Random draws
come from the transformer's own numpy Generator, so a run seeded alike repeats exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import DataError
from ..proto import caffe_pb2


def load_mean_file(path: str) -> np.ndarray:
    """The C×H×W mean image of a binaryproto mean file (its first item)."""
    blob = caffe_pb2.BlobProto()
    try:
        with open(path, "rb") as f:
            blob.ParseFromString(f.read())
    except OSError as e:
        raise DataError(f"cannot read mean file '{path}': {e.strerror or e}") from None
    except Exception as e:  # not a BlobProto
        raise DataError(f"mean file '{path}' is not a BlobProto: {e}") from None
    values = blob.data if len(blob.data) else blob.double_data
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = tuple(blob.shape.dim)
    count = int(np.prod(shape)) if shape else 0
    if count == 0 or len(values) != count:
        raise DataError(f"mean file '{path}': {len(values)} values for blob shape {shape}")
    arr = np.asarray(values, np.float32).reshape(shape)
    if arr.ndim == 4:
        return np.ascontiguousarray(arr[0])
    if arr.ndim == 3:
        return arr
    if arr.ndim == 2:
        return arr[None]
    raise DataError(f"mean file '{path}': a mean image needs 2 to 4 axes, the blob has shape "
                    f"{shape}")


def _shape_str(s: Sequence[int]) -> str:
    return "x".join(str(int(d)) for d in s)


class DataTransformer:
    """Scale, mean subtraction, crop and mirror exactly as Caffe's TransformationParameter says.

    ``where`` names the layer in errors; ``rng`` draws the crops and flips.
    """

    def __init__(self, param: caffe_pb2.TransformationParameter, phase: int, where: str = "",
                 rng: np.random.Generator | None = None) -> None:
        self.where = where
        self.phase = phase
        self.scale = float(np.float32(param.scale))
        self.mirror = bool(param.mirror)
        crop = int(param.crop_size)
        self.crop_h = int(param.crop_h) or crop
        self.crop_w = int(param.crop_w) or crop
        self.force_color = bool(param.force_color)
        self.force_gray = bool(param.force_gray)
        if self.force_color and self.force_gray:
            raise DataError(f"{where}transform_param: cannot set both force_color and "
                            "force_gray")
        for field in ("resize_param", "noise_param", "distort_param", "expand_param"):
            # resize_param is repeated (eric612's fork); the others are optional
            if (len(param.resize_param) if field == "resize_param" else param.HasField(field)):
                raise DataError(f"{where}transform_param.{field}: the SSD transformations are "
                                "not supported by this layer")
        self.mean_file = param.mean_file if param.HasField("mean_file") else None
        self.mean_values = [float(v) for v in param.mean_value]
        if self.mean_file is not None and self.mean_values:
            raise DataError(f"{where}transform_param: cannot specify mean_file and mean_value "
                            "at the same time")
        self.mean: np.ndarray | None = None
        if self.mean_file is not None:
            self.mean = load_mean_file(self.mean_file)
        self.rng = rng if rng is not None else np.random.default_rng()

    @property
    def decode_color(self) -> bool | None:
        """How encoded images are decoded: True colour, False gray, None as stored."""
        if self.force_color:
            return True
        if self.force_gray:
            return False
        return None

    @property
    def needs_rand(self) -> bool:
        return self.mirror or (self.phase == caffe_pb2.TRAIN and bool(self.crop_h))

    # -- shapes ---------------------------------------------------------------------------
    def check_input(self, shape: Sequence[int], what: str = "the data") -> None:
        """Errors Caffe's CHECKs would raise for an example of this C×H×W shape."""
        c, h, w = (int(s) for s in shape)
        if c <= 0:
            raise DataError(f"{self.where}{what} has no channels")
        if h < self.crop_h or w < self.crop_w:
            raise DataError(f"{self.where}{what} is {_shape_str(shape)}, smaller than the "
                            f"crop {self.crop_h}x{self.crop_w}")
        if self.mean is not None and tuple(self.mean.shape) != (c, h, w):
            raise DataError(f"{self.where}transform_param.mean_file: the mean file "
                            f"'{self.mean_file}' has shape {_shape_str(self.mean.shape)} but "
                            f"{what} has shape {_shape_str(shape)}")
        if self.mean_values and len(self.mean_values) not in (1, c):
            raise DataError(f"{self.where}transform_param.mean_value: specify either 1 "
                            f"mean_value or as many as channels ({c}), not "
                            f"{len(self.mean_values)}")

    def output_shape(self, shape: Sequence[int]) -> tuple[int, int, int]:
        """Caffe's InferBlobShape for one C×H×W example (checked)."""
        self.check_input(shape)
        c, h, w = (int(s) for s in shape)
        if self.crop_h:
            return c, self.crop_h, self.crop_w
        return c, h, w

    # -- the transformation -----------------------------------------------------------------
    def transform_list(self, arrays: list[np.ndarray],
                       names: Sequence[str] | None = None) -> torch.Tensor:
        """Transform C×H×W examples of possibly different sizes into one N×C×h×w batch.

        Examples of one size go through together; otherwise each is transformed alone,
        and they must agree on the output shape (they do when cropping), as Caffe checks.
        """
        first = arrays[0].shape
        if all(a.shape == first and a.dtype == arrays[0].dtype for a in arrays):
            return self.transform(np.stack(arrays), names)
        outs = []
        for i, a in enumerate(arrays):
            name = names[i] if names is not None else f"example {i}"
            o = self.transform(a[None], [name])
            if outs and o.shape[1:] != outs[0].shape[1:]:
                raise DataError(f"{self.where}{name} gives a {_shape_str(o.shape[1:])} "
                                f"example but the batch's first gives "
                                f"{_shape_str(outs[0].shape[1:])} (set crop_size, or resize)")
            outs.append(o)
        return torch.cat(outs)

    def transform(self, batch: np.ndarray, names: Sequence[str] | None = None) -> torch.Tensor:
        """Transform an N×C×H×W uint8 or float32 batch; returns float32 N×C×h×w.

        Single-threaded numpy (which releases the GIL), so that a prefetch thread neither
        holds the interpreter nor competes with torch's own threads for the cores.
        """
        n, c, h, w = batch.shape
        self.check_input((c, h, w), names[0] if names is not None and n == 1 else "the data")
        ch, cw = (self.crop_h, self.crop_w) if self.crop_h else (h, w)
        flips = self.rng.integers(0, 2, n).astype(bool) if self.mirror else None
        mean = self.mean
        if self.crop_h and self.phase == caffe_pb2.TRAIN:
            h_off = self.rng.integers(0, h - ch + 1, n)
            w_off = self.rng.integers(0, w - cw + 1, n)
            # Every example's own window, gathered through a view of all windows.
            win = np.lib.stride_tricks.sliding_window_view(batch, (ch, cw), axis=(2, 3))
            pixels = win[np.arange(n), :, h_off, w_off]
            if mean is not None:
                mwin = np.lib.stride_tricks.sliding_window_view(mean, (ch, cw), axis=(1, 2))
                mean = mwin[:, h_off, w_off].transpose(1, 0, 2, 3)
        else:
            y0, x0 = (h - ch) // 2, (w - cw) // 2
            pixels = batch[:, :, y0:y0 + ch, x0:x0 + cw]
            if mean is not None:
                mean = mean[:, y0:y0 + ch, x0:x0 + cw]
        out = np.array(pixels, dtype=np.float32)  # always a fresh array we may change
        if mean is not None:
            out -= mean
        elif self.mean_values:
            mv = self.mean_values if len(self.mean_values) == c else self.mean_values * c
            out -= np.asarray(mv, np.float32).reshape(1, c, 1, 1)
        if self.scale != 1.0:
            out *= np.float32(self.scale)
        if flips is not None and flips.any():
            # The mean was taken at source positions, so flipping afterwards is Caffe's order.
            out[flips] = out[flips][..., ::-1]
        return torch.from_numpy(out)
