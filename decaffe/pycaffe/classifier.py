"""pycaffe's ``caffe.Classifier``: a Net in the TEST phase that classifies images.

Images (H×W×K, as ``caffe.io.load_image`` gives) are resized to ``image_dims``, cropped to
the net's input size (the centre crop, or with ``oversample`` the four corners and the
centre plus their mirror images, whose predictions are averaged), preprocessed by a
``caffe.io.Transformer`` (transpose to K×H×W, then channel_swap, raw_scale, mean,
input_scale) and run through the net in batches of its input's size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..mode import TEST
from . import io as pyio
from .net import Net


def input_transformer(net: Net, mean: np.ndarray | None = None, input_scale: float | None = None,
                      raw_scale: float | None = None,
                      channel_swap: Sequence[int] | None = None) -> pyio.Transformer:
    """The caffe.io.Transformer pycaffe's Classifier and Detector set up for the net's first
    input: H×W×K images in, K×H×W out, with the optional mean, scales and channel order."""
    in_ = net.inputs[0]
    transformer = pyio.Transformer({in_: net.blobs[in_].data.shape})
    transformer.set_transpose(in_, (2, 0, 1))
    if mean is not None:
        transformer.set_mean(in_, mean)
    if input_scale is not None:
        transformer.set_input_scale(in_, input_scale)
    if raw_scale is not None:
        transformer.set_raw_scale(in_, raw_scale)
    if channel_swap is not None:
        transformer.set_channel_swap(in_, channel_swap)
    return transformer


class Classifier(Net):
    """Classifier(model_file, pretrained_file, image_dims=None, mean=None, input_scale=None,
    raw_scale=None, channel_swap=None); ``predict(images, oversample=True)`` gives the first
    output's class scores, one row per image."""

    def __init__(self, model_file: str | os.PathLike[str],
                 pretrained_file: str | os.PathLike[str] | None,
                 image_dims: Sequence[int] | None = None, mean: np.ndarray | None = None,
                 input_scale: float | None = None, raw_scale: float | None = None,
                 channel_swap: Sequence[int] | None = None) -> None:
        super().__init__(model_file, pretrained_file, TEST)
        in_ = self.inputs[0]
        self.transformer = input_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.crop_dims = np.array(self.blobs[in_].data.shape[2:])
        if image_dims is None or not len(image_dims):
            image_dims = self.crop_dims
        self.image_dims = image_dims

    def predict(self, inputs: Sequence[np.ndarray], oversample: bool = True) -> np.ndarray:
        """Class scores for each H×W×K image in inputs."""
        input_ = np.zeros((len(inputs), self.image_dims[0], self.image_dims[1],
                           inputs[0].shape[2]), dtype=np.float32)
        for ix, in_ in enumerate(inputs):
            input_[ix] = pyio.resize_image(in_, self.image_dims)
        if oversample:
            input_ = pyio.oversample(input_, self.crop_dims)
        else:
            center = np.array(self.image_dims) / 2.0
            crop = np.tile(center, (1, 2))[0] + np.concatenate([-self.crop_dims / 2.0,
                                                                 self.crop_dims / 2.0])
            crop = crop.astype(int)
            input_ = input_[:, crop[0]:crop[2], crop[1]:crop[3], :]
        caffe_in = np.zeros(np.array(input_.shape)[[0, 3, 1, 2]], dtype=np.float32)
        for ix, in_ in enumerate(input_):
            caffe_in[ix] = self.transformer.preprocess(self.inputs[0], in_)
        out = self.forward_all(**{self.inputs[0]: caffe_in})
        predictions = out[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(1)
        return predictions
