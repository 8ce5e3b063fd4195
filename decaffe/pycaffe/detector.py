"""pycaffe's ``caffe.Detector``: a Net in the TEST phase that scores image windows (R-CNN).

Each window (ymin, xmin, ymax, xmax) is cropped from its image — with ``context_pad``, a
box enlarged so that the window plus that many pixels of context fill the net's input,
out-of-image parts filled with the mean — then warped to the input size and preprocessed
like the Classifier's inputs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from ..errors import DecaffeError
from ..mode import TEST
from . import io as pyio
from .classifier import input_transformer
from .net import Net


class Detector(Net):
    """Detector(model_file, pretrained_file, mean=None, input_scale=None, raw_scale=None,
    channel_swap=None, context_pad=None); ``detect_windows([(filename, windows), ...])``."""

    def __init__(self, model_file: str | os.PathLike[str],
                 pretrained_file: str | os.PathLike[str] | None,
                 mean: np.ndarray | None = None, input_scale: float | None = None,
                 raw_scale: float | None = None, channel_swap: Sequence[int] | None = None,
                 context_pad: int | None = None) -> None:
        super().__init__(model_file, pretrained_file, TEST)
        self.transformer = input_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows: Iterable[tuple[str, Iterable[npt.ArrayLike]]]
                       ) -> list[dict]:
        """[{'window', 'prediction', 'filename'}] for every window of every image."""
        images_windows = list(images_windows)
        window_inputs = []
        for image_fname, windows in images_windows:
            image = pyio.load_image(image_fname).astype(np.float32)
            for window in windows:
                window_inputs.append(self.crop(image, np.asarray(window)))
        if not window_inputs:
            return []
        in_ = self.inputs[0]
        caffe_in = np.zeros((len(window_inputs), window_inputs[0].shape[2])
                            + tuple(self.blobs[in_].data.shape[2:]), dtype=np.float32)
        for ix, window_in in enumerate(window_inputs):
            caffe_in[ix] = self.transformer.preprocess(in_, window_in)
        out = self.forward_all(**{in_: caffe_in})
        predictions = out[self.outputs[0]]
        detections = []
        ix = 0
        for image_fname, windows in images_windows:
            for window in windows:
                detections.append({"window": window, "prediction": predictions[ix],
                                   "filename": image_fname})
                ix += 1
        return detections

    def detect_selective_search(self, image_fnames: Iterable[str]) -> list[dict]:
        """Windows proposed by the selective_search_ijcv_with_python package (MATLAB)."""
        try:
            # optional: R-CNN's selective search, only for this method
            import selective_search_ijcv_with_python as selective_search
        except ImportError:
            raise DecaffeError("detect_selective_search needs the "
                               "selective_search_ijcv_with_python package (and MATLAB)") from None
        image_fnames = [os.path.abspath(f) for f in image_fnames]
        windows_list = selective_search.get_windows(image_fnames, cmd="selective_search_rcnn")
        return self.detect_windows(zip(image_fnames, windows_list))

    def crop(self, im: np.ndarray, window: npt.ArrayLike) -> np.ndarray:
        """The window (ymin, xmin, ymax, xmax) of im, with context padding if configured."""
        window = np.asarray(window)
        crop = im[int(window[0]):int(window[2]), int(window[1]):int(window[3])]
        if self.context_pad:
            box = window.astype(float)
            crop_size = self.blobs[self.inputs[0]].width  # assumes a square input
            scale = crop_size / (1.0 * crop_size - self.context_pad * 2)
            half_h = (box[2] - box[0] + 1) / 2.0
            half_w = (box[3] - box[1] + 1) / 2.0
            center = (box[0] + half_h, box[1] + half_w)
            scaled_dims = scale * np.array((-half_h, -half_w, half_h, half_w))
            box = np.round(np.tile(center, 2) + scaled_dims)
            full_h = box[2] - box[0] + 1
            full_w = box[3] - box[1] + 1
            scale_h = crop_size / full_h
            scale_w = crop_size / full_w
            pad_y = int(round(max(0, -box[0]) * scale_h))  # amount out of bounds
            pad_x = int(round(max(0, -box[1]) * scale_w))
            im_h, im_w = im.shape[:2]
            box = np.clip(box, 0.0, [im_h, im_w, im_h, im_w])
            clip_h = box[2] - box[0] + 1
            clip_w = box[3] - box[1] + 1
            if not (clip_h > 0 and clip_w > 0):
                raise DecaffeError(f"window {tuple(window)} lies outside the {im_h}x{im_w} image")
            crop_h = int(round(clip_h * scale_h))
            crop_w = int(round(clip_w * scale_w))
            if pad_y + crop_h > crop_size:
                crop_h = crop_size - pad_y
            if pad_x + crop_w > crop_size:
                crop_w = crop_size - pad_x
            context_crop = im[int(box[0]):int(box[2]), int(box[1]):int(box[3])]
            context_crop = pyio.resize_image(context_crop, (crop_h, crop_w))
            crop = np.ones(self.crop_dims, dtype=np.float32) * self.crop_mean
            crop[pad_y:(pad_y + crop_h), pad_x:(pad_x + crop_w)] = context_crop
        return crop

    def configure_crop(self, context_pad: int | None) -> None:
        """The crop size from the input blob, and the mean in image space for context padding."""
        in_ = self.inputs[0]
        tpose = self.transformer.transpose[in_]
        inv_tpose = [tpose[t] for t in tpose]
        self.crop_dims = np.array(self.blobs[in_].data.shape[1:])[inv_tpose]
        self.context_pad = context_pad
        if self.context_pad:
            transpose = self.transformer.transpose.get(in_)
            channel_order = self.transformer.channel_swap.get(in_)
            raw_scale = self.transformer.raw_scale.get(in_)
            mean = self.transformer.mean.get(in_)
            if mean is not None:
                inv_transpose = [transpose[t] for t in transpose]
                crop_mean = mean.copy().transpose(inv_transpose)
                if channel_order is not None:
                    channel_order_inverse = [list(channel_order).index(i)
                                             for i in range(crop_mean.shape[2])]
                    crop_mean = crop_mean[:, :, channel_order_inverse]
                if raw_scale is not None:
                    crop_mean = crop_mean / raw_scale
                self.crop_mean = crop_mean
            else:
                self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
