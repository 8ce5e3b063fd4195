"""Shared by the export tests: nets with random weights and statistics that keep deep nets'
activations finite, and one call that exports a net in every form and checks each against
decaffe."""

from __future__ import annotations

import os

import numpy as np
import pytest

import caffe
from decaffe.formats import prototxt

# > ~5 s each on two cores: selected by -m slow, and run only with DECAFFE_SLOW=1
SLOW = [pytest.mark.slow,
        pytest.mark.skipif(not os.environ.get("DECAFFE_SLOW"),
                           reason="slow export test; set DECAFFE_SLOW=1 to run it")]


def randomize(net, seed: int = 0) -> None:
    """He-scaled random weights and biases; BatchNorm statistics and Scale factors near 1."""
    rng = np.random.default_rng(seed)
    for lname, blobs in net.params.items():
        kind = net.layer_dict[lname].type
        for i, b in enumerate(blobs):
            if kind in ("BatchNorm", "BatchNormKyle") and i < 3:
                if i == 0:
                    b.data[...] = rng.standard_normal(b.shape) * 0.1
                elif i == 1:
                    b.data[...] = rng.uniform(0.5, 1.5, b.shape)
                else:
                    b.data[...] = 1.0
            elif kind == "BN" and i == 3:  # a running variance
                b.data[...] = rng.uniform(0.5, 1.5, b.shape)
            elif kind == "Scale":
                b.data[...] = rng.uniform(0.5, 1.5, b.shape) if i == 0 else \
                    rng.standard_normal(b.shape) * 0.1
            elif b.data.ndim > 1:
                fan_in = b.data[0].size
                b.data[...] = rng.standard_normal(b.shape) * np.sqrt(2.0 / max(fan_in, 1))
            else:
                b.data[...] = rng.standard_normal(b.shape) * 0.1


LINEAR_TYPES = {"Convolution", "Deconvolution", "InnerProduct", "ConvolutionDepthwise",
                "DepthwiseConvolution"}


def calibrate(net, end: str | None = None, seed: int = 1) -> None:
    """Rescale each convolution's and inner product's weights and bias, in forward order, so
    that its top has standard deviation 1 on random input (LSUV-style). Random weights in
    nets without normalisation (BN merged into the convolutions) otherwise grow activations
    to ~1e7, where a final Softmax turns float32 rounding into differences of order 1.
    Inputs are the exporter's own random inputs (valid ROIs, indices) for the net up to end."""
    from decaffe.export.graph import build_graph
    from decaffe.export.verify import random_inputs

    for name, arr in random_inputs(build_graph(net, end=end), seed).items():
        net.blobs[name].data[...] = arr
    names = list(net._layer_names)
    start = 0
    for i, lname in enumerate(names):
        layer = net.layer_dict[lname]
        if layer.type not in LINEAR_TYPES or not net.params.get(lname):
            continue
        net.forward(start=names[start], end=lname)
        start = i + 1
        top = net.blobs[net.top_names[lname][0]].data
        std = float(np.std(top))
        if std > 0 and np.isfinite(std):
            for b in net.params[lname][:2]:  # the layer is linear in (weights, bias) jointly
                b.data[...] /= std
            top[...] /= std


def deploy_net(path: str, batch: int | None = None, drop_softmax: bool = True):
    """A TEST-phase net from a prototxt, random weights; the last Softmax dropped (random
    weights saturate it, hiding differences in the logits)."""
    param = prototxt.read_net(path)
    if drop_softmax and param.layer and param.layer[-1].type == "Softmax":
        del param.layer[-1]
    net = caffe.Net(param, phase=caffe.TEST)
    if batch is not None:
        for name in net.inputs:
            net.blobs[name].reshape(batch, *net.blobs[name].shape[1:])
        net.reshape()
    randomize(net)
    return net


def export_all(net, tmp, forms=("onnx", "pytorch", "torch"), onnx_check=True, **opts) -> dict:
    """Export net in each form (verified inside, tolerance 1e-4); returns the reports.
    onnx_check: the runtimes the ONNX form runs in (to_onnx's check; "all": every
    installed one of onnxruntime, OpenVINO and OpenCV's dnn)."""
    from decaffe import export

    out = {}
    if "onnx" in forms:
        out["onnx"] = export.to_onnx(net, os.path.join(tmp, "net.onnx"), check=onnx_check,
                                     **opts)
    if "pytorch" in forms:
        out["pytorch"] = export.to_pytorch_source(net, os.path.join(tmp, "pt"), **opts)
    if "torch" in forms:
        graph, _ = export.prepare(net, **{k: v for k, v in opts.items()
                                          if k in ("fold_bn", "input_shapes", "end",
                                                   "dynamic_batch")})
        out["torch"] = export.write_torch_program(graph, os.path.join(tmp, "net.pt2"))
    for form, report in out.items():
        assert report.verified, form
        assert report.differences and max(report.differences.values()) <= 1e-4, \
            (form, report.differences)
    return out
