"""The YOLO family of fork layers from eric612/MobileNet-YOLO: YoloDetectionOutput (YOLOv2),
Yolov3DetectionOutput, Reorg.

Detection outputs follow the fork's Forward_cpu: boxes and scores in the bottom's precision,
one class-agnostic greedy NMS over every image's candidates (IoU ≥ nms_threshold
suppresses), rows [image_id, label, confidence, xmin, ymin, xmax, ymax] in [1, 1, R, 7] with
the fork's quirks kept: image_id is always 0 when something is detected, coordinates are
not clipped, and with nothing detected the top holds one row [i, −1, ..., −1] per image.
Candidates of equal confidence keep their enumeration order (the fork's std::sort leaves
it unspecified).
"""

from __future__ import annotations

import numpy as np
import torch

from ..layer import Layer, register


def _np_dtype(t: torch.Tensor):
    return np.float64 if t.dtype == torch.float64 else np.float32


def _sigmoid(x: np.ndarray, dt) -> np.ndarray:
    return (dt(1) / (dt(1) + np.exp(-x))).astype(dt)


def _iou_center(a: np.ndarray, b: np.ndarray) -> float:
    """The fork's box_iou on (x, y, w, h) boxes, in float as its helpers compute it."""
    f = np.float32
    ax, ay, aw, ah = (f(v) for v in a)
    bx, by, bw, bh = (f(v) for v in b)

    def overlap(x1, w1, x2, w2):
        left = max(x1 - w1 / f(2), x2 - w2 / f(2))
        right = min(x1 + w1 / f(2), x2 + w2 / f(2))
        return f(right - left)

    w = overlap(ax, aw, bx, bw)
    h = overlap(ay, ah, by, bh)
    inter = f(0) if (w < 0 or h < 0) else f(w * h)
    union = f(aw * ah + bw * bh - inter)
    return float(inter / union) if union != 0 else float("nan")


def _nms_and_rows(boxes: list, conf: list, cls: list, thresh: float, num_images: int,
                  dt) -> np.ndarray:
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

    def reshape(self, bottom_shapes):
        for i, s in enumerate(bottom_shapes):
            self.check(len(s) == 4 and s[2] == s[3], f"bottom '{self.bottom_names[i]}' must be "
                       f"N x C x S x S (the fork reads a square map), has shape {tuple(s)}")
        return [(1, 1, 1, 7)]


# ------------------------------------------------------------------------------------------
# YoloDetectionOutput (YOLOv2)
# ------------------------------------------------------------------------------------------
@register("YoloDetectionOutput")
class YoloDetectionOutputLayer(_DetectionOutput):
    """YOLOv2 detections from one or two maps (N, num_box·(5 + num_classes), S, S).

    For anchor n of cell (row j, column i) with values t: x = (i + σ(t0))/S,
    y = (j + σ(t1))/S, w = exp(t2)·biases[2n]/S, h = exp(t3)·biases[2n+1]/S; the class is the
    argmax of softmax(t5...) (first maximum), confidence σ(t4)·its probability, kept when
    ≥ confidence_threshold. num_classes is required. No backward.
    Source: eric612/MobileNet-YOLO src/caffe/layers/yolo_detection_output_layer.cpp.
    """

    min_bottoms = 1
    max_bottoms = 2

    def setup(self, bottom_shapes):
        p = self.lp.yolo_detection_output_param
        f = "yolo_detection_output_param"
        self.check(p.HasField("num_classes"), "Must specify num_classes", f"{f}.num_classes")
        self.num_classes = int(p.num_classes)
        self.num_box = int(p.num_box)
        self.confidence_threshold = p.confidence_threshold
        self.nms_threshold = p.nms_threshold
        self.biases = list(p.biases)
        self.check(len(self.biases) >= 2 * self.num_box,
                   f"needs 2·num_box = {2 * self.num_box} biases, has {len(self.biases)}",
                   f"{f}.biases")

    def reshape(self, bottom_shapes):
        out = super().reshape(bottom_shapes)
        for i, s in enumerate(bottom_shapes):
            self.check(s[1] % self.num_box == 0 and s[1] // self.num_box >= 5 + self.num_classes,
                       f"bottom '{self.bottom_names[i]}' has {s[1]} channels; num_box "
                       f"({self.num_box}) × (5 + num_classes ({self.num_classes})) needed")
        return out

    def forward(self, *bottoms):
        dt = _np_dtype(bottoms[0])
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
    """YOLOv3 detections from mask_group_num maps (N, num_box·(5 + num_classes), S, S).

    Map t uses the anchors mask[t·G + n] (G = mask size / mask_group_num) and stride
    anchors_scale[t]: x = (column + σ(t0))/S, y = (row + σ(t1))/S,
    w = exp(t2)·biases[2m]/(S·anchors_scale[t]), likewise h; every class whose
    σ(class)·σ(t4) exceeds confidence_threshold gives a candidate of that class. The number
    of bottoms must equal mask_group_num; num_classes is required. No backward.
    Source: eric612/MobileNet-YOLO src/caffe/layers/yolov3_detection_output_layer.cpp.
    """

    min_bottoms = 1

    def setup(self, bottom_shapes):
        p = self.lp.yolov3_detection_output_param
        f = "yolov3_detection_output_param"
        self.check(p.HasField("num_classes"), "Must specify num_classes", f"{f}.num_classes")
        self.num_classes = int(p.num_classes)
        self.num_box = int(p.num_box)
        self.confidence_threshold = p.confidence_threshold
        self.nms_threshold = p.nms_threshold
        self.biases = list(p.biases)
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

    def reshape(self, bottom_shapes):
        out = super().reshape(bottom_shapes)
        length = 5 + self.num_classes
        for i, s in enumerate(bottom_shapes):
            self.check(s[1] >= self.num_box * length, f"bottom '{self.bottom_names[i]}' has "
                       f"{s[1]} channels; num_box ({self.num_box}) × (5 + num_classes "
                       f"({self.num_classes})) = {self.num_box * length} needed")
        return out

    def forward(self, *bottoms):
        dt = _np_dtype(bottoms[0])
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

    reverse false: (N, C, H, W) → (N, C·s², H/s, W/s). The bottom's memory is read as
    (N, C/s², H·s, W·s) and output channel k = (dy·s + dx)·C/s² + c2 at (y, x) takes
    position (c2, y·s + dy, x·s + dx) of it — darknet's layout, not a plain space-to-depth.
    reverse true is the inverse permutation, (N, C, H, W) → (N, C/s², H·s, W·s). Backward
    is the inverse permutation of the diff. stride (s) must be > 0; C must divide by s² and
    H, W by s (reverse false).
    Source: eric612/MobileNet-YOLO reorg_layer (darknet's reorg_cpu).
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom_shapes):
        p = self.lp.reorg_param
        self.check(p.HasField("stride") and p.stride > 0, "stride must be given and > 0",
                   "reorg_param.stride")
        self.stride = int(p.stride)
        self.reverse = bool(p.reverse)

    def reshape(self, bottom_shapes):
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

    def forward(self, x):
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

