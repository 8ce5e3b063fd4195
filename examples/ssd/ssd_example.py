"""A small MobileNet-SSD-style detector on decaffe: the nets are written with NetSpec, a
handful of synthetic annotated images become an AnnotatedDatum LMDB through
`decaffe convert_annoset`, MultiBoxLoss trains the net for a few iterations, and the deploy
net (PriorBox, Permute, Flatten, Concat, Softmax, DetectionOutput) detects boxes on an image
prepared with caffe.io's Transformer; the boxes are drawn into output/detections.png.

    python examples/ssd/ssd_example.py [--iters 60] [--out examples/ssd/output]

The net is tiny (two feature maps of 8×8 and 4×4 cells over a 64×64 image) so that it runs
in seconds on a CPU; its structure is MobileNet-SSD's (chuanqi305/MobileNet-SSD): depthwise
and pointwise convolutions with BatchNorm+Scale, one loc and one conf head and a PriorBox per
feature map, heads permuted to NHWC, flattened and concatenated.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import caffe  # noqa: E402
from caffe import layers as L  # noqa: E402
from caffe import params as P  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402

SIZE = 64
CLASSES = ["background", "square", "bar"]
COLORS = {1: (40, 40, 230), 2: (230, 120, 30)}  # BGR, per class
MEAN = 127.5
SCALE = 0.007843


# ------------------------------------------------------------------------------------------
# the synthetic dataset
# ------------------------------------------------------------------------------------------
def synthetic_image(rng: np.random.Generator, size: int = SIZE):
    """A noisy grey image with one to three objects: red squares (class 1) and wide blue bars
    (class 2). Returns (BGR uint8 image, [(class name, (xmin, ymin, xmax, ymax))])."""
    img = rng.integers(90, 160, size=(size, size, 3)).astype(np.uint8)
    objects = []
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(1, 3))
        if cls == 1:
            w = h = int(rng.integers(12, 28))
        else:
            w, h = int(rng.integers(24, 44)), int(rng.integers(6, 12))
        x0, y0 = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
        cv2.rectangle(img, (x0, y0), (x0 + w - 1, y0 + h - 1), COLORS[cls], -1)
        objects.append((CLASSES[cls], (x0, y0, x0 + w - 1, y0 + h - 1)))
    return img, objects


def voc_xml(objects, size: int = SIZE) -> str:
    objs = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in objects)
    return (f"<annotation><size><width>{size}</width><height>{size}</height><depth>3</depth>"
            f"</size>{objs}</annotation>")


def make_dataset(work: str, count: int = 8, seed: int = 0) -> str:
    """Images, VOC XML files, a label map and, through `decaffe convert_annoset`, the LMDB.
    Returns the LMDB path."""
    rng = np.random.default_rng(seed)
    raw = os.path.join(work, "raw")
    os.makedirs(raw, exist_ok=True)
    lines = []
    for i in range(count):
        img, objects = synthetic_image(rng)
        cv2.imwrite(os.path.join(raw, f"img{i}.png"), img)
        with open(os.path.join(raw, f"img{i}.xml"), "w") as f:
            f.write(voc_xml(objects))
        lines.append(f"img{i}.png img{i}.xml")
    with open(os.path.join(raw, "trainval.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    labelmap = os.path.join(work, "labelmap.prototxt")
    with open(labelmap, "w") as f:
        for i, name in enumerate(CLASSES):
            f.write(f'item {{ name: "{name}" label: {i} display_name: "{name}" }}\n')
    db = os.path.join(work, "trainval_lmdb")
    if os.path.exists(db):
        import shutil

        shutil.rmtree(db)
    cmd = [sys.executable, "-m", "decaffe", "convert_annoset", "-anno_type", "detection",
           "-label_map_file", labelmap, "-encoded", "-encode_type", "png",
           raw + "/", os.path.join(raw, "trainval.txt"), db]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    return db


# ------------------------------------------------------------------------------------------
# the nets
# ------------------------------------------------------------------------------------------
def _conv_bn(n, name, bottom, num_output, kernel=3, stride=1, group=1):
    pad = kernel // 2
    conv = L.Convolution(bottom, num_output=num_output, kernel_size=kernel, stride=stride,
                         pad=pad, group=group, bias_term=False,
                         weight_filler=dict(type="msra"))
    setattr(n, name, conv)
    setattr(n, name + "_bn", L.BatchNorm(conv, in_place=True))
    setattr(n, name + "_scale", L.Scale(conv, bias_term=True, in_place=True))
    setattr(n, name + "_relu", L.ReLU(conv, in_place=True))
    return conv


def _head(n, name, bottom, min_size, max_size):
    """loc/conf convolutions and a PriorBox over one feature map (4 priors per cell)."""
    num_priors = 4  # min, sqrt(min·max), aspect ratios 2 and 1/2
    loc = L.Convolution(bottom, num_output=num_priors * 4, kernel_size=1,
                        weight_filler=dict(type="msra"), bias_filler=dict(type="constant"))
    setattr(n, name + "_mbox_loc", loc)
    setattr(n, name + "_mbox_loc_perm", L.Permute(loc, permute_param=dict(order=[0, 2, 3, 1])))
    setattr(n, name + "_mbox_loc_flat", L.Flatten(getattr(n, name + "_mbox_loc_perm"), axis=1))
    conf = L.Convolution(bottom, num_output=num_priors * len(CLASSES), kernel_size=1,
                         weight_filler=dict(type="msra"), bias_filler=dict(type="constant"))
    setattr(n, name + "_mbox_conf", conf)
    setattr(n, name + "_mbox_conf_perm",
            L.Permute(conf, permute_param=dict(order=[0, 2, 3, 1])))
    setattr(n, name + "_mbox_conf_flat",
            L.Flatten(getattr(n, name + "_mbox_conf_perm"), axis=1))
    setattr(n, name + "_mbox_priorbox", L.PriorBox(
        bottom, n.data, prior_box_param=dict(min_size=[min_size], max_size=[max_size],
                                             aspect_ratio=[2.0], flip=True, clip=False,
                                             variance=[0.1, 0.1, 0.2, 0.2], offset=0.5)))
    return name


def ssd_net(source: str | None, batch: int = 4) -> caffe.NetSpec:
    """The train net (AnnotatedData + MultiBoxLoss) when source is given, else the deploy
    net (Input + DetectionOutput)."""
    n = caffe.NetSpec()
    if source:
        n.data, n.label = L.AnnotatedData(
            ntop=2, data_param=dict(source=source, batch_size=batch, backend=P.Data.LMDB),
            transform_param=dict(scale=SCALE, mean_value=[MEAN] * 3, mirror=True,
                                 resize_param=dict(resize_mode=P.Resize.WARP, height=SIZE,
                                                   width=SIZE),
                                 emit_constraint=dict(emit_type=caffe_pb2.EmitConstraint.CENTER)),
            annotated_data_param=dict(batch_sampler=[dict(max_sample=1, max_trials=1)]))
    else:
        n.data = L.Input(shape=dict(dim=[1, 3, SIZE, SIZE]))
    x = _conv_bn(n, "conv0", n.data, 16, stride=2)            # 32x32
    x = _conv_bn(n, "conv1_dw", x, 16, stride=2, group=16)    # 16x16
    x = _conv_bn(n, "conv1", x, 32, kernel=1)
    x = _conv_bn(n, "conv2_dw", x, 32, stride=2, group=32)    # 8x8
    f1 = _conv_bn(n, "conv2", x, 32, kernel=1)
    x = _conv_bn(n, "conv3_dw", f1, 32, stride=2, group=32)   # 4x4
    f2 = _conv_bn(n, "conv3", x, 48, kernel=1)
    heads = [_head(n, "conv2", f1, 12.0, 24.0), _head(n, "conv3", f2, 24.0, 48.0)]
    n.mbox_loc = L.Concat(*[getattr(n, h + "_mbox_loc_flat") for h in heads], axis=1)
    n.mbox_conf = L.Concat(*[getattr(n, h + "_mbox_conf_flat") for h in heads], axis=1)
    n.mbox_priorbox = L.Concat(*[getattr(n, h + "_mbox_priorbox") for h in heads], axis=2)
    if source:
        n.mbox_loss = L.MultiBoxLoss(
            n.mbox_loc, n.mbox_conf, n.mbox_priorbox, n.label,
            multibox_loss_param=dict(loc_loss_type=P.MultiBoxLoss.SMOOTH_L1,
                                     conf_loss_type=P.MultiBoxLoss.SOFTMAX, loc_weight=1.0,
                                     num_classes=len(CLASSES), share_location=True,
                                     match_type=P.MultiBoxLoss.PER_PREDICTION,
                                     overlap_threshold=0.5, use_prior_for_matching=True,
                                     background_label_id=0, use_difficult_gt=True,
                                     neg_pos_ratio=3.0, neg_overlap=0.5,
                                     code_type=P.PriorBox.CENTER_SIZE,
                                     mining_type=P.MultiBoxLoss.MAX_NEGATIVE),
            loss_param=dict(normalization=P.Loss.VALID),
            propagate_down=[True, True, False, False])
    else:
        n.mbox_conf_reshape = L.Reshape(n.mbox_conf, shape=dict(dim=[0, -1, len(CLASSES)]))
        n.mbox_conf_softmax = L.Softmax(n.mbox_conf_reshape, axis=2)
        n.mbox_conf_flatten = L.Flatten(n.mbox_conf_softmax, axis=1)
        n.detection_out = L.DetectionOutput(
            n.mbox_loc, n.mbox_conf_flatten, n.mbox_priorbox,
            detection_output_param=dict(num_classes=len(CLASSES), share_location=True,
                                        background_label_id=0,
                                        nms_param=dict(nms_threshold=0.45, top_k=100),
                                        code_type=P.PriorBox.CENTER_SIZE, keep_top_k=20,
                                        confidence_threshold=0.3))
    return n


def write_nets(work: str, source: str, iters: int, batch: int = 4) -> dict[str, str]:
    paths = {k: os.path.join(work, f"{k}.prototxt") for k in ("train", "deploy", "solver")}
    with open(paths["train"], "w") as f:
        f.write('name: "TinyMobileNet-SSD"\n' + str(ssd_net(source, batch).to_proto()))
    with open(paths["deploy"], "w") as f:
        f.write('name: "TinyMobileNet-SSD"\n' + str(ssd_net(None).to_proto()))
    with open(paths["solver"], "w") as f:
        f.write(f'train_net: "{paths["train"]}"\nbase_lr: 0.01\nmomentum: 0.9\n'
                f'weight_decay: 0.0005\nlr_policy: "fixed"\ntype: "SGD"\nmax_iter: {iters}\n'
                f'display: 0\nsnapshot: 0\nsnapshot_prefix: "{work}/tiny_ssd"\n'
                'random_seed: 1701\n')
    return paths


# ------------------------------------------------------------------------------------------
# training and detection
# ------------------------------------------------------------------------------------------
def train(solver_path: str, iters: int) -> tuple[list[float], object]:
    """iters SGD steps; returns the loss of every step and the trained net."""
    solver = caffe.get_solver(solver_path)
    losses = []
    for _ in range(iters):
        solver.step(1)
        losses.append(float(solver.net.blobs["mbox_loss"].data))
    solver.net.close()  # stop the data layer's prefetch thread; the weights stay
    return losses, solver.net


def detect(deploy_path: str, weights: str | None, image: np.ndarray) -> np.ndarray:
    """DetectionOutput's rows for one BGR image, prepared with caffe.io.Transformer as
    pycaffe scripts do (caffe.io.load_image's RGB [0, 1] -> BGR [0, 255] - mean, × scale)."""
    if weights is None:
        net = caffe.Net(deploy_path, caffe.TEST)
        for name, blobs in net.params.items():  # random weights: unit BatchNorm statistics
            if net.layer_dict[name].type == "BatchNorm":
                blobs[0].data[...], blobs[1].data[...], blobs[2].data[...] = 0, 1, 1
    else:
        net = caffe.Net(deploy_path, weights, caffe.TEST)
    rgb = image[:, :, ::-1].astype(np.float32) / 255.0  # what caffe.io.load_image returns
    tr = caffe.io.Transformer({"data": net.blobs["data"].data.shape})
    tr.set_transpose("data", (2, 0, 1))
    tr.set_channel_swap("data", (2, 1, 0))
    tr.set_raw_scale("data", 255)
    tr.set_mean("data", np.array([MEAN] * 3))
    tr.set_input_scale("data", SCALE)
    net.blobs["data"].data[...] = tr.preprocess("data", rgb)
    return net.forward()["detection_out"].copy()


def draw(image: np.ndarray, dets: np.ndarray, path: str, min_score: float = 0.0) -> int:
    """Draw the detections (normalized boxes) on a 4× enlarged copy; returns boxes drawn."""
    k = 4
    big = cv2.resize(image, (image.shape[1] * k, image.shape[0] * k),
                     interpolation=cv2.INTER_NEAREST)
    drawn = 0
    for _, label, score, x0, y0, x1, y1 in dets.reshape(-1, 7):
        if label < 0 or score < min_score or not np.isfinite([x0, y0, x1, y1]).all():
            continue
        x0, y0, x1, y1 = np.clip([x0, y0, x1, y1], -1, 2)
        h, w = big.shape[:2]
        p0 = (int(round(x0 * w)), int(round(y0 * h)))
        p1 = (int(round(x1 * w)), int(round(y1 * h)))
        color = (0, 255, 0) if int(label) == 1 else (0, 255, 255)
        cv2.rectangle(big, p0, p1, color, 2)
        cv2.putText(big, f"{CLASSES[int(label)]} {score:.2f}", (p0[0] + 2, max(p0[1] - 4, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1)
        drawn += 1
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    cv2.imwrite(path, big)
    return drawn


def run(out: str, iters: int = 60, images: int = 8, seed: int = 0) -> dict:
    """The whole example; returns the losses, detections and written files."""
    caffe.set_random_seed(seed + 1701)
    os.makedirs(out, exist_ok=True)
    db = make_dataset(out, images, seed)
    paths = write_nets(out, db, iters)
    test_img, _ = synthetic_image(np.random.default_rng(seed + 100))
    random_dets = detect(paths["deploy"], None, test_img)  # random weights, as in the README
    draw(test_img, random_dets, os.path.join(out, "detections_random.png"))
    losses, net = train(paths["solver"], iters)
    weights = os.path.join(out, "tiny_ssd.caffemodel")
    net.save(weights)
    dets = detect(paths["deploy"], weights, test_img)
    drawn = draw(test_img, dets, os.path.join(out, "detections.png"), min_score=0.3)
    return {"losses": losses, "random_detections": random_dets, "detections": dets,
            "drawn": drawn, "paths": paths, "weights": weights}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--out", default=os.path.join(HERE, "output"))
    a = ap.parse_args(argv)
    r = run(a.out, a.iters, a.images)
    ls = r["losses"]
    print(f"MultiBoxLoss: first {ls[0]:.3f}, last {ls[-1]:.3f} "
          f"(mean of the first 5 {np.mean(ls[:5]):.3f}, of the last 5 {np.mean(ls[-5:]):.3f})")
    print(f"random weights: detection_out {r['random_detections'].shape}")
    print(f"trained: detection_out {r['detections'].shape}, {r['drawn']} boxes drawn into "
          f"{os.path.join(a.out, 'detections.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
