"""Every net of the forks' corpus (tests/models/forks: detection, segmentation, mobile and
action-recognition repositories built on Caffe's forks) builds in both phases and runs a
forward pass. Data layers whose data is not shipped become Input layers of the shapes their
nets expect, at the smallest input size the net accepts (so the run stays fast); nets too
big for that run only with DECAFFE_SLOW=1, except one per repository."""

from __future__ import annotations

import gc
import importlib.util
import os
import re
import sys

import numpy as np
import pytest
import yaml
from fork_corpus import nets

import caffe
from decaffe.errors import DecaffeError, NetError
from decaffe.formats import prototxt
from decaffe.proto import caffe_pb2

# Data layers (their sources are not shipped) become Inputs. ImageSegData and VideoData run
# the corpus's own definitions on small data in tests/data/test_fork_seg_video_data.py,
# LaneData in tests/data/test_lane_data.py.
DATA_TYPES = {"Data", "ImageData", "AnnotatedData", "ImageSegData", "DenseImageData",
              "VideoData", "LaneData"}
# Python modules of the repositories' own code (py-faster-rcnn's lib/ and its R-FCN/PVANet
# descendants, ENet's spatial_dropout.py), not part of the corpus. The tests re-implement them
# in foreign_modules/ (put on sys.path while a net builds, as a user puts the repository's lib/
# there); py-faster-rcnn's RoIDataLayer needs a roidb from the training script, so it becomes
# an Input like the other data layers.
REPO_PYTHON_MODULES = frozenset({"rpn.proposal_layer", "roi_data_layer.layer",
                                 "rpn.anchor_target_layer", "rpn.proposal_target_layer",
                                 "spatial_dropout"})
DATA_MODULES = frozenset({"roi_data_layer.layer"})
FOREIGN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "foreign_modules")
# the foreign_modules/ folders a repository's nets find first on sys.path (its own lib/ and
# what that builds on); py-faster-rcnn's otherwise
REPO_MODULE_DIRS = {"soeaver__caffe-model": ("py-RFCN-priv", "py-faster-rcnn"),
                    "TimoSaemann__ENet": ("ENet",)}
BASE_MODULE_DIRS = ("py-faster-rcnn",)


def _module_dirs(path: str) -> list[str]:
    names = REPO_MODULE_DIRS.get(path.split("/")[0], BASE_MODULE_DIRS)
    return [os.path.join(FOREIGN_DIR, n) for n in names]


def _implemented(module: str) -> bool:
    return any(os.path.exists(os.path.join(FOREIGN_DIR, d, *module.split(".")) + ".py")
               for d in os.listdir(FOREIGN_DIR))


# modules that neither foreign_modules/ nor an Input stands for: their nets are skipped
FOREIGN_MODULES = frozenset(m for m in REPO_PYTHON_MODULES - DATA_MODULES
                            if not _implemented(m))
ROI_DATA_ROWS = 4  # ROIs per image of a Fast R-CNN RoIDataLayer's Input
GT_BOXES = 2
SLOW = pytest.mark.skipif(os.environ.get("DECAFFE_SLOW") != "1",
                          reason="a big net: set DECAFFE_SLOW=1 to run it")
SIZES = (64, 96, 128, 160, 224, 320)
HEAVY_LAYERS = 180  # bigger nets: DECAFFE_SLOW=1, but one per repo


NETS = {n.local_path: n for n in nets()}


def _sample_paths() -> set[str]:
    """One net per repository (the first with the fewest layers) always runs."""
    best: dict[str, tuple[int, str]] = {}
    for path in NETS:
        repo = path.split("/")[0]
        n = _layer_count(path)
        if repo not in best or n < best[repo][0]:
            best[repo] = (n, path)
    return {p for _, p in best.values()}


