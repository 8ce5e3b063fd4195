"""Python layers used by tests/layers/test_python_layer.py (and a silencer for the recurrent
tests). They subclass decaffe's pycaffe base class as user code subclasses caffe.Layer."""

import ast

import numpy as np

from decaffe.layers.python_layer import Layer


class Multiply(Layer):
    """top = factor · bottom, factor read from param_str ({'factor': k} or a bare number)."""

    def setup(self, bottom, top):
        if len(bottom) != 1 or len(top) != 1:
            raise ValueError("Multiply takes one bottom and one top")
        value = ast.literal_eval(self.param_str) if self.param_str else 1.0
        self.factor = float(value["factor"] if isinstance(value, dict) else value)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.factor * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = self.factor * top[0].diff


class Affine(Layer):
    """top = w · bottom + b with learnable scalars w (blob 0) and b (blob 1)."""

    def setup(self, bottom, top):
        self.blobs.add_blob(1)
        self.blobs.add_blob(1)
        init = ast.literal_eval(self.param_str) if self.param_str else (1.0, 0.0)
        self.blobs[0].data[0] = init[0]
        self.blobs[1].data[0] = init[1]

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.blobs[0].data[0] * bottom[0].data + self.blobs[1].data[0]

    def backward(self, top, propagate_down, bottom):
        # parameter diffs accumulate, as Caffe's layers do
        self.blobs[0].diff[0] += (top[0].diff * bottom[0].data).sum()
        self.blobs[1].diff[0] += top[0].diff.sum()
        if propagate_down[0]:
            bottom[0].diff[...] = self.blobs[0].data[0] * top[0].diff


class EuclideanLoss(Layer):
    """Σ(a − b)² / (2N), as pycaffe's pyloss example computes it."""

    def setup(self, bottom, top):
        if len(bottom) != 2:
            raise ValueError("EuclideanLoss needs two bottoms")

    def reshape(self, bottom, top):
        if bottom[0].count != bottom[1].count:
            raise ValueError("inputs must have the same dimension")
        self.delta = np.zeros_like(bottom[0].data)
        top[0].reshape(1)

    def forward(self, bottom, top):
        self.delta = bottom[0].data - bottom[1].data
        top[0].data[...] = np.sum(self.delta ** 2) / bottom[0].num / 2.0

    def backward(self, top, propagate_down, bottom):
        self.propagate_down = list(propagate_down)
        for i, sign in ((0, 1), (1, -1)):
            if propagate_down[i]:
                bottom[i].diff[...] = sign * top[0].diff[0] * self.delta / bottom[i].num


class Phase(Layer):
    """A 0-axis top holding the phase the layer sees."""

    def reshape(self, bottom, top):
        top[0].reshape()

    def forward(self, bottom, top):
        top[0].data[()] = self.phase


class Counter(Layer):
    """No bottom; each forward makes a top one element longer: [0, 1, ..., k]."""

    def setup(self, bottom, top):
        self.calls = 0

    def reshape(self, bottom, top):
        top[0].reshape(self.calls + 1)

    def forward(self, bottom, top):
        top[0].data[...] = np.arange(self.calls + 1)
        self.calls += 1


class SetupShaped(Layer):
    """Shapes its top once in setup (reshape does nothing), as many data layers do."""

    def setup(self, bottom, top):
        top[0].reshape(2, 3)

    def forward(self, bottom, top):
        top[0].data[...] = 7.0


class InPlaceDouble(Layer):
    """Doubles its blob in place (top named like its bottom): reads and writes one blob."""

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        assert bottom[0] is top[0], "an in-place top must be its bottom's blob"
        top[0].data[...] *= 2

    def backward(self, top, propagate_down, bottom):
        assert bottom[0] is top[0]
        bottom[0].diff[...] *= 2


class Raising(Layer):
    """Raises a ValueError in the method named by param_str."""

    def _maybe(self, where):
        if self.param_str == where:
            raise ValueError(f"boom in {where}")

    def setup(self, bottom, top):
        self._maybe("setup")

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)
        if getattr(self, "passes", 0):
            self._maybe("reshape")

    def forward(self, bottom, top):
        self.passes = 1
        self._maybe("forward")
        top[0].data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        self._maybe("backward")
        bottom[0].diff[...] = top[0].diff


class NoBackward(Layer):
    """Forward only: the base class's backward raises."""

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data


class Silence(Layer):
    """Consumes its bottoms, makes no top, gives no gradient (like Caffe's Silence)."""

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass


class OwnInit(Layer):
    """A subclass whose __init__ does not call the base class's."""

    def __init__(self, param):
        self.made = True

    def setup(self, bottom, top):
        self.blobs.add_blob(2)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data + self.blobs[0].data.sum()


class NotALayer:
    """Has the methods but does not derive from caffe.Layer."""

    def setup(self, bottom, top):
        pass


not_a_class = 3
