"""The YOLO family of fork layers from eric612/MobileNet-YOLO: YoloDetectionOutput (YOLOv2),
Yolov3DetectionOutput, Reorg, the Yolov3 and RegionLoss (YOLOv2) training losses, and
AssistedExcitation.

Detection outputs follow the fork's Forward_cpu: boxes and scores in the bottom's precision,
one class-agnostic greedy NMS over every image's candidates (IoU ≥ nms_threshold
suppresses), rows [image_id, label, confidence, xmin, ymin, xmax, ymax] in [1, 1, R, 7] with
the fork's quirks kept: image_id is always 0 when something is detected, coordinates are
not clipped, and with nothing detected the top holds one row [i, −1, ..., −1] per image.
Candidates of equal confidence keep their enumeration order (the fork's std::sort leaves
it unspecified).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from google.protobuf.message import Message
from torch.autograd.function import FunctionCtx

from ...layer import Layer, Shape, Tops, register
from ..common import numpy_dtype


def _sigmoid(x: np.ndarray, dt: type[np.floating]) -> np.ndarray:
    return (dt(1) / (dt(1) + np.exp(-x))).astype(dt)


def _iou_center(a: np.ndarray, b: np.ndarray) -> float:
    """The fork's box_iou on (x, y, w, h) boxes, in float as its helpers compute it."""
    f = np.float32
    ax, ay, aw, ah = (f(v) for v in a)
    bx, by, bw, bh = (f(v) for v in b)

    def overlap(x1: np.float32, w1: np.float32, x2: np.float32, w2: np.float32):
        left = max(x1 - w1 / f(2), x2 - w2 / f(2))
        right = min(x1 + w1 / f(2), x2 + w2 / f(2))
        return f(right - left)

    w = overlap(ax, aw, bx, bw)
    h = overlap(ay, ah, by, bh)
    inter = f(0) if (w < 0 or h < 0) else f(w * h)
    union = f(aw * ah + bw * bh - inter)
    return float(inter / union) if union != 0 else float("nan")


def _nms_and_rows(boxes: list, conf: list, cls: list, thresh: float, num_images: int,
                  dt: type[np.floating]) -> np.ndarray:
    """Sort by confidence (stable), greedy class-agnostic NMS, the fork's output rows."""
    if not boxes:
        out = np.full((num_images, 7), -1, dt)
        out[:, 0] = np.arange(num_images)
        return out.reshape(1, 1, num_images, 7)
    order = sorted(range(len(conf)), key=lambda i: -conf[i])
    boxes = [boxes[i] for i in order]
    conf = [conf[i] for i in order]
    cls = [cls[i] for i in order]
    dead = np.zeros(len(boxes), bool)
    for i in range(len(boxes) - 1):
        if dead[i]:
            continue
        for j in range(i + 1, len(boxes)):
            if not dead[j] and _iou_center(boxes[i], boxes[j]) >= thresh:
                dead[j] = True
    kept = [i for i in range(len(boxes)) if not dead[i]]
    out = np.zeros((len(kept), 7), dt)
    half = np.float32(2.0)
    for r, i in enumerate(kept):
        x, y, w, h = (np.float32(v) for v in boxes[i])
        out[r] = [0, cls[i] + 1, conf[i], x - w / half, y - h / half, x + w / half,
                  y + h / half]
    return out.reshape(1, 1, len(kept), 7)


class _DetectionOutput(Layer):
    exact_tops = 1

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False

    def _read_common(self, p: Message, f: str) -> None:
        """The fields both YOLO detection outputs read alike (f: the message's name)."""
        self.check(p.HasField("num_classes"), "Must specify num_classes", f"{f}.num_classes")
        self.num_classes = int(p.num_classes)
        self.num_box = int(p.num_box)
        self.confidence_threshold = p.confidence_threshold
        self.nms_threshold = p.nms_threshold
        self.biases = list(p.biases)

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        for i, s in enumerate(bottom_shapes):
            self.check(len(s) == 4 and s[2] == s[3], f"bottom '{self.bottom_names[i]}' must be "
                       f"N x C x S x S (the fork reads a square map), has shape {tuple(s)}")
        return [(1, 1, 1, 7)]