def _declared_hw(lp) -> tuple[int, int]:
    """The input (height, width) a data layer of this net was written for."""
    t = lp.transform_param
    for h, w in (("crop_h", "crop_w"), ("crop_height", "crop_width")):
        if getattr(t, h, 0) and getattr(t, w, 0):
            return getattr(t, h), getattr(t, w)
    if t.crop_size:
        return t.crop_size, t.crop_size
    for r in t.resize_param:  # the SSD fork's repeated resize policies
        if r.height and r.width:
            return r.height, r.width
    for sub in ("dense_image_data_param", "image_data_param", "video_data_param"):
        if lp.HasField(sub):
            p = getattr(lp, sub)
            if getattr(p, "new_height", 0) and getattr(p, "new_width", 0):
                return p.new_height, p.new_width
    return 224, 224


def _channels(lp) -> int:
    if lp.type == "VideoData":
        p = lp.video_data_param
        per = 2 if p.DESCRIPTOR.fields_by_name["modality"].enum_type.values_by_number[
            p.modality].name == "FLOW" else 3
        return per * max(p.new_length, 1)
    return 3


def _guidance_channels(param) -> dict[str, int]:
    """GuidedDropout guidance blob -> the channel count of the blob it guides (the num_output
    of the last layer before it that has one)."""
    out, channels = {}, {}
    for lp in param.layer:
        n = lp.inner_product_param.num_output or lp.convolution_param.num_output
        for t in lp.top:
            channels[t] = n or channels.get(lp.bottom[0] if lp.bottom else "", 0)
        if lp.type == "GuidedDropout" and len(lp.bottom) == 2:
            out[lp.bottom[1]] = channels.get(lp.bottom[0], 1)
    return out


def _resize(dims, size) -> None:
    if len(dims) == 4 and size is not None:
        dims[0], dims[2], dims[3] = 1, size[0], size[1]


def with_inputs(param, size: tuple[int, int] | None) -> caffe_pb2.NetParameter:
    """param with data layers replaced by Inputs (batch 1, images of `size`; None: the size
    the net declares) and its own 4-axis inputs resized likewise."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    guided = _guidance_channels(param)
    for lp in param.layer:
        if lp.type == "Input":
            new = out.layer.add()
            new.CopyFrom(lp)
            for s in new.input_param.shape:
                _resize(s.dim, size)
                if len(s.dim) == 2 and s.dim[1] == 5:  # ROIs: 2 instead of the 300 declared
                    s.dim[0] = min(s.dim[0], 2)
            continue
        roi_data = (lp.type == "Python" and not lp.bottom
                    and lp.python_param.module in DATA_MODULES)
        if lp.type not in DATA_TYPES and not roi_data:
            out.layer.add().CopyFrom(lp)
            continue
        h, w = size or _declared_hw(lp)
        n = max(lp.video_data_param.num_segments, 1) if lp.type == "VideoData" else 1
        inp = out.layer.add()
        inp.name, inp.type = lp.name, "Input"
        inp.top.extend(lp.top)
        inp.include.extend(lp.include)
        inp.exclude.extend(lp.exclude)
        for i, top in enumerate(lp.top):
            dims = inp.input_param.shape.add().dim
            if top in guided:  # a GuidedDropout's guidance: one score per channel
                dims.extend((n, guided[top]))
            elif roi_data and i > 0:
                dims.extend(_roi_data_dims(top, _num_classes(lp)))
            elif i == 0:
                dims.extend((n, _channels(lp), h, w))
            elif top == "seg_label":  # MobileNet-YOLO: the mask at 1/seg_scales
                f = max(lp.annotated_data_param.seg_scales, 1)
                dims.extend((1, _seg_channels(param, top), h // f, w // f))
            elif lp.type == "AnnotatedData" and lp.annotated_data_param.yolo_data_type == 1:
                # MobileNet-YOLO: 300 rows of [class, x, y, w, h] per image
                dims.extend((n, 1, 300, 5))
            elif lp.type == "LaneData":  # 5 lanes of 64 [x, y, lane] points per image
                dims.extend((n, 5, 64, 3))
            elif lp.type == "AnnotatedData":
                dims.extend((1, 1, 1, 8))
            elif lp.type == "DenseImageData":
                f = max(lp.dense_image_data_param.label_divide_factor, 1)
                dims.extend((1, 1, h // f, w // f))
            elif lp.type == "ImageSegData":
                dims.extend((1, 1, h, w))
            else:
                dims.extend((1,))
    for s in out.input_shape:
        _resize(s.dim, size)
    if size is not None and len(out.input_dim) == 4 * len(out.input):
        for k in range(len(out.input)):
            out.input_dim[4 * k] = 1
            out.input_dim[4 * k + 2], out.input_dim[4 * k + 3] = size
    return out


def _num_classes(lp) -> int:
    """A py-faster-rcnn layer's ``num_classes`` (its param_str, YAML)."""
    params = yaml.safe_load(lp.python_param.param_str) or {}
    return int(params.get("num_classes", 21))


