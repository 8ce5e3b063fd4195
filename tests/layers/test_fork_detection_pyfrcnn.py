"""py-faster-rcnn's way of using Caffe, through decaffe unchanged: Python layers written as
py-faster-rcnn writes them (``param_str`` parsed as YAML, ``set_roidb`` called through
``solver.net.layers[0]`` as its SolverWrapper does, tops reshaped in ``forward`` as its
RoIDataLayer does and in ``reshape``), feeding ROIPooling and SmoothL1Loss with inside and
outside weights; a tiny Fast R-CNN trains a few iterations and its loss falls."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

import caffe
import decaffe

NUM_CLASSES = 3  # background + 2
IM = 16

LAYERS_PY = textwrap.dedent('''
    """Python layers in py-faster-rcnn's style (roi_data_layer.layer, rpn.proposal_layer)."""
    import numpy as np
    import yaml

    import caffe


    class RoIDataLayer(caffe.Layer):
        """One image per minibatch from a roidb handed over with set_roidb."""

        def setup(self, bottom, top):
            layer_params = yaml.safe_load(self.param_str)
            self._num_classes = layer_params["num_classes"]
            self._name_to_top_map = {}
            names = ["data", "rois", "labels", "bbox_targets", "bbox_inside_weights",
                     "bbox_outside_weights"]
            shapes = [(1, 3, 16, 16), (1, 5), (1,), (1, 4 * self._num_classes),
                      (1, 4 * self._num_classes), (1, 4 * self._num_classes)]
            for idx, (name, shape) in enumerate(zip(names, shapes)):
                top[idx].reshape(*shape)
                self._name_to_top_map[name] = idx
            self._roidb = None

        def set_roidb(self, roidb):
            self._roidb = roidb
            self._perm = np.random.RandomState(3).permutation(len(roidb))
            self._cur = 0

        def _get_next_minibatch(self):
            if self._cur >= len(self._roidb):
                self._cur = 0
            entry = self._roidb[self._perm[self._cur]]
            self._cur += 1
            return entry

        def forward(self, bottom, top):
            blobs = self._get_next_minibatch()
            for blob_name, blob in blobs.items():
                top_ind = self._name_to_top_map[blob_name]
                # reshape the net's input blobs, as py-faster-rcnn does
                top[top_ind].reshape(*(blob.shape))
                top[top_ind].data[...] = blob.astype(np.float32, copy=False)

        def backward(self, top, propagate_down, bottom):
            pass

        def reshape(self, bottom, top):
            # reshaping happens during the call to forward
            pass


    class ClipRoisLayer(caffe.Layer):
        """Clips ROIs to the image; its top follows the bottom's shape in reshape."""

        def setup(self, bottom, top):
            layer_params = yaml.safe_load(self.param_str)
            self._im_size = layer_params["im_size"]

        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].data.shape)

        def forward(self, bottom, top):
            rois = bottom[0].data.copy()
            rois[:, 1:] = np.clip(rois[:, 1:], 0, self._im_size - 1)
            top[0].data[...] = rois

        def backward(self, top, propagate_down, bottom):
            pass
''')

NET = f'''
name: "TinyFastRCNN"
layer {{ name: "data" type: "Python"
  top: "data" top: "rois" top: "labels" top: "bbox_targets" top: "bbox_inside_weights"
  top: "bbox_outside_weights"
  python_param {{ module: "pyfrcnn_layers" layer: "RoIDataLayer"
                 param_str: "'num_classes': {NUM_CLASSES}" }} }}