# ------------------------------------------------------------------------------------------
# YoloDetectionOutput (YOLOv2)
# ------------------------------------------------------------------------------------------
@register("YoloDetectionOutput")
class YoloDetectionOutputLayer(_DetectionOutput):
    """YOLOv2 detections from one or two maps, after class-agnostic greedy NMS.

    Bottoms: one or two maps, N×num_box·(5 + num_classes)×S×S (square; per anchor x, y, w,
    h, objectness, class scores). No gradient (no backward).
    Tops: 1×1×D×7, rows [image_id, label, score, xmin, ymin, xmax, ymax] (image_id 0 for
    every detection, label = class + 1, corners normalised and not clipped); with no
    detection one row [n, −1, −1, −1, −1, −1, −1] per image n. D depends on the data.
    Blobs: none.
    Params: yolo_detection_output_param (YoloDetectionOutputParameter): num_classes
    (required, though the schema's default is 20), num_box (default 5),
    confidence_threshold (default 0.01), nms_threshold (default 0.45), biases (2·num_box
    anchor sizes in cells); side, coords and label_map_file are not read.
    Source: eric612/MobileNet-YOLO src/caffe/layers/yolo_detection_output_layer.cpp.

    For anchor n of cell (row j, column i) with values t: x = (i + σ(t0))/S,
    y = (j + σ(t1))/S, w = exp(t2)·biases[2n]/S, h = exp(t3)·biases[2n+1]/S; the class is the
    argmax of softmax(t5...) (first maximum), confidence σ(t4)·its probability, kept when
    ≥ confidence_threshold. Candidates are sorted by confidence (stable: equal ones keep
    enumeration order) and a box is suppressed by an earlier kept one at IoU ≥ nms_threshold.
    """

    min_bottoms = 1
    max_bottoms = 2

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.yolo_detection_output_param
        f = "yolo_detection_output_param"
        self._read_common(p, f)
        self.check(len(self.biases) >= 2 * self.num_box,
                   f"needs 2·num_box = {2 * self.num_box} biases, has {len(self.biases)}",
                   f"{f}.biases")

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        out = super().reshape(bottom_shapes)
        for i, s in enumerate(bottom_shapes):
            self.check(s[1] % self.num_box == 0 and s[1] // self.num_box >= 5 + self.num_classes,
                       f"bottom '{self.bottom_names[i]}' has {s[1]} channels; num_box "
                       f"({self.num_box}) × (5 + num_classes ({self.num_classes})) needed")
        return out

    def forward(self, *bottoms: torch.Tensor) -> Tops:
        dt = numpy_dtype(bottoms[0])
        boxes, conf, cls = [], [], []
        thresh = dt(self.confidence_threshold)
        for bottom in bottoms:
            x = bottom.detach().cpu().numpy().astype(dt, copy=False)
            n, c, side, _ = x.shape
            per = c // self.num_box
            v = x.reshape(n, self.num_box, per, side, side)
            for b in range(n):
                for j in range(side):
                    for i in range(side):
                        for a in range(self.num_box):
                            t = v[b, a, :, j, i]
                            logits = t[5:5 + self.num_classes]
                            e = np.exp(logits - logits.max()).astype(dt)
                            prob = (e / e.sum(dtype=dt)).astype(dt)
                            k = int(np.argmax(prob))
                            score = dt(_sigmoid(t[4], dt) * prob[k])
                            if score >= thresh:
                                boxes.append(((dt(i) + _sigmoid(t[0], dt)) / dt(side),
                                              (dt(j) + _sigmoid(t[1], dt)) / dt(side),
                                              np.exp(t[2]) * dt(self.biases[2 * a]) / dt(side),
                                              np.exp(t[3]) * dt(self.biases[2 * a + 1])
                                              / dt(side)))
                                conf.append(score)
                                cls.append(k)
        rows = _nms_and_rows(boxes, conf, cls, float(self.nms_threshold), bottoms[0].shape[0], dt)
        return torch.as_tensor(rows, dtype=bottoms[0].dtype, device=bottoms[0].device)