def _roi_data_dims(top: str, num_classes: int) -> tuple[int, ...]:
    """The shape RoIDataLayer gives a top: im_info (1, 3); gt_boxes (G, 5) (x1 y1 x2 y2 class);
    Fast R-CNN's rois (R, 5), labels (R,), bbox targets and weights (R, 4 * num_classes)."""
    if top == "im_info":
        return (1, 3)
    if top == "gt_boxes":
        return (GT_BOXES, 5)
    if top == "rois":
        return (ROI_DATA_ROWS, 5)
    if top == "labels":
        return (ROI_DATA_ROWS,)
    return (ROI_DATA_ROWS, 4 * num_classes)


def _generate_anchors():
    """foreign_modules' rpn.generate_anchors, loaded from its file (it imports numpy only)."""
    spec = importlib.util.spec_from_file_location(
        "_fork_corpus_anchors", os.path.join(FOREIGN_DIR, "py-faster-rcnn", "rpn",
                                             "generate_anchors.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_anchors


def _anchor_floor(param) -> int:
    """The smallest image side at which some anchor of every AnchorTargetLayer lies inside the
    image (it labels the anchors inside only; py-faster-rcnn's images are ~600 pixels)."""
    floor = 0
    for lp in param.layer:
        if lp.type == "Python" and lp.python_param.module == "rpn.anchor_target_layer":
            p = yaml.load(lp.python_param.param_str, Loader=yaml.FullLoader)
            anchors = _generate_anchors()(p.get("base_size", 16), p.get("ratios", (0.5, 1, 2)),
                                          np.array(p.get("scales", (8, 16, 32))))
            side = np.maximum(anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1])
            floor = max(floor, int(side.min()) + 1 + 2 * p["feat_stride"])
    return floor


def _seg_channels(param, label: str) -> int:
    """A YoloSeg label has one map per channel of the prediction it is compared with (the
    num_output of the convolution that makes YoloSeg's first bottom); other uses take one."""
    made = {t: lp for lp in param.layer for t in lp.top}
    for lp in param.layer:
        if lp.type == "YoloSeg" and len(lp.bottom) > 1 and lp.bottom[1] == label:
            src = made.get(lp.bottom[0])
            if src is not None and src.type == "Convolution":
                return src.convolution_param.num_output
    return 1


def _fill(net, rng, hw) -> None:
    for lname, blobs in net.params.items():  # unit statistics: deploy nets stay finite
        t = net.layer_dict[lname].type
        if t in ("BatchNorm", "BatchNormKyle"):
            for b, v in zip(blobs, (0.0, 1.0, 1.0)):
                b.data[...] = v
        if t == "BN" and len(blobs) == 4:
            blobs[2].data[...] = 0
            blobs[3].data[...] = 1
    for name in net.inputs:
        blob = net.blobs[name]
        if name.endswith("label") and blob.data.ndim == 4 and blob.shape[-1] == 8:
            # AnnotatedData: [item, label, instance, xmin, ymin, xmax, ymax, difficult]
            blob.data[...] = [0, 1, 0, 0.1, 0.2, 0.6, 0.7, 0]
        elif name.endswith("label") and blob.data.ndim == 4 and blob.shape[-2:] == (300, 5):
            # YOLO labels: one box per image, the rest zero rows (no box)
            blob.data[...] = 0
            blob.data[:, :, 0] = [0, 0.5, 0.5, 0.3, 0.4]  # class 0: every net has it
        elif name == "gt_boxes":  # boxes inside the image, of class 1 (every net has it)
            h, w = hw
            frac = np.array([[0.1, 0.1, 0.6, 0.7], [0.4, 0.3, 0.9, 0.9]])
            frac = np.resize(frac, (blob.shape[0], 4))
            blob.data[:, :4] = np.floor(frac * [w, h, w, h])
            blob.data[:, 4] = 1
        elif "label" in name:
            blob.data[...] = rng.integers(0, 2, blob.shape)
        elif blob.data.ndim == 2 and blob.shape[1] == 5:  # ROIs: image 0, x1 y1 x2 y2
            n = blob.shape[0]
            xy = rng.uniform(0, hw[1] / 2, (n, 2))
            blob.data[...] = np.concatenate([np.zeros((n, 1)), xy, xy + hw[1] / 3], 1)
        elif name == "im_info":  # height, width, then scales (pvanet gives 6 values)
            blob.data[...] = 1.0
            blob.data[..., :2] = hw
        else:
            blob.data[...] = rng.standard_normal(blob.shape)


def _image_hw(net) -> tuple[int, int]:
    """The height and width of the net's first 4-axis input."""
    for name in net.inputs:
        if len(net.blobs[name].shape) == 4:
            return tuple(net.blobs[name].shape[2:])
    return (224, 224)


def _no_data_in(param, phase) -> bool:
    """Whether every data layer of the net is excluded from this phase."""
    data = [lp for lp in param.layer if lp.type in DATA_TYPES | {"Input"}]
    return bool(data) and all(r.phase != phase for lp in data for r in lp.include) and all(
        lp.include for lp in data)


def _made_in(param, phase) -> set[str]:
    """The blobs that layers of this phase (include/exclude phase rules) produce."""
    def in_phase(lp):
        if any(r.HasField("phase") and r.phase == phase for r in lp.exclude):
            return False
        return not lp.include or any(not r.HasField("phase") or r.phase == phase
                                     for r in lp.include)
    return {t for lp in param.layer if in_phase(lp) for t in lp.top} | set(param.input)


def _other_phase_only(param, phase, err: Exception) -> bool:
    """Whether err is Caffe's "unknown bottom blob" for a blob no layer of this phase makes: a
    file written for the other phase (e.g. pva-faster-rcnn's test.prototxt keeps a TRAIN-only
    proposal layer whose gt_boxes nothing makes), which Caffe refuses the same way."""
    m = re.search(r"unknown bottom blob '([^']+)'", str(err))
    return bool(m) and m.group(1) not in _made_in(param, phase)


def _build(param, phase):
    stages = [s for lp in param.layer for r in lp.include if r.phase == phase for s in r.stage]
    return caffe.Net(param, phase=phase, stages=stages[:1])


def _layer_count(path: str) -> int:
    text = NETS[path].text
    return text.count("layer {") + text.count("layer{") + text.count("layers {")


SAMPLE = _sample_paths()
def _heavy(path: str) -> bool:
    """Deep nets, and nets with VGG-sized (4096-wide) fully connected layers (half a GB of
    weights per build), run only with DECAFFE_SLOW=1."""
    return _layer_count(path) > HEAVY_LAYERS or "num_output: 4096" in NETS[path].text


# files Caffe itself refuses (in both phases), with the reason
CAFFE_REFUSES = {
    "soeaver__caffe-model/det/rfcn/models/coco/resnext101-32x4d/"
    "deploy_rfcn_coco_resnext101-32x4d-merge.prototxt":
        "cls_prob_reshape reshapes the 81 COCO class scores by 21 (a VOC leftover); Caffe's "
        "Reshape refuses it too",
}


def _marks(p: str) -> list:
    marks = [SLOW] if p not in SAMPLE and _heavy(p) else []
    if p in CAFFE_REFUSES:
        marks.append(pytest.mark.xfail(raises=DecaffeError, strict=True,
                                       reason=CAFFE_REFUSES[p]))
    return marks


CASES = [pytest.param(p, marks=_marks(p), id=p) for p in NETS]


@pytest.fixture
def foreign_modules(monkeypatch, request):
    """The net's repository's folders of foreign_modules/ on sys.path for one test; their
    modules leave sys.modules after it (other tests and other repositories get none)."""
    for d in reversed(_module_dirs(request.node.callspec.params["path"])):
        monkeypatch.syspath_prepend(d)
    np.random.seed(0)  # the sampling layers draw from numpy's global generator, as originals
    yield
    used = [name for name, module in sys.modules.items()
            if (getattr(module, "__file__", None) or "").startswith(FOREIGN_DIR + os.sep)]
    for name in used:
        del sys.modules[name]
    if used:  # a Python layer and its decaffe layer refer to each other: free the net now
        gc.collect()


@pytest.mark.parametrize("path", CASES)
@pytest.mark.parametrize("phase", [caffe.TRAIN, caffe.TEST], ids=["TRAIN", "TEST"])
def test_fork_net_builds_and_runs(path, phase, foreign_modules):
    text = NETS[path].text
    param = prototxt.read_net(text)
    foreign = {lp.python_param.module for lp in param.layer
               if lp.type == "Python"} & FOREIGN_MODULES
    if foreign:
        pytest.skip(f"needs the repository's Python modules {sorted(foreign)}")
    net = used = None
    last: Exception | None = None
    floor = _anchor_floor(param)
    sizes = [s for s in SIZES if s >= floor] or [-(-floor // 32) * 32]
    for used in [(s, s) for s in sizes] + [None]:
        p = with_inputs(param, used)
        try:
            net = _build(p, phase)
            break
        except DecaffeError as e:  # too small for this net: try the next size
            if "unknown layer type" in str(e):
                raise
            last = e
            gc.collect()  # the failed build's weights
    if net is None:
        if (_no_data_in(param, phase) and "unknown bottom blob" in str(last)) or (
                _other_phase_only(param, phase, last)):
            return  # a file for the other phase only: Caffe fails the same way
        raise last
    _fill(net, np.random.default_rng(0), _image_hw(net))
    loss = net._forward(0, len(net.layers) - 1)
    assert np.isfinite(loss), f"loss {loss} at input size {used}"
    assert net.outputs or any(net._blob_loss_weights)
    # decoded boxes exponentiate random-weight logits: they may overflow, as in Caffe
    boxes = {t for lp in param.layer if lp.type.endswith("DetectionOutput") for t in lp.top}
    for name in net.outputs:
        if name not in boxes:
            assert np.all(np.isfinite(net.blobs[name].data)), name
    assert sys.modules.get("caffe") is caffe


def test_the_corpus_is_all_listed():
    assert len(NETS) >= 250
    assert sum(p.startswith(r) for p in NETS for r in ("TimoSaemann", "farmingyard", "Cysu",
                                                       "yjxiong", "hujie-frank")) >= 30


@pytest.mark.parametrize("typo,want", [("ShuffleChanel", "ShuffleChannel"),
                                       ("Interpp", "Interp"),
                                       ("ConvolutionDepthWise", "ConvolutionDepthwise")])
def test_unknown_fork_layer_fails_clearly(typo, want):
    text = ('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 '
            'dim: 4 dim: 4 } } }\n'
            f'layer {{ name: "odd_layer" type: "{typo}" bottom: "x" top: "y" }}\n')
    with pytest.raises(NetError) as err:
        caffe.Net(text, caffe.TEST)
    msg = str(err.value)
    assert f"'{typo}'" in msg and "odd_layer" in msg and want in msg


def test_unknown_layer_in_a_fork_net_names_type_and_layer(tmp_path):
    text = NETS["farmingyard__ShuffleNet/shufflenet_1x_g3_deploy.prototxt"].text
    text = text.replace('type: "ShuffleChannel"', 'type: "ShuffleChannels"', 1)
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    with pytest.raises(NetError, match=r"shuffle2.*'ShuffleChannels'.*'ShuffleChannel'"):
        caffe.Net(str(path), caffe.TEST)