layer {{ name: "clip" type: "Python" bottom: "rois" top: "rois_c"
  python_param {{ module: "pyfrcnn_layers" layer: "ClipRoisLayer" param_str: "im_size: {IM}" }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 6 kernel_size: 3 pad: 1
    weight_filler {{ type: "gaussian" std: 0.1 }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "roi_pool" type: "ROIPooling" bottom: "conv1" bottom: "rois_c" top: "pool"
  roi_pooling_param {{ pooled_h: 2 pooled_w: 2 spatial_scale: 1 }} }}
layer {{ name: "fc" type: "InnerProduct" bottom: "pool" top: "fc"
  inner_product_param {{ num_output: 16 weight_filler {{ type: "gaussian" std: 0.1 }} }} }}
layer {{ name: "relu_fc" type: "ReLU" bottom: "fc" top: "fc" }}
layer {{ name: "cls_score" type: "InnerProduct" bottom: "fc" top: "cls_score"
  inner_product_param {{ num_output: {NUM_CLASSES}
    weight_filler {{ type: "gaussian" std: 0.01 }} }} }}
layer {{ name: "bbox_pred" type: "InnerProduct" bottom: "fc" top: "bbox_pred"
  inner_product_param {{ num_output: {4 * NUM_CLASSES}
    weight_filler {{ type: "gaussian" std: 0.001 }} }} }}
layer {{ name: "loss_cls" type: "SoftmaxWithLoss" bottom: "cls_score" bottom: "labels"
  top: "loss_cls" }}
layer {{ name: "loss_bbox" type: "SmoothL1Loss" bottom: "bbox_pred" bottom: "bbox_targets"
  bottom: "bbox_inside_weights" bottom: "bbox_outside_weights" top: "loss_bbox" }}
'''


def _roidb(n: int, seed: int) -> list[dict]:
    """Images with one bright square whose colour channel is its class; ROIs around it."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        cls = int(rng.integers(1, NUM_CLASSES))
        x0, y0 = (int(v) for v in rng.integers(0, IM - 6, size=2))
        gt = np.array([x0, y0, x0 + 5, y0 + 5], np.float32)
        img = rng.normal(0, 0.1, (1, 3, IM, IM)).astype(np.float32)
        img[0, cls, y0:y0 + 6, x0:x0 + 6] += 1.0
        rois, labels, targets, inside = [], [], [], []
        for _ in range(8):
            jitter = rng.integers(-3, 4, size=4)
            box = np.clip(gt + jitter, 0, IM - 1)
            if box[2] <= box[0] or box[3] <= box[1]:
                box = gt.copy()
            far = rng.random() < 0.4
            if far:  # a background ROI away from the square
                bx = float(rng.integers(0, IM - 4))
                box = np.array([bx, 0, bx + 3, 3], np.float32) if y0 > 5 else \
                    np.array([bx, IM - 4, bx + 3, IM - 1], np.float32)
            label = 0 if far else cls
            w, h = box[2] - box[0] + 1, box[3] - box[1] + 1
            delta = np.array([(gt[0] + 3 - (box[0] + w / 2)) / w,
                              (gt[1] + 3 - (box[1] + h / 2)) / h,
                              np.log(6 / w), np.log(6 / h)], np.float32)
            t = np.zeros(4 * NUM_CLASSES, np.float32)
            iw = np.zeros(4 * NUM_CLASSES, np.float32)
            if label:
                t[4 * label:4 * label + 4] = delta
                iw[4 * label:4 * label + 4] = 1
            rois.append([0, *box])
            labels.append(label)
            targets.append(t)
            inside.append(iw)
        inside = np.array(inside, np.float32)
        out.append({"data": img, "rois": np.array(rois, np.float32),
                    "labels": np.array(labels, np.float32),
                    "bbox_targets": np.array(targets, np.float32),
                    "bbox_inside_weights": inside,
                    "bbox_outside_weights": (inside > 0).astype(np.float32)})
    return out


@pytest.fixture
def solver(tmp_path, monkeypatch):
    pytest.importorskip("yaml")
    (tmp_path / "pyfrcnn_layers.py").write_text(LAYERS_PY)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "train.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path / "train.prototxt"}"\nbase_lr: 0.02\nmomentum: 0.9\n'
        'weight_decay: 0.0005\nlr_policy: "fixed"\ndisplay: 0\nmax_iter: 100\n'
        'snapshot: 0\nrandom_seed: 5\nsnapshot_after_train: false\n')
    decaffe.set_random_seed(5)
    return caffe.SGDSolver(str(tmp_path / "solver.prototxt"))


def _mean_losses(net, data_layer, roidb) -> tuple[float, float]:
    data_layer.set_roidb(roidb)
    cls, box = [], []
    for _ in roidb:
        net.forward()
        cls.append(float(net.blobs["loss_cls"].data))
        box.append(float(net.blobs["loss_bbox"].data))
    return float(np.mean(cls)), float(np.mean(box))


def _python_object(layer_view):
    """The user's Python layer behind pycaffe's net.layers[i]."""
    if hasattr(layer_view, "set_roidb"):
        return layer_view
    return layer_view.layer.user


def test_tiny_fast_rcnn_trains_through_python_layers(solver):
    net = solver.net
    data_layer = _python_object(net.layers[0])
    assert type(data_layer).__name__ == "RoIDataLayer" and data_layer._num_classes == 3
    held_out = _roidb(6, seed=1)
    before = _mean_losses(net, data_layer, held_out)
    w_bbox = net.params["bbox_pred"][0].data.copy()
    data_layer.set_roidb(_roidb(24, seed=2))
    solver.step(60)
    after = _mean_losses(net, data_layer, held_out)
    assert after[0] < 0.5 * before[0], (before, after)
    assert sum(after) < 0.6 * sum(before), (before, after)
    # SmoothL1Loss's gradient (inside/outside weights) reached the regression weights
    assert np.abs(net.params["bbox_pred"][0].data - w_bbox).max() > 1e-4
    # the data layer reshaped its tops to this image's 8 ROIs; ROIPooling followed
    assert net.blobs["rois"].data.shape == (8, 5)
    assert net.blobs["pool"].data.shape == (8, 6, 2, 2)
    assert net.blobs["bbox_targets"].data.shape == (8, 4 * NUM_CLASSES)


def _layers_give_python_objects() -> bool:
    """Whether pycaffe's net.layers[i] reaches a Python layer's own attributes here."""
    net = decaffe.Net('layer { name: "x" type: "Input" top: "x" '
                      'input_param { shape { dim: 1 } } }\n'
                      'layer { name: "s" type: "Silence" bottom: "x" }', decaffe.TEST)
    try:
        from decaffe.net import LayerView
    except ImportError:  # pragma: no cover - layout changed
        return True
    return type(net.layers[0]) is not LayerView or hasattr(LayerView, "__getattr__")


@pytest.mark.skipif(not _layers_give_python_objects(),
                    reason="net.layers[i] does not yet return the Python layer object "
                           "(pycaffe helper's work, not on this branch's main yet)")
def test_set_roidb_through_net_layers_as_py_faster_rcnn_does(solver):
    # py-faster-rcnn's SolverWrapper: self.solver.net.layers[0].set_roidb(roidb)
    solver.net.layers[0].set_roidb(_roidb(4, seed=7))
    solver.step(2)
    assert solver.net.blobs["rois"].data.shape == (8, 5)
    assert np.isfinite(solver.net.blobs["loss_bbox"].data)
