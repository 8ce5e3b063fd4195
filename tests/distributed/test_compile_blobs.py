"""-compile keeps only the loss and the net's outputs in the compiled graph; every other blob
is made when asked for, equal to eager's (decaffe.compile's module docstring)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from decaffe import compile as dc
from decaffe.netspec import NetSpec
from decaffe.netspec import layers as L
from decaffe.netspec import params as P
from decaffe.proto import caffe_pb2
from decaffe.solvers import SGDSolver

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None,
                                reason="torch.compile on the CPU needs a C compiler")

BATCH = 6


def _param():
    """Input → Conv → BatchNorm → Scale → ReLU → Pool → Dropout → IP, loss and accuracy."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[BATCH, 2, 6, 6]))
    n.label = L.Input(shape=dict(dim=[BATCH]))
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=3, pad=1,
                           weight_filler=dict(type="xavier"))
    n.bn = L.BatchNorm(n.conv, in_place=True)
    n.scale = L.Scale(n.conv, bias_term=True, in_place=True)
    n.relu = L.ReLU(n.conv, in_place=True)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.drop = L.Dropout(n.pool, dropout_ratio=0.3, in_place=True)
    n.ip = L.InnerProduct(n.pool, num_output=3, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.ip, n.label)
    n.acc = L.Accuracy(n.ip, n.label)
    return n.to_proto()


def _solver(compiled: bool, graphs: list | None = None):
    sp = caffe_pb2.SolverParameter()
    sp.net_param.CopyFrom(_param())
    sp.base_lr, sp.momentum, sp.weight_decay = 0.1, 0.9, 5e-4
    sp.lr_policy, sp.max_iter, sp.display = "fixed", 100, 0
    torch.manual_seed(0)
    solver = SGDSolver(sp)
    rng = np.random.default_rng(0)
    solver.net.blobs["data"].data[...] = rng.normal(size=(BATCH, 2, 6, 6)).astype(np.float32)
    solver.net.blobs["label"].data[...] = rng.integers(0, 3, size=BATCH)
    if compiled:
        def recording(gm, example_inputs):
            graphs.append(gm)
            from torch._inductor.compile_fx import compile_fx

            return compile_fx(gm, example_inputs)

        assert dc.compile_net(solver.net, backend=recording)
    return solver


def _graph_outputs(gm) -> list:
    (node,) = [n for n in gm.graph.nodes if n.op == "output"]
    return [o for o in torch.utils._pytree.tree_leaves(node.args[0]) if o is not None]


def test_compiled_step_returns_only_the_loss_and_outputs_and_makes_the_rest_on_request(capfd):
    torch.manual_seed(1)
    eager = _solver(False)
    graphs: list = []
    compiled = _solver(True, graphs)
    net = compiled.net
    w0 = net.params["conv"][0].data.copy()
    torch.manual_seed(5)
    eager.step(1)
    torch.manual_seed(5)
    compiled.step(1)
    # one graph, whose outputs are the weighted loss and the net's two outputs
    assert len(graphs) == 1
    assert sorted(net.outputs) == ["acc", "loss"]
    assert len(_graph_outputs(graphs[0])) == 3
    inner = ["conv", "pool", "ip"]
    assert all(net.blobs[b]._lazy is not None for b in inner)
    assert all(net.blobs[b]._lazy is None for b in ("data", "label", "loss", "acc"))
    # the weights moved since the pass, yet the blobs show the pass as eager made it
    assert not np.array_equal(net.params["conv"][0].data, w0)
    rng_before = torch.get_rng_state()
    stats_before = [p.data.copy() for p in net.params["bn"]]
    for name in inner:
        np.testing.assert_array_equal(net.blobs[name].data, eager.net.blobs[name].data,
                                      err_msg=name)
    assert all(net.blobs[b]._lazy is None for b in inner)
    # making them changed nothing: the generator, BatchNorm's statistics, the weights
    assert torch.equal(torch.get_rng_state(), rng_before)
    for p, before in zip(net.params["bn"], stats_before):
        np.testing.assert_array_equal(p.data, before)
    for name in ("loss", "acc"):
        np.testing.assert_allclose(net.blobs[name].data, eager.net.blobs[name].data,
                                   rtol=1e-5, err_msg=name)
    for name, ps in eager.net.params.items():
        for a, b in zip(ps, net.params[name]):
            np.testing.assert_allclose(b.data, a.data, rtol=1e-4, atol=1e-6, err_msg=name)
    # a second step: the blobs are the second pass's, again on request
    torch.manual_seed(6)
    eager.step(1)
    torch.manual_seed(6)
    compiled.step(1)
    assert len(graphs) == 1  # no recompilation
    # the compilation was logged once, after the first step's backward
    logged = [ln for ln in capfd.readouterr().err.splitlines() if "Compiled net" in ln]
    assert len(logged) == 1 and "for training in" in logged[0], logged
    np.testing.assert_allclose(net.blobs["ip"].data, eager.net.blobs["ip"].data, rtol=1e-4,
                               atol=1e-5)
