"""ENet's spatial dropout layer (TimoSaemann/ENet ``spatial_dropout.py``, 16 May 2017): drops
whole feature maps.

param_str is a Python dict literal, ``{'phase': 'TRAIN' | 'TEST', 'p': '0.1'}`` (the original
evaluates it; here it is read with ast.literal_eval); the param_str's ``phase``, not the net's,
chooses the behaviour, as in the original. p must lie in (0, 1); scale = 1 / (1 - p).
TRAIN: each channel of each item is kept with probability 1 - p (numpy's global generator) and
multiplied by scale, or zeroed. TEST: the original multiplies everything by scale (it does not
pass the input through unchanged), and so does this.
bottom (N, C, H, W) -> top of the same shape. Backward applies the same mask and scale to the
top's diff; the original reuses the last item's mask for every item, this keeps each item's.
"""

from __future__ import annotations

import ast

import numpy as np

import caffe


class SpatialDropoutLayer(caffe.Layer):
    """Channel-wise dropout for (N, C, H, W) blobs (see the module doc)."""

    def setup(self, bottom, top):
        if len(bottom) != 1:
            raise Exception(f"Dropout layer needs one blob as input; received bottom "
                            f"blobs = {len(bottom)}")
        if len(top) != 1:
            raise Exception(f"Output of dropout layer is just one blob; received top "
                            f"blobs = {len(top)}")
        param = ast.literal_eval(self.param_str)
        self.phase = param["phase"]
        self.p = float(param["p"])
        if self.p <= 0 or self.p >= 1:
            raise Exception("p need to be between 0 and 1")
        self.scale_ = 1.0 / (1.0 - self.p)
        self._mask = None

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        x = bottom[0].data
        if self.phase == "TRAIN":
            n, c = x.shape[:2]
            self._mask = np.random.binomial(1, 1 - self.p, size=(n, c)).astype(x.dtype)
            top[0].data[...] = x * (self._mask * self.scale_)[:, :, None, None]
        else:
            top[0].data[...] = x * self.scale_

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if self.phase == "TRAIN":
            bottom[0].diff[...] = top[0].diff * (self._mask * self.scale_)[:, :, None, None]
        else:
            bottom[0].diff[...] = top[0].diff * self.scale_