# ------------------------------------------------------------------------------------------
# Yolov3DetectionOutput
# ------------------------------------------------------------------------------------------
@register("Yolov3DetectionOutput")
class Yolov3DetectionOutputLayer(_DetectionOutput):
    """YOLOv3 detections from mask_group_num maps, after class-agnostic greedy NMS.

    Bottoms: mask_group_num maps, N×C×S×S (square, each its own S) with
    C >= num_box·(5 + num_classes). No gradient (no backward).
    Tops: 1×1×D×7 rows as YoloDetectionOutput's (image_id 0, label = class + 1, unclipped
    corners; one row [n, −1, ...] per image when nothing is detected). D depends on the data.
    Blobs: none.
    Params: yolov3_detection_output_param (Yolov3DetectionOutputParameter): num_classes
    (required, though the schema's default is 20), num_box (default 3),
    confidence_threshold (default 0.01), nms_threshold (default 0.45), biases (anchor sizes
    in input pixels), anchors_scale (one stride per map), mask_group_num (default 2; must
    equal the number of bottoms), mask (anchor indices, mask_group_num groups).
    Source: eric612/MobileNet-YOLO src/caffe/layers/yolov3_detection_output_layer.cpp.

    Map t uses the anchors mask[t·G + n] (G = mask size / mask_group_num) and stride
    anchors_scale[t]: x = (column + σ(t0))/S, y = (row + σ(t1))/S,
    w = exp(t2)·biases[2m]/(S·anchors_scale[t]), likewise h; every class whose
    σ(class)·σ(t4) exceeds confidence_threshold gives a candidate of that class. Candidates
    are sorted by confidence (stable) and suppressed at IoU ≥ nms_threshold.
    """

    min_bottoms = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.yolov3_detection_output_param
        f = "yolov3_detection_output_param"
        self._read_common(p, f)
        self.mask = [int(m) for m in p.mask]
        self.anchors_scale = [int(s) for s in p.anchors_scale]
        group_num = int(p.mask_group_num)
        self.check(group_num > 0, "must be > 0", f"{f}.mask_group_num")
        self.check(len(bottom_shapes) == group_num, f"{len(bottom_shapes)} bottoms given, "
                   f"mask_group_num is {group_num}: they must be equal", f"{f}.mask_group_num")
        self.groups = len(self.mask) // group_num
        self.check(len(self.anchors_scale) >= group_num,
                   f"needs {group_num} anchors_scale values, has {len(self.anchors_scale)}",
                   f"{f}.anchors_scale")
        need = (group_num - 1) * self.groups + self.num_box
        self.check(len(self.mask) >= need, f"needs at least {need} mask values, has "
                   f"{len(self.mask)}", f"{f}.mask")
        top_anchor = max(self.mask[:need]) if need else -1
        self.check(len(self.biases) >= 2 * (top_anchor + 1), f"mask names anchor "
                   f"{top_anchor}, biases hold {len(self.biases) // 2}", f"{f}.biases")

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        out = super().reshape(bottom_shapes)
        length = 5 + self.num_classes
        for i, s in enumerate(bottom_shapes):
            self.check(s[1] >= self.num_box * length, f"bottom '{self.bottom_names[i]}' has "
                       f"{s[1]} channels; num_box ({self.num_box}) × (5 + num_classes "
                       f"({self.num_classes})) = {self.num_box * length} needed")
        return out

    def forward(self, *bottoms: torch.Tensor) -> Tops:
        dt = numpy_dtype(bottoms[0])
        length = 5 + self.num_classes
        boxes, conf, cls = [], [], []
        thresh = dt(self.confidence_threshold)
        for t, bottom in enumerate(bottoms):
            x = bottom.detach().cpu().numpy().astype(dt, copy=False)
            n, _, side, _ = x.shape
            scale = dt(side * self.anchors_scale[t])
            flat = x.reshape(n, -1)
            for b in range(n):
                v = flat[b, :self.num_box * length * side * side].reshape(
                    self.num_box, length, side * side)
                sig = _sigmoid(v, dt)
                for s in range(side * side):
                    row, col = divmod(s, side)
                    for a in range(self.num_box):
                        m = self.mask[a + t * self.groups]
                        obj = sig[a, 4, s]
                        scores = (sig[a, 5:, s] * obj).astype(dt)
                        hits = np.nonzero(scores > thresh)[0]
                        if hits.size == 0:
                            continue
                        box = ((dt(col) + sig[a, 0, s]) / dt(side),
                               (dt(row) + sig[a, 1, s]) / dt(side),
                               np.exp(v[a, 2, s]) * dt(self.biases[2 * m]) / scale,
                               np.exp(v[a, 3, s]) * dt(self.biases[2 * m + 1]) / scale)
                        for k in hits:
                            boxes.append(box)
                            conf.append(scores[k])
                            cls.append(int(k))
        rows = _nms_and_rows(boxes, conf, cls, float(self.nms_threshold), bottoms[-1].shape[0],
                             dt)
        return torch.as_tensor(rows, dtype=bottoms[0].dtype, device=bottoms[0].device)


# ------------------------------------------------------------------------------------------
# Reorg
# ------------------------------------------------------------------------------------------
@register("Reorg")
class ReorgLayer(Layer):
    """Darknet's reorg (YOLOv2's passthrough), as the fork's reorg_cpu computes it.

    Bottoms: x, N×C×H×W.
    Tops: reverse false: N×C·s²×H/s×W/s; reverse true: N×C/s²×H·s×W·s.
    Blobs: none.
    Params: reorg_param (ReorgParameter): stride s (required, > 0), reverse (default false).
    Source: eric612/MobileNet-YOLO src/caffe/layers/reorg_layer.cpp (darknet's reorg_cpu).

    reverse false: the bottom's memory is read as (N, C/s², H·s, W·s) and output channel
    k = (dy·s + dx)·C/s² + c2 at (y, x) takes position (c2, y·s + dy, x·s + dx) of it —
    darknet's layout, not a plain space-to-depth. reverse true is the inverse permutation.
    Backward is the inverse permutation of the diff. C must divide by s² and (reverse false)
    H, W by s.
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.reorg_param
        self.check(p.HasField("stride") and p.stride > 0, "stride must be given and > 0",
                   "reorg_param.stride")
        self.stride = int(p.stride)
        self.reverse = bool(p.reverse)

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        shape = tuple(bottom_shapes[0])
        self.check(len(shape) == 4, f"bottom must be N x C x H x W, has shape {shape}")
        n, c, h, w = shape
        s = self.stride
        self.check(c % (s * s) == 0, f"channels ({c}) must be a multiple of stride² ({s * s})",
                   "reorg_param.stride")
        if self.reverse:
            return [(n, c // (s * s), h * s, w * s)]
        self.check(h % s == 0 and w % s == 0, f"height and width ({h}, {w}) must be multiples "
                   f"of the stride ({s})", "reorg_param.stride")
        return [(n, c * s * s, h // s, w // s)]

    def forward(self, x: torch.Tensor) -> Tops:
        n, c, h, w = x.shape
        s = self.stride
        oc = c // (s * s)
        # darknet: top[b, (dy·s + dx)·oc + c2, y, x] = B[b, c2, y·s + dy, x·s + dx] where B is
        # the bottom's memory viewed as (N, C/s², H·s, W·s) and (y, x) range over (H, W)
        if not self.reverse:
            b = x.reshape(n, oc, h, s, w, s)
            top = b.permute(0, 3, 5, 1, 2, 4).reshape(n, c, h, w)
            return top.reshape(n, c * s * s, h // s, w // s)
        t = x.reshape(n, s, s, oc, h, w)
        return t.permute(0, 3, 4, 1, 5, 2).reshape(n, oc, h * s, w * s)



# ------------------------------------------------------------------------------------------
# Yolov3 (the training loss)
# ------------------------------------------------------------------------------------------
def _iou_center_vec(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The fork's box_iou between (…, 4) centre-size boxes, broadcast, in float32."""
    f = np.float32
    a = a.astype(f)
    b = b.astype(f)
    two = f(2)

    def overlap(x1: np.ndarray, w1: np.ndarray, x2: np.ndarray, w2: np.ndarray):
        left = np.maximum(x1 - w1 / two, x2 - w2 / two)
        right = np.minimum(x1 + w1 / two, x2 + w2 / two)
        return right - left

    w = overlap(a[..., 0], a[..., 2], b[..., 0], b[..., 2])
    h = overlap(a[..., 1], a[..., 3], b[..., 1], b[..., 3])
    inter = np.where((w < 0) | (h < 0), f(0), w * h).astype(f)
    union = (a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter).astype(f)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (inter / union).astype(f)


