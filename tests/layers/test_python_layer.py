"""Python layers (`type: "Python"`), in the spirit of pycaffe's test_python_layer.py: forward
and backward through user code, learnable blobs trained by SGD, phase, reshaping tops,
in-place blobs, gradient checks, and the errors for bad modules, classes and user code."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from gradcheck import check_gradients
from netbuild import input_layer as _input

import caffe
import decaffe
from decaffe.errors import DecaffeError
from decaffe.layers.python_layer import BlobVec, Layer, PythonLayerError

PYLAYERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pylayers")
MOD = "decaffe_test_pylayers"
RNG = np.random.default_rng(7)


@pytest.fixture(autouse=True)
def pylayers_path(monkeypatch):
    monkeypatch.syspath_prepend(PYLAYERS)


def py_layer(name, cls, bottoms=(), tops=(), param_str=None, module=MOD, extra=""):
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    # Python's repr is a valid prototxt string literal for these simple strings
    ps = f" param_str: {param_str!r}" if param_str is not None else ""
    return (f'layer {{ name: "{name}" type: "Python" {b} {t} {extra} python_param {{ '
            f'module: "{module}" layer: "{cls}"{ps} }} }}\n')


def net_of(text, phase=caffe.TRAIN, dtype=torch.float32, force_backward=True):
    prefix = "force_backward: true\n" if force_backward else ""
    return decaffe.Net(prefix + text, phase, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# forward and backward
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("param_str", ["{'factor': 3.5}", "3.5"])
def test_multiply_by_param_str(param_str):
    net = net_of(_input("x", (2, 3, 4)) + py_layer("mul", "Multiply", ["x"], ["y"], param_str))
    x = RNG.normal(size=(2, 3, 4)).astype(np.float32)
    net.blobs["x"].data[...] = x
    np.testing.assert_allclose(net.forward()["y"], 3.5 * x, rtol=1e-6)
    d = RNG.normal(size=(2, 3, 4)).astype(np.float32)
    net.blobs["y"].diff[...] = d
    np.testing.assert_allclose(net.backward()["x"], 3.5 * d, rtol=1e-6)
    assert net.layers[1].type == "Python"


def test_chain_of_python_layers_and_layer_object():
    net = net_of(_input("x", (4,)) + py_layer("a", "Multiply", ["x"], ["y"], "2") +
                 py_layer("b", "Multiply", ["y"], ["z"], "-3"))
    net.blobs["x"].data[...] = [1, 2, 3, 4]
    np.testing.assert_array_equal(net.forward()["z"], [-6, -12, -18, -24])
    net.blobs["z"].diff[...] = 1
    np.testing.assert_array_equal(net.backward()["x"], [-6] * 4)
    user = net.layer_dict["a"]
    assert isinstance(user, Layer) and user.factor == 2.0 and user.type == "Python"
    assert user.param_str == "2"


def test_learnable_blobs_are_params_and_train_by_sgd():
    """Affine (w·x + b, blobs added with self.blobs.add_blob) fitted by hand-written SGD on
    net.learnable_params through the solver's forward_backward path (decaffe's solver
    module is not written yet), with a Python Euclidean loss."""
    text = (_input("x", (16, 1)) + _input("t", (16, 1)) +
            py_layer("aff", "Affine", ["x"], ["y"], "(0.5, 0.0)") +
            py_layer("loss", "EuclideanLoss", ["y", "t"], ["loss"], extra="loss_weight: 1"))
    net = net_of(text, force_backward=False)
    blobs = net.params["aff"]
    assert [b.shape for b in blobs] == [(1,), (1,)]
    assert float(blobs[0].data[0]) == 0.5 and float(blobs[1].data[0]) == 0.0
    assert len(net.learnable_params) == 2
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(16, 1)
    net.blobs["x"].data[...] = x
    net.blobs["t"].data[...] = 3 * x - 1
    losses = []
    for _ in range(300):
        net.clear_param_diffs()
        losses.append(net.forward_backward())
        with torch.no_grad():
            for p in net.learnable_params:
                p -= 0.5 * p.grad
    assert losses[-1] < 1e-6 < losses[0]
    np.testing.assert_allclose(blobs[0].data, [3.0], atol=1e-3)
    np.testing.assert_allclose(blobs[1].data, [-1.0], atol=1e-3)
    # the user's object sees the same blobs the net and the solver see
    user = net.layer_dict["aff"]
    np.testing.assert_array_equal(user.blobs[0].data, blobs[0].data)
    assert len(user.blobs) == 2 and isinstance(user.blobs, BlobVec)


def test_param_diffs_accumulate_as_in_caffe():
    net = net_of(_input("x", (3,)) + py_layer("aff", "Affine", ["x"], ["y"], "(2.0, 1.0)"))
    net.blobs["x"].data[...] = [1, 2, 3]
    net.forward()
    net.blobs["y"].diff[...] = 1
    for p in net.params["aff"]:
        p.diff[...] = 0
    net.backward()
    np.testing.assert_allclose(net.params["aff"][0].diff, [6.0])
    np.testing.assert_allclose(net.params["aff"][1].diff, [3.0])
    np.testing.assert_allclose(net.blobs["x"].diff, [2, 2, 2])
    net.backward()  # no clearing in between: the layer's += accumulates
    np.testing.assert_allclose(net.params["aff"][0].diff, [12.0])


def test_python_loss_layer_with_loss_weight():
    text = (_input("a", (4, 3)) + _input("b", (4, 3)) +
            py_layer("loss", "EuclideanLoss", ["a", "b"], ["loss"], extra="loss_weight: 2"))
    net = net_of(text)
    a, b = RNG.normal(size=(4, 3)), RNG.normal(size=(4, 3))
    net.blobs["a"].data[...] = a
    net.blobs["b"].data[...] = b
    out = net.forward()
    np.testing.assert_allclose(out["loss"], [((a - b) ** 2).sum() / 8], rtol=1e-5)
    net.backward()
    np.testing.assert_allclose(net.blobs["a"].diff, 2 * (a - b) / 4, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.blobs["b"].diff, -2 * (a - b) / 4, rtol=1e-5, atol=1e-6)


def test_propagate_down_follows_the_net():
    text = (_input("a", (2, 2)) + _input("b", (2, 2)) +
            py_layer("fa", "Affine", ["a"], ["ya"], "(2.0, 0.0)") +
            py_layer("fb", "Affine", ["b"], ["yb"], "(3.0, 0.0)") +
            py_layer("loss", "EuclideanLoss", ["ya", "yb"], ["loss"],
                     extra="loss_weight: 1 propagate_down: true propagate_down: false"))
    net = net_of(text, force_backward=False)
    assert net.bottom_need_backward(4) == [True, False]
    net.blobs["a"].data[...] = 1
    net.forward()
    net.clear_param_diffs()
    net.backward()
    assert np.all(net.blobs["ya"].diff == 1.0)  # (2·1 − 0)/2
    assert net.params["fa"][0].diff[0] == 4.0 and np.all(net.params["fb"][0].diff == 0)
    assert net.layer_dict["loss"].propagate_down == [True, False]


def test_in_place_python_layer():
    net = net_of(_input("x", (3,)) + py_layer("dbl", "InPlaceDouble", ["x"], ["x"]) +
                 py_layer("m", "Multiply", ["x"], ["y"], "1"))
    net.blobs["x"].data[...] = [1, 2, 3]
    np.testing.assert_array_equal(net.forward()["y"], [2, 4, 6])
    net.blobs["y"].diff[...] = [1, 1, 1]
    np.testing.assert_array_equal(net.backward()["x"], [2, 2, 2])


# ----------------------------------------------------------------------------------------------
# phase and shapes
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("phase", [caffe.TRAIN, caffe.TEST])
def test_phase_visible_in_layer(phase):
    net = net_of(py_layer("ph", "Phase", [], ["p"]), phase=phase, force_backward=False)
    assert net.blobs["p"].shape == ()
    assert net.forward()["p"] == phase
    assert net.layer_dict["ph"].phase == phase


def test_top_shape_changes_every_forward():
    net = net_of(py_layer("cnt", "Counter", [], ["c"]), force_backward=False)
    assert net.blobs["c"].shape == (1,)
    for k in range(1, 4):
        out = net.forward()["c"]
        np.testing.assert_array_equal(out, np.arange(k))
        assert net.blobs["c"].shape == (k,)


def test_top_shape_follows_bottom_on_reshape():
    net = net_of(_input("x", (2, 3)) + py_layer("mul", "Multiply", ["x"], ["y"], "2"))
    assert net.blobs["y"].shape == (2, 3)
    net.blobs["x"].reshape(5, 1, 2)
    net.reshape()
    assert net.blobs["y"].shape == (5, 1, 2)
    net.blobs["x"].data[...] = 1
    np.testing.assert_array_equal(net.forward()["y"], np.full((5, 1, 2), 2.0))


def test_top_shaped_in_setup_only_keeps_its_shape():
    net = net_of(py_layer("s", "SetupShaped", [], ["t"]), force_backward=False)
    for _ in range(2):
        out = net.forward()["t"]
        assert out.shape == (2, 3) and np.all(out == 7)


def test_float64_net_gives_float64_tops():
    net = net_of(_input("x", (2,)) + py_layer("mul", "Multiply", ["x"], ["y"], "0.1"),
                 dtype=torch.float64)
    net.blobs["x"].data[...] = [1, 3]
    out = net.forward()["y"]
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [0.1, 0.30000000000000004])


def test_subclass_without_base_init():
    net = net_of(_input("x", (2,)) + py_layer("own", "OwnInit", ["x"], ["y"]))
    assert net.layer_dict["own"].made
    net.params["own"][0].data[...] = [1, 2]
    net.blobs["x"].data[...] = [0, 1]
    np.testing.assert_array_equal(net.forward()["y"], [3, 4])


# ----------------------------------------------------------------------------------------------
# gradient checks through tests/gradcheck.py
# ----------------------------------------------------------------------------------------------
def test_gradient_multiply():
    check_gradients(_input("x", (2, 3)) + py_layer("m", "Multiply", ["x"], ["y"], "-1.5"),
                    {"x": RNG.uniform(-1, 1, (2, 3))})


def test_gradient_affine_with_params():
    check_gradients(_input("x", (3, 2)) + py_layer("aff", "Affine", ["x"], ["y"], "(0.7, -0.2)"),
                    {"x": RNG.uniform(-1, 1, (3, 2))})


def test_gradient_python_between_torch_layers():
    text = (_input("x", (3, 4)) + _input("t", (3, 2)) +
            'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "h" inner_product_param '
            '{ num_output: 2 weight_filler { type: "gaussian" std: 0.5 } '
            'bias_filler { type: "gaussian" std: 0.5 } } }\n' +
            py_layer("aff", "Affine", ["h"], ["y"], "(1.3, 0.4)") +
            py_layer("loss", "EuclideanLoss", ["y", "t"], ["loss"], extra="loss_weight: 1"))
    check_gradients(text, {"x": RNG.uniform(-1, 1, (3, 4)), "t": RNG.uniform(-1, 1, (3, 2))})


# ----------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------
def _build_error(text, match):
    with pytest.raises(DecaffeError, match=match) as info:
        net_of(text)
    return info.value


def test_error_module_not_importable():
    err = _build_error(_input("x", (2,)) + py_layer("pl", "X", ["x"], ["y"],
                                                    module="decaffe_test_no_such_pylayer"),
                       "cannot import module 'decaffe_test_no_such_pylayer'")
    assert "layer 'pl'" in str(err) and "ModuleNotFoundError" in str(err)
    assert isinstance(err.__cause__, ImportError)
    assert isinstance(err, PythonLayerError)  # a set-up error of decaffe's, naming the field


def test_error_module_import_fails_inside():
    err = _build_error(_input("x", (2,)) + py_layer("pl", "X", ["x"], ["y"],
                                                    module="decaffe_test_pylayer_broken"),
                       "decaffe_test_no_such_module")
    assert "layer 'pl'" in str(err)


def test_error_class_missing():
    err = _build_error(_input("x", (2,)) + py_layer("pl", "Multiplyy", ["x"], ["y"]),
                       "has no class 'Multiplyy'")
    assert "layer 'pl'" in str(err) and "Multiply" in str(err)  # the suggestion


@pytest.mark.parametrize("cls", ["NotALayer", "not_a_class"])
def test_error_class_not_deriving_from_caffe_layer(cls):
    err = _build_error(_input("x", (2,)) + py_layer("pl", cls, ["x"], ["y"]),
                       "not a class deriving from caffe.Layer")
    assert "layer 'pl'" in str(err)


def test_error_module_or_layer_not_given():
    _build_error(_input("x", (2,)) + 'layer { name: "pl" type: "Python" bottom: "x" top: "y" '
                 'python_param { layer: "Multiply" } }', "python_param.module")
    _build_error(_input("x", (2,)) + f'layer {{ name: "pl" type: "Python" bottom: "x" top: "y" '
                 f'python_param {{ module: "{MOD}" }} }}', "python_param.layer")


def _noted(e: BaseException, layer: str, where: str) -> bool:
    return any(f"{where} of Python layer '{layer}'" in n for n in getattr(e, "__notes__", []))


def test_error_raised_in_setup_reaches_the_caller_as_itself():
    with pytest.raises(ValueError, match="boom in setup") as info:
        net_of(_input("x", (2,)) + py_layer("boom", "Raising", ["x"], ["y"], "setup"))
    assert type(info.value) is ValueError  # not a wrapper type
    assert _noted(info.value, "boom", "setup")


@pytest.mark.parametrize("where", ["forward", "reshape"])
def test_error_raised_in_forward_reaches_the_caller_as_itself(where):
    net = net_of(_input("x", (2,)) + py_layer("boom", "Raising", ["x"], ["y"], where))
    with pytest.raises(ValueError, match=f"boom in {where}") as info:
        net.forward()
        net.forward()  # the reshape case raises from the second pass on
    assert type(info.value) is ValueError and _noted(info.value, "boom", where)


def test_error_raised_in_backward_reaches_the_caller_as_itself():
    net = net_of(_input("x", (2,)) + py_layer("boom", "Raising", ["x"], ["y"], "backward"))
    net.forward()
    with pytest.raises(ValueError, match="boom in backward") as info:
        net.backward()
    assert type(info.value) is ValueError and _noted(info.value, "boom", "backward")
    text = (_input("x", (2,)) + _input("t", (2,)) +
            py_layer("boom", "Raising", ["x"], ["y"], "backward") +
            py_layer("loss", "EuclideanLoss", ["y", "t"], ["loss"], extra="loss_weight: 1"))
    net = net_of(text)
    with pytest.raises(ValueError, match="boom in backward") as info:
        net.forward_backward()  # through autograd's engine: still the user's exception
    assert type(info.value) is ValueError and _noted(info.value, "boom", "backward")


def test_error_missing_backward_names_the_layer():
    net = net_of(_input("x", (2,)) + py_layer("fw", "NoBackward", ["x"], ["y"]))
    net.blobs["x"].data[...] = [1, 2]
    np.testing.assert_array_equal(net.forward()["y"], [1, 2])
    with pytest.raises(NotImplementedError) as info:
        net.backward()
    assert _noted(info.value, "fw", "backward")
    # a net that needs no backward never calls it
    net = net_of(_input("x", (2,)) + py_layer("fw", "NoBackward", ["x"], ["y"]),
                 force_backward=False)
    net.forward()
    net.backward()


def test_note_on_python_3_10_is_the_notes_list():
    from decaffe.layers.python_layer import note_exception

    e = KeyError("k")
    note_exception(e, "first")
    note_exception(e, "second")
    assert e.__notes__ == ["first", "second"]


# ----------------------------------------------------------------------------------------------
# pycaffe's spelling and devices
# ----------------------------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(caffe, "Layer"),
                    reason="caffe.Layer is not exported yet (core: export python_layer.Layer)")
def test_layer_written_against_caffe_layer():
    assert caffe.Layer is Layer
    net = net_of(_input("x", (3,)) +
                 py_layer("ten", "TimesTen", ["x"], ["y"], module="decaffe_test_pylayer_caffe"))
    net.blobs["x"].data[...] = [1, 2, 3]
    np.testing.assert_array_equal(net.forward()["y"], [10, 20, 30])


def test_blobvec_outside_a_net():
    class Free(Layer):
        pass

    layer = Free()
    layer.blobs.add_blob(2, 3)
    layer.blobs.add_blob((4,))
    assert len(layer.blobs) == 2 and layer.blobs[0].shape == (2, 3)
    assert layer.blobs[1].data.shape == (4,) and np.all(layer.blobs[1].data == 0)
    with pytest.raises(TypeError):
        layer.blobs.add_blob(2.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_python_layer_on_gpu():
    text = (_input("x", (3, 1)) + _input("t", (3, 1)) +
            py_layer("aff", "Affine", ["x"], ["y"], "(2.0, 1.0)") +
            py_layer("loss", "EuclideanLoss", ["y", "t"], ["loss"], extra="loss_weight: 1"))
    net = net_of(text)
    caffe.set_mode_gpu()
    try:
        net.blobs["x"].data[...] = [[1], [2], [3]]
        net.blobs["t"].data[...] = 0
        out = net.forward()
        assert net.blobs["y"].tensor().device.type == "cuda"
        np.testing.assert_allclose(out["loss"], [(9 + 25 + 49) / 6], rtol=1e-6)
        net.clear_param_diffs()
        net.backward()
        np.testing.assert_allclose(net.params["aff"][0].diff, [(3 + 10 + 21) / 3], rtol=1e-6)
        np.testing.assert_allclose(net.params["aff"][1].diff, [(3 + 5 + 7) / 3], rtol=1e-6)
        np.testing.assert_allclose(net.blobs["x"].diff.ravel(), [2, 10 / 3, 14 / 3], rtol=1e-6)
    finally:
        caffe.set_mode_cpu()


LINREG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models",
                      "bvlc", "examples", "pycaffe", "linreg.prototxt")


@pytest.mark.skipif("DummyData" not in decaffe.layer_type_list(),
                    reason="the DummyData layer is not available")
def test_bvlc_linreg_example():
    """BVLC's examples/pycaffe/linreg.prototxt: a Python Euclidean loss on two InnerProducts."""
    net = caffe.Net(LINREG, caffe.TRAIN)
    loss = float(net.forward()["loss"][0])
    ipx, ipy = net.blobs["ipx"].data.astype(np.float64), net.blobs["ipy"].data.astype(np.float64)
    assert loss == pytest.approx(((ipx - ipy) ** 2).sum() / 10 / 2, rel=1e-5)
    net.clear_param_diffs()
    net.backward()
    x = net.blobs["x"].data.reshape(10, -1).astype(np.float64)
    want = ((ipx - ipy) / 10).T @ x  # d loss / d W_ipx
    np.testing.assert_allclose(net.params["ipx"][0].diff, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.params["ipy"][0].diff,
                               -((ipx - ipy) / 10).T @ net.blobs["y"].data.reshape(10, -1),
                               rtol=1e-4, atol=1e-6)


def test_blobs_added_before_setup_are_adopted():
    """Blobs a layer adds in its own __init__ (before it joins the net) become params too."""
    import decaffe_test_pylayers as mod

    class EarlyBlobs(mod.Affine):
        def __init__(self, param):
            super().__init__(param)
            self.blobs.add_blob(3)

        def setup(self, bottom, top):
            super().setup(bottom, top)

    mod.EarlyBlobs = EarlyBlobs
    try:
        net = net_of(_input("x", (2,)) + py_layer("e", "EarlyBlobs", ["x"], ["y"]))
        assert [b.shape for b in net.params["e"]] == [(3,), (1,), (1,)]
    finally:
        del mod.EarlyBlobs
