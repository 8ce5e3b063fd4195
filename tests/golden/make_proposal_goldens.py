"""Makes tests/golden/fork_proposal*.{prototxt,npz} from py-faster-rcnn's proposal arithmetic.

The C++ ``Proposal`` layer in the deploy files people hold (sanghoon/pva-faster-rcnn's, and the
Faster R-CNN/R-FCN prototxts OpenCV's dnn shipped) computes py-faster-rcnn's
``rpn.proposal_layer``: anchors of base_size x scale pixels, min_size times im_info's scale.
The expected outputs here come from tests/core/foreign_modules/py-faster-rcnn (an independent
re-implementation of py-faster-rcnn's ``generate_anchors``, ``bbox_transform_inv``,
``clip_boxes`` and ``py_cpu_nms``; nothing of decaffe is imported), in float32 as the original
computes them. The cases keep where the two agree by construction: scores without ties
(py-faster-rcnn's argsort and the C++ quicksort order ties differently) and at least
pre_nms_topn boxes of min_size (py-faster-rcnn drops a small box, the C++ layer scores it 0,
so both see the same pre_nms_topn boxes). Run from the repository root:

    python tests/golden/make_proposal_goldens.py
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "core", "foreign_modules", "py-faster-rcnn"))

from fast_rcnn.bbox_transform import bbox_transform_inv, clip_boxes, nms  # noqa: E402
from rpn.generate_anchors import generate_anchors  # noqa: E402
from rpn.params import shifted_anchors  # noqa: E402

CASES = [
    # py-faster-rcnn's defaults (VGG16/ZF Faster R-CNN, R-FCN): 9 anchors of 128-512 px
    dict(name="fork_proposal", seed=2101, feat=(10, 12), tops=("rois", "scores"),
         ratios=(0.5, 1, 2), scales=(8, 16, 32), feat_stride=16, base_size=16, min_size=16,
         im_info=(160, 192, 1.6), pre=200, post=30, nms=0.7),
    # PVANet's 42 anchors (7 ratios x 6 scales), its 6-value im_info, one top
    dict(name="fork_proposal_one_top", seed=2102, feat=(8, 10), tops=("rois",),
         ratios=(0.333, 0.5, 0.667, 1, 1.5, 2, 3), scales=(2, 3, 5, 9, 16, 32), feat_stride=16,
         base_size=16, min_size=16, im_info=(128, 160, 0.8, 0.8, 0.8, 0.8), pre=300, post=40,
         nms=0.6),
]


def prototxt(c, a) -> str:
    h, w = c["feat"]
    p = [f"feat_stride: {c['feat_stride']} base_size: {c['base_size']} "
         f"min_size: {c['min_size']}"]
    p += [f"ratio: {r}" for r in c["ratios"]] + [f"scale: {s}" for s in c["scales"]]
    p.append(f"pre_nms_topn: {c['pre']} post_nms_topn: {c['post']} nms_thresh: {c['nms']}")
    tops = " ".join(f'top: "{t}"' for t in c["tops"])
    inputs = [("score", (1, 2 * a, h, w)), ("delta", (1, 4 * a, h, w)),
              ("im_info", (1, len(c["im_info"])))]
    lines = ['name: "case"', "force_backward: true"]
    for name, shape in inputs:
        dims = " ".join(f"dim: {d}" for d in shape)
        lines.append(f'layer {{ name: "{name}" type: "Input" top: "{name}" '
                     f"input_param {{ shape {{ {dims} }} }} }}")
    lines.append('layer { name: "rpn" type: "Proposal" bottom: "score" bottom: "delta" '
                 f'bottom: "im_info" {tops} proposal_param {{ {" ".join(p)} }} }}')
    return "\n".join(lines) + "\n"


def make(c) -> tuple[dict, str]:
    rng = np.random.default_rng(c["seed"])
    anchors = generate_anchors(base_size=c["base_size"], ratios=np.array(c["ratios"]),
                               scales=np.array(c["scales"], dtype=np.float64))
    a = anchors.shape[0]
    h, w = c["feat"]
    # distinct foreground probabilities (a shuffled grid), background = 1 - foreground
    fg = ((rng.permutation(a * h * w) + 0.5) / (a * h * w)).astype(np.float32)
    fg = fg.reshape(1, 1, a, h, w)
    score = np.concatenate([1 - fg, fg], axis=1).reshape(1, 2 * a, h, w).astype(np.float32)
    delta = (rng.standard_normal((1, 4 * a, h, w)) * 0.2).astype(np.float32)
    im_info = np.array([c["im_info"]], np.float32)
    # py-faster-rcnn's ProposalLayer.forward, TEST phase, with the case's settings
    fg = score[:, a:]
    boxes = bbox_transform_inv(shifted_anchors(anchors, c["feat_stride"], h, w),
                               delta.transpose(0, 2, 3, 1).reshape(-1, 4))
    boxes = clip_boxes(boxes, im_info[0, :2])
    fg = fg.transpose(0, 2, 3, 1).reshape(-1)
    ws = boxes[:, 2] - boxes[:, 0] + 1
    hs = boxes[:, 3] - boxes[:, 1] + 1
    min_size = c["min_size"] * im_info[0, 2]
    keep = np.where((ws >= min_size) & (hs >= min_size))[0]
    assert keep.size >= c["pre"], "fewer boxes of min_size than pre_nms_topn"
    boxes, fg = boxes[keep], fg[keep]
    assert np.unique(fg).size == fg.size, "tied scores"
    order = fg.argsort()[::-1][:c["pre"]]
    boxes, fg = boxes[order], fg[order]
    kept = nms(np.hstack([boxes, fg[:, None]]), c["nms"])[:c["post"]]
    rois = np.hstack([np.zeros((len(kept), 1), np.float32), boxes[kept]]).astype(np.float32)
    out = {"input/score": score, "input/delta": delta, "input/im_info": im_info,
           "output/rois": rois}
    if "scores" in c["tops"]:
        out["output/scores"] = fg[kept].astype(np.float32)
    return out, prototxt(c, a)


def main() -> None:
    with open(os.path.join(HERE, "INDEX.json")) as f:
        index = json.load(f)
    for c in CASES:
        arrays, text = make(c)
        np.savez(os.path.join(HERE, c["name"] + ".npz"), **arrays)
        with open(os.path.join(HERE, c["name"] + ".prototxt"), "w") as f:
            f.write(text)
        for entry in index["cases"]:
            if entry["name"] == c["name"]:
                entry.update(seed=c["seed"], source="tests/golden/make_proposal_goldens.py")
        print(c["name"], {k: v.shape for k, v in arrays.items()})
    with open(os.path.join(HERE, "INDEX.json"), "w") as f:
        json.dump(index, f, indent=1)


if __name__ == "__main__":
    main()