MAX_TRUTHS = 300  # rows of [class, x, y, w, h] per image in the fork's YOLO labels


def _check_truths(layer: Layer, label: tuple, num: int) -> None:
    """The label bottom (index 1) must hold MAX_TRUTHS rows of 5 values for each of num
    images, as the fork's loops read it."""
    layer.check(len(label) >= 1 and label[0] == num
                and math.prod(label[1:]) == MAX_TRUTHS * 5,
                f"bottom '{layer.bottom_names[1]}' must hold {MAX_TRUTHS} rows of 5 values per "
                f"image, has shape {label}")


class _DeltaLoss(torch.autograd.Function):
    """Forward: the precomputed loss; backward: loss_weight · the fork's delta (its own
    gradient, not the derivative of its loss)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, loss: torch.Tensor, grad: torch.Tensor):
        ctx.save_for_backward(grad)
        return loss.clone()

    @staticmethod
    def backward(ctx: FunctionCtx, g: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return g * grad, None, None


@register("Yolov3")
class Yolov3Layer(Layer):
    """YOLOv3's training loss for one scale, with the fork's own gradient.

    Bottoms: predictions, N×num·(5 + num_class)×S×S (square); labels, N×300·5 values: per
    image up to 300 rows [class, x, y, w, h] (normalised centre-size) ended by a row whose x
    (for the no-object term) or w (for the assignment) is 0. The labels get no gradient.
    Tops: loss, a scalar (shape ()): Σ delta² / N; loss_weight 1 by default (a loss layer).
    Blobs: none.
    Params: yolov3_param (Yolov3Parameter): num_class (default 20), num (default 5; anchors
    at this scale), biases (anchor (w, h) pairs in input pixels), mask (the num anchor
    indices of this scale), anchors_scale (default 32; the stride), object_scale (default 1),
    class_scale (default 1), coord_scale (default 5), thresh (default 0.2),
    use_logic_gradient (default false); use_focal_loss is refused; side and noobject_scale
    are not read.
    Source: eric612/MobileNet-YOLO src/caffe/layers/yolov3_layer.cpp.

    delta is σ(objectness) for every anchor whose best IoU with a truth is ≤ thresh; for each
    truth, the anchor of the mask whose prior fits its size best at the truth's cell gets
    −coord_scale·(2 − w·h)·(target − output) on its σ(x), σ(y), raw w, h,
    −(1 − σ(objectness)) (× object_scale with use_logic_gradient) and −class_scale·(onehot −
    σ(class)) (a second truth on the same anchor only sets 1 − σ of its own class). The
    backward is loss_weight/N · delta, times σ' on the logistic channels with
    use_logic_gradient — the fork's gradient, which is not the derivative of its loss, so
    there is no finite-difference check of it.
    """

    exact_bottoms = 2
    exact_tops = 1
    is_loss = True
    max_truths = MAX_TRUTHS

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index == 0

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.yolov3_param
        f = "yolov3_param"
        self.num_class = int(p.num_class)
        self.num = int(p.num)
        self.anchors_scale = int(p.anchors_scale)
        self.object_scale = float(np.float32(p.object_scale))
        self.class_scale = float(np.float32(p.class_scale))
        self.coord_scale = float(np.float32(p.coord_scale))
        self.thresh = float(np.float32(p.thresh))
        self.use_logic_gradient = bool(p.use_logic_gradient)
        self.check(not p.use_focal_loss, "use_focal_loss is not supported", f"{f}.use_focal_loss")
        self.biases = np.asarray(p.biases, np.float32)
        self.mask = [int(m) for m in p.mask]
        self.check(len(self.mask) >= self.num, f"needs num ({self.num}) mask values, has "
                   f"{len(self.mask)}", f"{f}.mask")
        self.check(self.biases.size >= 2 and self.biases.size % 2 == 0
                   and max(self.mask[:self.num], default=0) < self.biases.size // 2,
                   "biases must hold a (w, h) pair for every anchor the mask names",
                   f"{f}.biases")

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        x, label = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        self.check(len(x) == 4 and x[2] == x[3], f"bottom '{self.bottom_names[0]}' must be "
                   f"N x C x S x S, has shape {x}")
        length = 5 + self.num_class
        self.check(x[1] == self.num * length, f"bottom '{self.bottom_names[0]}' has {x[1]} "
                   f"channels, num·(5 + num_class) = {self.num * length} expected")
        _check_truths(self, label, x[0])
        return [()]

    def _delta(self, x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(delta, swap) as the fork's Forward_cpu leaves diff_ and swap_."""
        f = np.float32
        n, _, side, _ = x.shape
        length = 5 + self.num_class
        v = x.reshape(n, self.num, length, side * side)
        swap = v.copy()
        logistic = np.ones(length, bool)
        logistic[2:4] = False
        swap[:, :, logistic] = (f(1) / (f(1) + np.exp(-v[:, :, logistic]))).astype(f)
        delta = np.zeros_like(swap)
        scale_wh = f(side * self.anchors_scale)
        s_idx = np.arange(side * side)
        col, row = (s_idx % side).astype(f), (s_idx // side).astype(f)
        anchors = np.asarray(self.mask[:self.num])
        bw = self.biases[2 * anchors][:, None]
        bh = self.biases[2 * anchors + 1][:, None]
        for b in range(n):
            lab = labels[b].reshape(self.max_truths, 5)
            # the no-object term: anchors whose best IoU with a truth is at most thresh
            nx = next((t for t in range(self.max_truths) if not lab[t, 1]), self.max_truths)
            pred = np.stack([(col[None] + swap[b, :, 0]) / f(side),
                             (row[None] + swap[b, :, 1]) / f(side),
                             np.exp(swap[b, :, 2]) * bw / scale_wh,
                             np.exp(swap[b, :, 3]) * bh / scale_wh], axis=-1)  # (num, S², 4)
            if nx:
                ious = _iou_center_vec(pred[:, :, None, :], lab[None, None, :nx, 1:5])
                best = np.maximum(np.nanmax(np.where(np.isnan(ious), 0, ious), axis=2), 0)
            else:
                best = np.zeros((self.num, side * side), f)
            delta[b, :, 4] = np.where(best > f(self.thresh), f(0), swap[b, :, 4])
            # each truth trains the mask's anchor whose prior fits it best, at its cell
            for t in range(self.max_truths):
                cls, tx, ty, tw, th = (float(v_) for v_ in lab[t])
                if not f(tw):
                    break
                i, j = int(f(tx) * side), int(f(ty) * side)
                pos = j * side + i
                priors = np.stack([np.zeros(self.biases.size // 2, f),
                                   np.zeros(self.biases.size // 2, f),
                                   self.biases[0::2] / scale_wh,
                                   self.biases[1::2] / scale_wh], axis=-1)
                ious = _iou_center_vec(priors, np.array([0, 0, tw, th], f)[None])
                best_n, best_iou = -1, f(0)
                for k, iou in enumerate(ious):
                    if iou > best_iou:
                        best_n, best_iou = k, iou
                if best_n not in self.mask[:self.num]:
                    continue
                a = self.mask[:self.num].index(best_n)
                m = self.mask[a]
                scale = f(self.coord_scale) * (f(2) - f(tw) * f(th))
                targets = (f(tx) * f(side) - f(i), f(ty) * f(side) - f(j),
                           f(np.log(f(tw) * scale_wh / self.biases[2 * m])),
                           f(np.log(f(th) * scale_wh / self.biases[2 * m + 1])))
                for c in range(4):
                    delta[b, a, c, pos] = -scale * (targets[c] - swap[b, a, c, pos])
                obj = -(f(1) - swap[b, a, 4, pos])
                delta[b, a, 4, pos] = obj * f(self.object_scale) if self.use_logic_gradient \
                    else obj
                k = int(cls)
                if not 0 <= k < self.num_class:
                    raise self.error(f"image {b}, truth {t}: class {cls:g} is outside [0, "
                                     f"{self.num_class})")
                if delta[b, a, 5, pos]:
                    delta[b, a, 5 + k, pos] = f(1) - swap[b, a, 5 + k, pos]
                else:
                    onehot = (np.arange(self.num_class) == k).astype(f)
                    delta[b, a, 5:, pos] = -f(self.class_scale) * (onehot - swap[b, a, 5:, pos])
        return delta, swap

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> Tops:
        if torch.is_grad_enabled() and label.requires_grad:
            raise self.error(f"{self.type} Layer cannot backpropagate to label inputs.",
                             "propagate_down")
        dt = numpy_dtype(x)
        xs = x.detach().cpu().numpy().astype(np.float32)
        labels = label.detach().reshape(x.shape[0], -1).cpu().numpy().astype(np.float32)
        delta, swap = self._delta(xs, labels)
        n = x.shape[0]
        loss = torch.as_tensor(np.sum(delta.astype(dt) ** 2) / n, dtype=x.dtype, device=x.device)
        grad = delta.copy()
        if self.use_logic_gradient:
            logistic = np.ones(5 + self.num_class, bool)
            logistic[2:4] = False
            grad[:, :, logistic] *= (np.float32(1) - swap[:, :, logistic]) * swap[:, :, logistic]
        grad_t = torch.as_tensor(grad.reshape(x.shape) / n, dtype=x.dtype, device=x.device)
        if torch.is_grad_enabled() and x.requires_grad:
            return _DeltaLoss.apply(x, loss, grad_t)
        return loss


# ------------------------------------------------------------------------------------------
# RegionLoss (YOLOv2's training loss)
# ------------------------------------------------------------------------------------------
@register("RegionLoss")
class RegionLossLayer(Layer):
    """YOLOv2's training loss (RegionLoss), with the fork's own gradient.

    Bottoms: predictions, N×num·(5 + num_class)×S×S (square) — per anchor x, y, w, h (raw),
    objectness (logistic) and class scores (softmax); labels as for Yolov3 (N×300·5: rows
    [class, x, y, w, h] per image). The labels get no gradient.
    Tops: loss, a scalar (shape ()): Σ delta² / N; loss_weight 1 by default (a loss layer).
    Blobs: none.
    Params: region_loss_param (RegionLossParameter): num_class (default 20), num (default
    5), biases (anchor sizes in cells; fewer than 10 values read as ten zeros), bias_match
    (default 1), rescore (default 1), object_scale (default 1), noobject_scale (default 0.5),
    class_scale (default 1), coord_scale (default 5), thresh (default 0.2), coords (must be
    4); class_map is refused; side, softmax, jitter, absolute, random and softmax_tree are
    not read.
    Source: eric612/MobileNet-YOLO src/caffe/layers/region_loss_layer.cpp.

    delta: noobject_scale·σo·σo' for anchors whose best IoU with a truth is ≤ thresh; while
    fewer than 12800/N passes have run (a count shared by every RegionLoss layer of the
    process, as the fork's global `iter`), 0.01-weighted pulls of every anchor towards its
    prior at its cell's centre; for each truth, the anchor at its cell whose prior
    (bias_match) or prediction fits its size best gets coordinate deltas (σ' included for x,
    y) scaled by coord_scale (× (2 − w·h) unless rescore), objectness object_scale·(IoU or
    1 − σo)·σo', and class_scale·(softmax − onehot). The backward is loss_weight/N · delta,
    the fork's own gradient.
    """

    exact_bottoms = 2
    exact_tops = 1
    is_loss = True
    max_truths = MAX_TRUTHS
    warmup_passes = 12800
    passes_run = 0  # the fork's process-wide `iter`

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index == 0

    def setup(self, bottom_shapes: list[Shape]) -> None:
        p = self.lp.region_loss_param
        f = "region_loss_param"
        self.check(not p.class_map, "class_map files are not supported", f"{f}.class_map")
        self.check(p.coords == 4, "only 4 coordinates are supported (the fork's layout)",
                   f"{f}.coords")
        self.num_class = int(p.num_class)
        self.num = int(p.num)
        self.bias_match = bool(p.bias_match)
        self.rescore = bool(p.rescore)
        self.object_scale = float(np.float32(p.object_scale))
        self.noobject_scale = float(np.float32(p.noobject_scale))
        self.class_scale = float(np.float32(p.class_scale))
        self.coord_scale = float(np.float32(p.coord_scale))
        self.thresh = float(np.float32(p.thresh))
        biases = list(p.biases) if len(p.biases) >= 10 else [0.0] * 10
        self.biases = np.asarray(biases, np.float32)
        self.check(self.biases.size >= 2 * self.num, f"needs 2·num = {2 * self.num} biases, "
                   f"has {self.biases.size}", f"{f}.biases")

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        x, label = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        self.check(len(x) == 4 and x[2] == x[3], f"bottom '{self.bottom_names[0]}' must be "
                   f"N x C x S x S, has shape {x}")
        length = 5 + self.num_class
        self.check(x[1] == self.num * length, f"bottom '{self.bottom_names[0]}' has {x[1]} "
                   f"channels, num·(5 + num_class) = {self.num * length} expected")
        _check_truths(self, label, x[0])
        return [()]

    def _delta(self, x: np.ndarray, labels: np.ndarray, warmup: bool) -> np.ndarray:
        f = np.float32
        n, _, side, _ = x.shape
        length = 5 + self.num_class
        v = x.reshape(n, self.num, length, side * side).astype(f)
        obj = (f(1) / (f(1) + np.exp(-v[:, :, 4]))).astype(f)
        cls = v[:, :, 5:]
        e = np.exp(cls - cls.max(axis=2, keepdims=True)).astype(f)
        prob = (e / e.sum(axis=2, keepdims=True)).astype(f)
        sx = (f(1) / (f(1) + np.exp(-v[:, :, 0]))).astype(f)
        sy = (f(1) / (f(1) + np.exp(-v[:, :, 1]))).astype(f)
        delta = np.zeros_like(v)
        s_idx = np.arange(side * side)
        col, row = (s_idx % side).astype(f), (s_idx // side).astype(f)
        bw = self.biases[0:2 * self.num:2][:, None]
        bh = self.biases[1:2 * self.num:2][:, None]
        fs = f(side)
        for b in range(n):
            lab = labels[b].reshape(self.max_truths, 5)
            nx = next((t for t in range(self.max_truths) if not lab[t, 1]), self.max_truths)
            pred = np.stack([(col[None] + sx[b]) / fs, (row[None] + sy[b]) / fs,
                             np.exp(v[b, :, 2]) * bw / fs, np.exp(v[b, :, 3]) * bh / fs],
                            axis=-1)
            if nx:
                ious = _iou_center_vec(pred[:, :, None, :], lab[None, None, :nx, 1:5])
                best = np.maximum(np.nanmax(np.where(np.isnan(ious), 0, ious), axis=2), 0)
            else:
                best = np.zeros((self.num, side * side), f)
            o = obj[b]
            delta[b, :, 4] = np.where(best > f(self.thresh), f(0),
                                      -f(self.noobject_scale) * (f(0) - o) * ((f(1) - o) * o))
            if warmup:  # pull every anchor towards its prior at its cell's centre
                s = f(0.01)
                tx = ((col[None] + 0.5) / side).astype(f) * fs - col[None]
                ty = ((row[None] + 0.5) / side).astype(f) * fs - row[None]
                tw = np.log((bw / fs).astype(f) * fs / bw).astype(f)
                th = np.log((bh / fs).astype(f) * fs / bh).astype(f)
                delta[b, :, 0] = -s * (tx - sx[b]) * sx[b] * (f(1) - sx[b])
                delta[b, :, 1] = -s * (ty - sy[b]) * sy[b] * (f(1) - sy[b])
                delta[b, :, 2] = -s * (tw - v[b, :, 2])
                delta[b, :, 3] = -s * (th - v[b, :, 3])
            for t in range(self.max_truths):
                label_cls, tx0, ty0, tw0, th0 = (f(val) for val in lab[t])
                if not tw0:
                    break
                k = int(label_cls)
                if not 0 <= k < self.num_class:
                    raise self.error(f"image {b}, truth {t}: class {float(label_cls):g} is "
                                     f"outside [0, {self.num_class})")
                i, j = int(tx0 * fs), int(ty0 * fs)
                pos = j * side + i
                best_n, best_iou = 0, f(0)
                for a in range(self.num):
                    if self.bias_match:
                        pw, ph = bw[a, 0] / fs, bh[a, 0] / fs
                    else:
                        pw, ph = pred[a, pos, 2], pred[a, pos, 3]
                    iou = _iou_center_vec(np.array([0, 0, pw, ph], f),
                                          np.array([0, 0, tw0, th0], f))
                    if iou > best_iou:
                        best_n, best_iou = a, iou
                a = best_n
                scale = f(self.coord_scale) if self.rescore else \
                    f(self.coord_scale) * (f(2) - tw0 * th0)
                iou = _iou_center_vec(pred[a, pos], np.array([tx0, ty0, tw0, th0], f))
                gx, gy = sx[b, a, pos], sy[b, a, pos]
                delta[b, a, 0, pos] = -scale * (tx0 * fs - f(i) - gx) * gx * (f(1) - gx)
                delta[b, a, 1, pos] = -scale * (ty0 * fs - f(j) - gy) * gy * (f(1) - gy)
                delta[b, a, 2, pos] = -scale * (f(np.log(tw0 * fs / bw[a, 0])) - v[b, a, 2, pos])
                delta[b, a, 3, pos] = -scale * (f(np.log(th0 * fs / bh[a, 0])) - v[b, a, 3, pos])
                oa = obj[b, a, pos]
                target = iou if self.rescore else f(1)
                delta[b, a, 4, pos] = -f(self.object_scale) * (target - oa) * ((f(1) - oa) * oa)
                onehot = (np.arange(self.num_class) == k).astype(f)
                delta[b, a, 5:, pos] = -f(self.class_scale) * (onehot - prob[b, a, :, pos])
        return delta

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> Tops:
        if torch.is_grad_enabled() and label.requires_grad:
            raise self.error(f"{self.type} Layer cannot backpropagate to label inputs.",
                             "propagate_down")
        n = x.shape[0]
        warmup = RegionLossLayer.passes_run < self.warmup_passes // n
        xs = x.detach().cpu().numpy().astype(np.float32)
        labels = label.detach().reshape(n, -1).cpu().numpy().astype(np.float32)
        delta = self._delta(xs, labels, warmup)
        RegionLossLayer.passes_run += 1
        dt = numpy_dtype(x)
        loss = torch.as_tensor(np.sum(delta.astype(dt) ** 2) / n, dtype=x.dtype, device=x.device)
        grad = torch.as_tensor(delta.reshape(x.shape) / n, dtype=x.dtype, device=x.device)
        if torch.is_grad_enabled() and x.requires_grad:
            return _DeltaLoss.apply(x, loss, grad)
        return loss


_INT_MIN = -(2**31)


def _c_int(v: float) -> int:
    """C's (int) cast of a double: truncation toward zero; NaN and values outside int come
    out as INT_MIN, as x86's cvttsd2si gives them (the cast is undefined in C++)."""
    if not math.isfinite(v) or not -2**31 <= v < 2**31:
        return _INT_MIN
    return math.trunc(v)


def _bound(a: int, hi: int) -> int:
    """The fork's BOUND(a, 0, hi)."""
    return 0 if a < 0 else hi if a >= hi else a


@register("AssistedExcitation")
class AssistedExcitationLayer(Layer):
    """Assisted Excitation (Derakhshani et al. 2019): adds α·map inside the truth boxes.

    Bottoms: x, N×C×H×W features; labels as for Yolov3 (N×300·5: rows [class, x, y, w, h],
    normalised centre-size, ended by a row whose x is 0); map, N×H×W (any shape of N·H·W
    values; in the fork's nets the channel mean of the features, from Permute + Reduction).
    Labels and the map get no gradient.
    Tops: y, N×C×H×W.
    Blobs: none.
    Params: none (α comes from the solver's iteration, Layer::set_iter).
    Source: eric612/MobileNet-YOLO src/caffe/layers/assisted_excitation_layer.cpp.

    Inside every truth box (corners (int)((x ∓ w/2)·W + 0.5) and likewise in y, clipped to
    [0, W] and [0, H]) the top is x plus α times the map, on every channel, with
    α = cos(iter/max_iter · π/2) (α = 1 for a net that no solver steps, where the fork reads
    an unset iteration). As in the fork, only the first image of a batch is excited: both of
    its kernels add the mask from the buffer's start, which is image 0's region and is zero
    for images 1..N−1. Backward: the features' gradient is the top's.
    """

    exact_bottoms = 3
    exact_tops = 1
    max_truths = MAX_TRUTHS

    def setup(self, bottom_shapes: list[Shape]) -> None:
        self._iter, self._max_iter = 0, 0

    def set_iter(self, iteration: int, max_iter: int) -> None:
        self._iter, self._max_iter = iteration, max_iter

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index == 0

    def alpha(self) -> np.float32:
        """α = cos(iter/max_iter · π/2): the quotient in float, the cosine in double."""
        if self._max_iter == 0:
            return np.float32(1)
        frac = float(np.float32(self._iter) / np.float32(self._max_iter))
        return np.float32(math.cos(frac * math.pi / 2.0))

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        x, label, mean = (tuple(s) for s in bottom_shapes)
        self.check(len(x) == 4, f"bottom '{self.bottom_names[0]}' must be N x C x H x W, "
                   f"has shape {x}")
        _check_truths(self, label, x[0])
        self.check(len(mean) >= 1 and mean[0] == x[0] and math.prod(mean[1:]) == x[2] * x[3],
                   f"bottom '{self.bottom_names[2]}' must hold one {x[2]} x {x[3]} map per "
                   f"image, has shape {mean}")
        return [x]

    def forward(self, x: torch.Tensor, label: torch.Tensor, mean: torch.Tensor) -> Tops:
        if x.device.type == "meta":
            return x.clone()
        n, _, h, w = x.shape
        dt = numpy_dtype(x)
        mask = np.zeros((h, w), dt)
        if n:
            lab = label[0].detach().cpu().numpy().astype(dt, copy=False).reshape(
                self.max_truths, 5)
            m0 = mean[0].detach().cpu().numpy().astype(dt, copy=False).reshape(h, w)
            a = dt(self.alpha())
            half = dt(2)
            for t in range(self.max_truths):
                cx, cy, bw, bh = lab[t, 1:5]
                if not cx:
                    break
                x0 = _bound(_c_int(float((cx - bw / half) * dt(w)) + 0.5), w)
                y0 = _bound(_c_int(float((cy - bh / half) * dt(h)) + 0.5), h)
                x1 = _bound(_c_int(float((cx + bw / half) * dt(w)) + 0.5), w)
                y1 = _bound(_c_int(float((cy + bh / half) * dt(h)) + 0.5), h)
                if y1 > y0 and x1 > x0:
                    mask[y0:y1, x0:x1] = a * m0[y0:y1, x0:x1]
        excite = torch.zeros((n, 1, h, w), dtype=x.dtype, device=x.device)
        if n:
            excite[0, 0] = torch.as_tensor(mask, device=x.device)
        return x + excite
