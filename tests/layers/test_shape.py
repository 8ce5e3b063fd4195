"""Shape and routing layers (decaffe/layers/shape.py): top shapes by Caffe's rules,
forward against numpy, Caffe's exact gradient routing, and the errors Caffe raises for bad
configurations. The finite-difference checks of each parameter variant are tests/layer_db.py's
samples; those left here need inputs a sample cannot draw (Filter's selector, BatchReindex's
repeated indices, a Parameter's loaded values)."""

import numpy as np
import pytest
import torch
from gradcheck import check_gradients

import decaffe
from decaffe.errors import DecaffeError, LayerParamError


def net_text(body: str, inputs: dict) -> str:
    """An Input layer giving `inputs` (name -> shape), followed by `body`."""
    if not inputs:
        return body
    tops = " ".join(f'top: "{n}"' for n in inputs)
    shapes = " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }"
                      for s in inputs.values())
    return (f'layer {{ name: "in" type: "Input" {tops} input_param {{ {shapes} }} }}\n'
            + body)


def layer(kind: str, params: str = "", bottoms=("x",), tops=("y",), name: str = "l") -> str:
    b = " ".join(f'bottom: "{n}"' for n in bottoms)
    t = " ".join(f'top: "{n}"' for n in tops)
    return f'layer {{ name: "{name}" type: "{kind}" {b} {t} {params} }}\n'


def build(body: str, shapes: dict, phase=decaffe.TRAIN, dtype=torch.float64,
          force_backward: bool = True):
    text = ("force_backward: true\n" if force_backward else "") + net_text(body, shapes)
    return decaffe.Net(text, phase, dtype=dtype)


def run(body: str, inputs: dict, **kw):
    net = build(body, {k: np.shape(v) for k, v in inputs.items()}, **kw)
    for k, v in inputs.items():
        net.blobs[k].data[...] = v
    net.forward()
    return net


def backward(net, top_diff: dict):
    for k, v in top_diff.items():
        net.blobs[k].diff[...] = v
    net.backward()


def rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def distinct(shape, seed=0):
    """Values at least 0.1 apart and from 0: finite differences never cross a kink."""
    n = int(np.prod(shape))
    v = (np.random.default_rng(seed).permutation(n) - n / 2 + 0.5) * 0.1
    return v.reshape(shape)


def expect_error(body, shapes, *needles, error=LayerParamError):
    with pytest.raises(error) as e:
        net = build(body, shapes)
        net.forward()
    for n in needles:
        assert n in str(e.value), f"{n!r} not in {e.value}"
    return e.value


# ----------------------------------------------------------------------------------------------
# Eltwise
# ----------------------------------------------------------------------------------------------
AB = {"a": (2, 3, 4), "b": (2, 3, 4)}
ABC = {"a": (2, 3, 4), "b": (2, 3, 4), "c": (2, 3, 4)}


def test_eltwise_forward_ops():
    a, b, c = rand((2, 3, 4), 1), rand((2, 3, 4), 2), rand((2, 3, 4), 3)
    ins = {"a": a, "b": b, "c": c}
    bots = ("a", "b", "c")
    cases = [("", a + b + c),
             ("eltwise_param { operation: SUM coeff: 0.5 coeff: -2 coeff: 3 }",
              0.5 * a - 2 * b + 3 * c),
             ("eltwise_param { operation: PROD }", a * b * c),
             ("eltwise_param { operation: PROD stable_prod_grad: false }", a * b * c),
             ("eltwise_param { operation: MAX }", np.maximum(np.maximum(a, b), c))]
    for params, want in cases:
        net = run(layer("Eltwise", params, bots), ins)
        np.testing.assert_allclose(net.blobs["y"].data, want, rtol=1e-6, atol=1e-12)


def test_eltwise_max_ties_route_as_caffe():
    # bottom 1 wins a tie with bottom 0; later bottoms must be strictly larger
    a = np.array([[1.0, 2.0, 5.0, 0.0]])
    b = np.array([[1.0, 3.0, 5.0, 0.0]])
    c = np.array([[1.0, 3.0, 4.0, 0.5]])
    net = run(layer("Eltwise", "eltwise_param { operation: MAX }", ("a", "b", "c")),
              {"a": a, "b": b, "c": c})
    backward(net, {"y": np.array([[10.0, 20.0, 30.0, 40.0]])})
    np.testing.assert_array_equal(net.blobs["a"].diff, [[0, 0, 0, 0]])
    np.testing.assert_array_equal(net.blobs["b"].diff, [[10, 20, 30, 0]])
    np.testing.assert_array_equal(net.blobs["c"].diff, [[0, 0, 0, 40]])


def test_eltwise_prod_unstable_gradient_is_top_over_bottom():
    a = np.array([[2.0, 0.0]])
    b = np.array([[3.0, 4.0]])
    stable = run(layer("Eltwise", "eltwise_param { operation: PROD }", ("a", "b")),
                 {"a": a, "b": b})
    backward(stable, {"y": np.ones((1, 2))})
    np.testing.assert_array_equal(stable.blobs["a"].diff, [[3.0, 4.0]])
    unstable = run(layer("Eltwise", "eltwise_param { operation: PROD stable_prod_grad: false }",
                         ("a", "b")), {"a": a, "b": b})
    backward(unstable, {"y": np.ones((1, 2))})
    np.testing.assert_array_equal(unstable.blobs["b"].diff, [[2.0, 0.0]])
    assert unstable.blobs["a"].diff[0, 0] == 3.0 and np.isnan(unstable.blobs["a"].diff[0, 1])


# ----------------------------------------------------------------------------------------------
# Concat, Slice
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("params,shapes,axis", [
    ("", {"a": (2, 3, 4), "b": (2, 5, 4)}, 1),
    ("concat_param { axis: 0 }", {"a": (2, 3, 4), "b": (1, 3, 4)}, 0),
    ("concat_param { axis: -1 }", {"a": (2, 3, 4), "b": (2, 3, 2), "c": (2, 3, 1)}, 2),
    ("concat_param { concat_dim: 2 }", {"a": (2, 3, 4), "b": (2, 3, 6)}, 2),
])
def test_concat_forward_and_backward(params, shapes, axis):
    ins = {k: rand(s, i) for i, (k, s) in enumerate(shapes.items())}
    body = layer("Concat", params, tuple(shapes))
    net = run(body, ins)
    want = np.concatenate(list(ins.values()), axis=axis)
    np.testing.assert_array_equal(net.blobs["y"].data, want)
    backward(net, {"y": want * 2})
    for k, v in ins.items():
        np.testing.assert_array_equal(net.blobs[k].diff, v * 2)


def test_concat_single_bottom_is_identity():
    x = rand((2, 3))
    net = run(layer("Concat", "", ("x",)), {"x": x})
    np.testing.assert_array_equal(net.blobs["y"].data, x)


@pytest.mark.parametrize("params,ntop,axis,sizes", [
    ("slice_param { slice_point: 1 slice_point: 4 }", 3, 1, [1, 3, 2]),
    ("slice_param { axis: 0 }", 2, 0, [2, 2]),
    ("slice_param { axis: -1 slice_point: 2 }", 2, 2, [2, 3]),
    ("slice_param { slice_dim: 2 }", 5, 2, [1] * 5),
    ("", 3, 1, [2, 2, 2]),
])
def test_slice_forward_and_backward(params, ntop, axis, sizes):
    x = rand((4, 6, 5))
    tops = tuple(f"y{i}" for i in range(ntop))
    body = layer("Slice", params, ("x",), tops)
    net = run(body, {"x": x})
    parts = np.split(x, np.cumsum(sizes)[:-1], axis=axis)
    for t, p in zip(tops, parts):
        np.testing.assert_array_equal(net.blobs[t].data, p)
    backward(net, {t: p * 3 for t, p in zip(tops, parts)})
    np.testing.assert_array_equal(net.blobs["x"].diff, x * 3)


def test_slice_single_top_is_identity():
    x = rand((2, 3))
    net = run(layer("Slice", "", ("x",), ("y",)), {"x": x})
    np.testing.assert_array_equal(net.blobs["y"].data, x)


# ----------------------------------------------------------------------------------------------
# Flatten, Reshape
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("params,want", [
    ("", (2, 60)),
    ("flatten_param { axis: 0 }", (120,)),
    ("flatten_param { axis: 2 }", (2, 3, 20)),
    ("flatten_param { axis: 1 end_axis: 2 }", (2, 12, 5)),
    ("flatten_param { axis: -3 end_axis: -2 }", (2, 12, 5)),
    ("flatten_param { axis: 3 end_axis: 3 }", (2, 3, 4, 5)),
])
def test_flatten(params, want):
    x = rand((2, 3, 4, 5))
    body = layer("Flatten", params)
    net = run(body, {"x": x})
    np.testing.assert_array_equal(net.blobs["y"].data, x.reshape(want))


def reshape_params(dims, axis=None, num_axes=None):
    s = "reshape_param { shape { " + " ".join(f"dim: {d}" for d in dims) + " }"
    if axis is not None:
        s += f" axis: {axis}"
    if num_axes is not None:
        s += f" num_axes: {num_axes}"
    return s + " }"


@pytest.mark.parametrize("dims,axis,num_axes,want", [
    ([0, -1, 1], None, None, (2, 60, 1)),
    ([6, 4, 5], None, None, (6, 4, 5)),
    ([-1], None, None, (120,)),
    ([0, 0, 0, 0], None, None, (2, 3, 4, 5)),
    ([1, 1, 1], 0, 0, (1, 1, 1, 2, 3, 4, 5)),   # insert singleton axes at the start
    ([1, 1, 1], 2, 0, (2, 3, 1, 1, 1, 4, 5)),   # ... in the middle
    ([1, 1, 1], -1, 0, (2, 3, 4, 5, 1, 1, 1)),  # ... at the end
    ([-1], 1, 2, (2, 12, 5)),                   # flatten the middle
    ([2, -1], 1, -1, (2, 2, 30)),
    ([0, 2, -1], 1, 2, (2, 3, 2, 2, 5)),       # 0 copies the bottom axis at axis + i
    ([], 1, 0, (2, 3, 4, 5)),
    ([1], 4, 0, (2, 3, 4, 5, 1)),
])
def test_reshape(dims, axis, num_axes, want):
    x = rand((2, 3, 4, 5))
    body = layer("Reshape", reshape_params(dims, axis, num_axes))
    net = run(body, {"x": x})
    np.testing.assert_array_equal(net.blobs["y"].data, x.reshape(want))


def test_reshape_follows_a_batch_change():
    body = layer("Reshape", reshape_params([0, -1]))
    net = build(body, {"x": (2, 3, 4)})
    net.blobs["x"].reshape(5, 3, 4)
    net.reshape()
    assert net.blobs["y"].shape == (5, 12)


@pytest.mark.parametrize("dims,axis,num_axes,needle", [
    ([-1, -1], None, None, "several -1"),
    ([7, -1], None, None, "not divisible"),
    ([5, 5], None, None, "values"),
    ([0, 0, 0, 0, 0], None, None, "no axis 4 to copy"),
    ([1], 5, 0, "reshape_param.axis"),
    ([1], -6, 0, "reshape_param.axis"),
    ([1], 2, 3, "reshape_param.num_axes"),
    ([1], 0, -2, "reshape_param.num_axes"),
    ([-3, 40], None, None, "negative"),
])
def test_reshape_errors(dims, axis, num_axes, needle):
    expect_error(layer("Reshape", reshape_params(dims, axis, num_axes)), {"x": (2, 3, 4, 5)},
                 "'l'", needle)


# ----------------------------------------------------------------------------------------------
# Crop, Tile
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("params,index", [
    ("crop_param { axis: 2 offset: 1 offset: 2 }", np.s_[:, :, 1:4, 2:5]),
    ("", np.s_[:, :, 0:3, 0:3]),
    ("crop_param { offset: 2 }", np.s_[:, :, 2:5, 2:5]),
    ("crop_param { axis: 1 offset: 1 }", np.s_[:, 1:3, 1:4, 1:4]),
    ("crop_param { axis: -1 offset: 4 }", np.s_[:, :, :, 4:7]),
])
def test_crop(params, index):
    x = rand((2, 4, 7, 7))
    ref_shape = (2, 2, 3, 3)
    body = layer("Crop", params, ("x", "r"))
    net = run(body, {"x": x, "r": np.zeros(ref_shape)})
    np.testing.assert_array_equal(net.blobs["y"].data, x[index])
    dy = rand(net.blobs["y"].shape, 1)
    backward(net, {"y": dy})
    want = np.zeros_like(x)
    want[index] = dy
    np.testing.assert_array_equal(net.blobs["x"].diff, want)
    np.testing.assert_array_equal(net.blobs["r"].diff, 0)


@pytest.mark.parametrize("params,reps", [
    ("tile_param { tiles: 2 }", (1, 2, 1)),
    ("tile_param { axis: 0 tiles: 3 }", (3, 1, 1)),
    ("tile_param { axis: -1 tiles: 2 }", (1, 1, 2)),
])
def test_tile(params, reps):
    x = rand((2, 3, 4))
    body = layer("Tile", params)
    net = run(body, {"x": x})
    np.testing.assert_array_equal(net.blobs["y"].data, np.tile(x, reps))


# ----------------------------------------------------------------------------------------------
# Reduction, ArgMax
# ----------------------------------------------------------------------------------------------
REDUCE = {"SUM": lambda r: r.sum(-1), "ASUM": lambda r: np.abs(r).sum(-1),
          "SUMSQ": lambda r: (r * r).sum(-1), "MEAN": lambda r: r.mean(-1)}


@pytest.mark.parametrize("op", list(REDUCE))
@pytest.mark.parametrize("axis,coeff", [(0, 1.0), (1, 0.5), (-1, -2.0), (2, 1.0)])
def test_reduction(op, axis, coeff):
    x = distinct((2, 3, 4), 9)
    params = f"reduction_param {{ operation: {op} axis: {axis} coeff: {coeff} }}"
    body = layer("Reduction", params)
    net = run(body, {"x": x})
    a = axis % 3
    want = coeff * REDUCE[op](x.reshape(x.shape[:a] + (-1,)))
    assert net.blobs["y"].shape == x.shape[:a]
    np.testing.assert_allclose(net.blobs["y"].data, want, rtol=1e-6, atol=1e-12)


def test_reduction_default_is_sum_to_a_scalar():
    x = rand((2, 3))
    net = run(layer("Reduction"), {"x": x})
    assert net.blobs["y"].shape == ()
    np.testing.assert_allclose(net.blobs["y"].data, x.sum())


def test_reduction_axis_out_of_range():
    expect_error(layer("Reduction", "reduction_param { axis: 3 }"), {"x": (2, 3, 4)},
                 "reduction_param.axis")


def argmax_ref(x, top_k, out_max_val, axis=None):
    """Caffe's rule: sort (value, index) pairs in descending order."""
    if axis is None:
        flat = x.reshape(x.shape[0], -1)
        idx = np.array([sorted(range(flat.shape[1]), key=lambda j: (row[j], j),
                               reverse=True)[:top_k] for row in flat])
        vals = np.take_along_axis(flat, idx, 1)
        out = np.stack([idx, vals], 1) if out_max_val else idx[:, None]
        return out.reshape(out.shape + (1,) * max(0, x.ndim - 3))
    moved = np.moveaxis(x, axis, -1)
    idx = np.apply_along_axis(lambda row: np.array(sorted(range(len(row)), key=lambda j: (
        row[j], j), reverse=True)[:top_k]), -1, moved)
    out = np.take_along_axis(moved, idx, -1) if out_max_val else idx
    return np.moveaxis(out, -1, axis)


@pytest.mark.parametrize("params,top_k,out_max_val,axis", [
    ("", 1, False, None),
    ("argmax_param { top_k: 3 }", 3, False, None),
    ("argmax_param { top_k: 2 out_max_val: true }", 2, True, None),
    ("argmax_param { axis: 1 }", 1, False, 1),
    ("argmax_param { axis: 1 top_k: 2 out_max_val: true }", 2, True, 1),
    ("argmax_param { axis: -1 top_k: 3 }", 3, False, 3),
])
def test_argmax(params, top_k, out_max_val, axis):
    # small integers: many ties, which go to the larger index
    x = np.random.default_rng(10).integers(0, 4, size=(2, 3, 4, 5)).astype(np.float64)
    net = run(layer("ArgMax", params), {"x": x}, force_backward=False)
    want = argmax_ref(x, top_k, out_max_val, axis)
    assert net.blobs["y"].shape == want.shape
    np.testing.assert_array_equal(net.blobs["y"].data, want)


def test_argmax_shapes_and_errors():
    net = build(layer("ArgMax", "argmax_param { top_k: 2 }"), {"x": (4, 10)})
    assert net.blobs["y"].shape == (4, 1, 2)
    net = build(layer("ArgMax", "argmax_param { out_max_val: true }"), {"x": (4, 3, 2, 2)})
    assert net.blobs["y"].shape == (4, 2, 1, 1)
    expect_error(layer("ArgMax", "argmax_param { top_k: 11 }"), {"x": (4, 10)},
                 "argmax_param.top_k", "exceeds")
    expect_error(layer("ArgMax", "argmax_param { axis: 1 top_k: 4 }"), {"x": (4, 3)},
                 "argmax_param.top_k")
    expect_error(layer("ArgMax", "argmax_param { top_k: 0 }"), {"x": (4, 3)},
                 "argmax_param.top_k")


def test_argmax_has_no_backward():
    net = run(layer("ArgMax", name="am"), {"x": rand((2, 5))})
    with pytest.raises(LayerParamError, match="'am'.*no backward"):
        backward(net, {"y": np.ones(net.blobs["y"].shape)})


# ----------------------------------------------------------------------------------------------
# Embed, Filter, BatchReindex
# ----------------------------------------------------------------------------------------------
EMBED = ("embed_param { input_dim: 5 num_output: 3 "
         "weight_filler { type: 'gaussian' std: 1 } bias_filler { type: 'uniform' } }")


def test_embed_forward_and_parameter_gradients():
    x = np.array([[0.0, 4.0, 2.7], [4.0, 1.0, 0.0]])  # 2.7 truncates to 2, as C's cast
    net = run(layer("Embed", EMBED, name="e"), {"x": x})
    w, b = net.params["e"][0].data, net.params["e"][1].data
    assert w.shape == (5, 3) and b.shape == (3,)
    assert net.blobs["y"].shape == (2, 3, 3)
    np.testing.assert_allclose(net.blobs["y"].data, w[x.astype(int)] + b)
    dy = rand((2, 3, 3), 2)
    for p in net.params["e"]:
        p.diff[...] = 0
    backward(net, {"y": dy})
    want = np.zeros((5, 3))
    np.add.at(want, x.astype(int).reshape(-1), dy.reshape(-1, 3))
    np.testing.assert_allclose(net.params["e"][0].diff, want)
    np.testing.assert_allclose(net.params["e"][1].diff, dy.sum(axis=(0, 1)))
    np.testing.assert_array_equal(net.blobs["x"].diff, 0)  # no gradient to indices


def test_embed_without_bias():
    x = np.array([1.0, 3.0])
    body = layer("Embed", "embed_param { input_dim: 4 num_output: 2 bias_term: false "
                 "weight_filler { type: 'gaussian' } }", name="e")
    net = run(body, {"x": x})
    assert len(net.params["e"]) == 1
    np.testing.assert_array_equal(net.blobs["y"].data, net.params["e"][0].data[[1, 3]])


def test_embed_index_out_of_range():
    net = build(layer("Embed", EMBED, name="e"), {"x": (3,)})
    net.blobs["x"].data[...] = [0, 5, 1]
    with pytest.raises(LayerParamError, match="'e'.*\\[0, 5\\)"):
        net.forward()


def test_filter_selects_items_and_routes_gradients():
    x, z = rand((5, 3, 2), 1), rand((5, 4), 2)
    sel = np.array([1.0, 0.0, 0.5, 0.0, -2.0])
    body = layer("Filter", "", ("x", "z", "s"), ("fx", "fz"), name="f")
    net = build(body, {"x": x.shape, "z": z.shape, "s": sel.shape})
    assert net.blobs["fx"].shape == (5, 3, 2)  # the upper bound before any forward
    for k, v in (("x", x), ("z", z), ("s", sel)):
        net.blobs[k].data[...] = v
    net.forward()
    keep = [0, 2, 4]
    np.testing.assert_array_equal(net.blobs["fx"].data, x[keep])
    np.testing.assert_array_equal(net.blobs["fz"].data, z[keep])
    dfx, dfz = rand((3, 3, 2), 3), rand((3, 4), 4)
    backward(net, {"fx": dfx, "fz": dfz})
    want = np.zeros_like(x)
    want[keep] = dfx
    np.testing.assert_array_equal(net.blobs["x"].diff, want)
    np.testing.assert_array_equal(net.blobs["s"].diff, 0)
    # a selector of shape (N, 1, 1) works too
    check_gradients(net_text(layer("Filter", "", ("x", "s"), ("fx",)),
                             {"x": x.shape, "s": (5, 1, 1)}),
                    {"x": x, "s": sel.reshape(5, 1, 1)}, check_inputs=["x"])


def test_batch_reindex_forward_and_accumulating_gradient():
    x = rand((4, 3), 5)
    ind = np.array([3.0, 0.0, 3.0, 1.0, 3.0])
    body = layer("BatchReindex", "", ("x", "i"))
    net = run(body, {"x": x, "i": ind})
    np.testing.assert_array_equal(net.blobs["y"].data, x[[3, 0, 3, 1, 3]])
    dy = rand((5, 3), 6)
    backward(net, {"y": dy})
    want = np.zeros_like(x)
    np.add.at(want, [3, 0, 3, 1, 3], dy)
    np.testing.assert_allclose(net.blobs["x"].diff, want)
    np.testing.assert_array_equal(net.blobs["i"].diff, 0)
    check_gradients(net_text(body, {"x": x.shape, "i": ind.shape}), {"x": x, "i": ind},
                    check_inputs=["x"])


@pytest.mark.parametrize("ind", [[0.0, 4.0], [-0.5, 1.0]])
def test_batch_reindex_index_range(ind):
    net = build(layer("BatchReindex", "", ("x", "i"), name="br"), {"x": (4, 3), "i": (2,)})
    net.blobs["i"].data[...] = ind
    with pytest.raises(LayerParamError, match="'br'.*batch indices"):
        net.forward()


def test_batch_reindex_index_must_have_one_axis():
    expect_error(layer("BatchReindex", "", ("x", "i")), {"x": (4, 3), "i": (2, 1)},
                 "one axis")


# ----------------------------------------------------------------------------------------------
# Parameter, Silence, DummyData
# ----------------------------------------------------------------------------------------------
PARAM = ('layer { name: "p" type: "Parameter" top: "w" '
         'parameter_param { shape { dim: 2 dim: 3 } } }\n')


def test_parameter_layer_is_a_learnable_top():
    body = PARAM + layer("Power", "power_param { power: 2 }", ("w",), ("y",), name="sq")
    net = build(body, {})
    assert net.params["p"][0].data.shape == (2, 3)
    np.testing.assert_array_equal(net.params["p"][0].data, 0)
    w = rand((2, 3), 7)
    net.params["p"][0].data[...] = w
    net.forward()
    np.testing.assert_array_equal(net.blobs["w"].data, w)
    net.params["p"][0].diff[...] = 0
    backward(net, {"y": np.ones((2, 3))})
    np.testing.assert_allclose(net.params["p"][0].diff, 2 * w)
    check_gradients(body, {}, params={"p": [w]})


def test_parameter_layer_trains_through_forward_backward():
    body = PARAM + layer("Reduction", "reduction_param { operation: SUMSQ } loss_weight: 1",
                         ("w",), ("loss",))
    net = build(body, {}, force_backward=False)
    w = rand((2, 3), 8)
    net.params["p"][0].data[...] = w
    net.clear_param_diffs()
    loss = net.forward_backward()
    assert loss == pytest.approx((w * w).sum())
    np.testing.assert_allclose(net.params["p"][0].diff, 2 * w)


def test_silence_consumes_bottoms():
    body = (layer("Power", "power_param { scale: 3 }", ("x",), ("y",), name="p")
            + 'layer { name: "s" type: "Silence" bottom: "x" bottom: "y" }\n'
            + layer("Power", "power_param { scale: 2 }", ("x",), ("z",), name="q"))
    x = rand((2, 3))
    net = run(body, {"x": x})
    assert net.outputs == ["z"]
    backward(net, {"z": np.ones((2, 3))})
    np.testing.assert_allclose(net.blobs["x"].diff, 2.0)
    expect_error('layer { name: "s" type: "Silence" bottom: "x" top: "t" }\n',
                 {"x": (2,)}, "'s'", error=DecaffeError)


def dummy(params, tops=("a",)):
    t = " ".join(f'top: "{n}"' for n in tops)
    return f'layer {{ name: "d" type: "DummyData" {t} dummy_data_param {{ {params} }} }}\n'


def test_dummy_data_constant_is_filled_once():
    net = build(dummy("shape { dim: 2 dim: 3 } data_filler { type: 'constant' value: 1.5 }"),
                {}, force_backward=False)
    net.forward()
    np.testing.assert_array_equal(net.blobs["a"].data, 1.5)
    net.blobs["a"].data[0, 0] = 7.0  # Caffe never refills a constant top
    net.forward()
    assert net.blobs["a"].data[0, 0] == 7.0 and net.blobs["a"].data[1, 2] == 1.5


def test_dummy_data_random_fillers_refill_and_follow_the_seed():
    params = ("shape { dim: 300 } shape { dim: 2 dim: 5 } "
              "data_filler { type: 'gaussian' std: 2 } data_filler { type: 'constant' }")
    runs = []
    for _ in range(2):
        decaffe.set_random_seed(99)
        net = build(dummy(params, ("g", "c")), {}, force_backward=False)
        net.forward()
        first = net.blobs["g"].data.copy()
        net.forward()
        runs.append((first, net.blobs["g"].data.copy()))
        np.testing.assert_array_equal(net.blobs["c"].data, np.zeros((2, 5)))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert not np.array_equal(runs[0][0], runs[0][1])
    assert 1.5 < runs[0][0].std() < 2.5


@pytest.mark.parametrize("filler,check", [
    ("type: 'constant' value: -3", lambda a: (a == -3).all()),
    ("type: 'uniform' min: -2 max: -1", lambda a: ((a >= -2) & (a <= -1)).all()),
    ("type: 'gaussian' mean: 5 std: 0.1", lambda a: abs(a.mean() - 5) < 0.05),
    ("type: 'positive_unitball'", lambda a: np.allclose(a.reshape(4, -1).sum(1), 1)),
    # fan_in = 3*5*5 = 75: xavier bound sqrt(3/75) = 0.2, msra std sqrt(2/75)
    ("type: 'xavier'", lambda a: np.abs(a).max() <= 0.2 and np.abs(a).max() > 0.15),
    ("type: 'msra'", lambda a: abs(a.std() - np.sqrt(2 / 75)) < 0.03),
    ("type: 'bilinear'", lambda a: np.allclose(a[0, 0], a[3, 2]) and a[0, 0, 2, 2] == a.max()),
])
def test_dummy_data_every_filler(filler, check):
    net = build(dummy(f"shape {{ dim: 4 dim: 3 dim: 5 dim: 5 }} data_filler {{ {filler} }}"),
                {}, force_backward=False)
    net.forward()
    a = net.blobs["a"].data
    assert a.shape == (4, 3, 5, 5) and check(a)


def test_dummy_data_shapes():
    net = build(dummy("num: 2 channels: 3 height: 4 width: 5", ("a", "b")), {},
                force_backward=False)
    net.forward()
    assert net.blobs["a"].shape == (2, 3, 4, 5) and net.blobs["b"].shape == (2, 3, 4, 5)
    np.testing.assert_array_equal(net.blobs["b"].data, 0)
    net = build(dummy("num: 2 num: 7 channels: 3 height: 1 width: 1 "
                      "data_filler { type: 'uniform' min: 3 max: 4 }", ("a", "b")), {},
                force_backward=False)
    net.forward()
    assert net.blobs["b"].shape == (7, 3, 1, 1)
    assert (net.blobs["b"].data >= 3).all() and (net.blobs["b"].data <= 4).all()
    net = build(dummy("shape { dim: 4 } shape { dim: 1 dim: 2 }", ("a", "b")), {},
                force_backward=False)
    assert net.blobs["a"].shape == (4,) and net.blobs["b"].shape == (1, 2)


@pytest.mark.parametrize("params,tops,field", [
    ("shape { dim: 2 } data_filler { } data_filler { }", ("a", "b", "c"),
     "dummy_data_param.data_filler"),
    ("shape { dim: 2 } num: 2 channels: 1 height: 1 width: 1", ("a",),
     "dummy_data_param.shape"),
    ("num: 2 num: 3 channels: 1 height: 1 width: 1", ("a", "b", "c"), "dummy_data_param.num"),
    ("shape { dim: 2 } shape { dim: 3 }", ("a", "b", "c"), "dummy_data_param.shape"),
    ("shape { dim: 2 } data_filler { type: 'gausian' }", ("a",),
     "dummy_data_param.data_filler[0]"),
])
def test_dummy_data_errors(params, tops, field):
    expect_error(dummy(params, tops), {}, "'d'", field)


# ----------------------------------------------------------------------------------------------
# forward after an input reshape without net.reshape() (Caffe's Forward reshapes first)
# ----------------------------------------------------------------------------------------------
def test_forward_follows_new_bottom_shapes_without_net_reshape():
    body = (layer("Slice", "", ("x",), ("s0", "s1"), name="sl")
            + layer("Concat", "concat_param { axis: 0 }", ("s1", "s0"), ("c",), name="cc")
            + layer("Crop", "crop_param { axis: 1 offset: 1 }", ("c", "r"), ("y",), name="cr"))
    net = build(body, {"x": (2, 4), "r": (4, 1)})
    x = rand((3, 6))
    net.blobs["x"].reshape(3, 6)
    net.blobs["r"].reshape(6, 1)
    net.blobs["x"].data[...] = x
    net.forward()
    c = np.concatenate([x[:, 3:], x[:, :3]], axis=0)
    np.testing.assert_array_equal(net.blobs["y"].data, c[:, 1:2])
    net.blobs["x"].reshape(3, 5)  # 5 columns cannot be sliced in two
    with pytest.raises(LayerParamError, match="'sl'.*evenly"):
        net.forward()


def test_eltwise_never_broadcasts():
    net = build(layer("Eltwise", "", ("a", "b"), name="e"), {"a": (2, 3), "b": (2, 3)})
    net.blobs["b"].reshape(1, 3)
    with pytest.raises(LayerParamError, match="'e'.*\\(1, 3\\).*\\(2, 3\\)"):
        net.forward()


def test_gradient_into_an_index_bottom_raises():
    # the index bottom comes from a learned layer, so it needs backward
    ip = ('layer { name: "ip" type: "InnerProduct" bottom: "x" top: "h2" inner_product_param '
          '{ num_output: 1 weight_filler { type: "constant" value: 0 } } }\n'
          + layer("Reshape", reshape_params([-1]), ("h2",), ("h",), name="rs"))
    loss = 'layer { name: "r" type: "Reduction" bottom: "y" top: "loss" loss_weight: 1 }\n'
    cases = [("Embed", EMBED, ("h",), "Embed layer's input", "propagate_down: false"),
             ("Filter", "", ("x", "h"), "selector",
              "propagate_down: true propagate_down: false"),
             ("BatchReindex", "", ("x", "h"), "index bottom",
              "propagate_down: true propagate_down: false")]
    for kind, params, bottoms, match, pd in cases:
        net = build(ip + layer(kind, params, bottoms, name="k") + loss, {"x": (2, 1)},
                    force_backward=False)
        net.forward()
        with pytest.raises(LayerParamError, match="'k'.*" + match):
            net.backward()
        # with propagate_down false on the index bottom, backward runs
        net = build(ip + layer(kind, f"{params} {pd}", bottoms, name="k") + loss,
                    {"x": (2, 1)}, force_backward=False)
        net.forward()
        net.backward()


# ----------------------------------------------------------------------------------------------
# the errors a bad configuration gets: (type, params, bottom shapes, tops, words it must hold)
# ----------------------------------------------------------------------------------------------
AB2 = {"a": (2, 3, 4), "b": (2, 3, 4)}
ERROR_CASES = [
    ("Eltwise", "", {"a": (2, 3), "b": (3, 2)}, ("y",), ("'l'", "(3, 2)", "(2, 3)", "same shape")),
    ("Eltwise", "eltwise_param { coeff: 1 }", AB2, ("y",),
     ("eltwise_param.coeff", "one coefficient per bottom")),
    ("Eltwise", "eltwise_param { operation: PROD coeff: 1 coeff: 2 }", AB2, ("y",),
     ("eltwise_param.coeff", "SUM")),
    ("Concat", "", {"a": (2, 3, 4), "b": (2, 3, 5)}, ("y",),
     ("'l'", "(2, 3, 4)", "(2, 3, 5)", "concat axis 1")),
    ("Concat", "", {"a": (2, 3, 4), "b": (2, 3)}, ("y",), ("number of axes",)),
    ("Concat", "concat_param { axis: 1 concat_dim: 1 }", AB2, ("y",), ("concat_param", "not both")),
    ("Concat", "concat_param { axis: 3 }", AB2, ("y",), ("concat_param.axis", "out of range")),
    ("Concat", "concat_param { concat_dim: 3 }", AB2, ("y",), ("concat_param.concat_dim",)),
    ("Slice", "slice_param { slice_point: 4 slice_point: 2 }", {"x": (2, 6)}, ("a", "b", "c"),
     ("slice_param.slice_point", "increasing")),
    ("Slice", "slice_param { slice_point: 2 slice_point: 7 }", {"x": (2, 6)}, ("a", "b", "c"),
     ("slice_param.slice_point", "exceeds")),
    ("Slice", "slice_param { slice_point: 2 }", {"x": (2, 6)}, ("a", "b", "c"),
     ("slice_param.slice_point", "give 2")),
    ("Slice", "", {"x": (2, 6)}, ("a", "b", "c", "d"), ("evenly", "(2, 6)")),
    ("Slice", "slice_param { axis: 1 slice_dim: 1 }", {"x": (2, 6)}, ("a", "b"), ("not both",)),
    ("Flatten", "", {"x": (2, 3)}, ("x",), ("in-place",)),
    ("Flatten", "flatten_param { axis: 2 end_axis: 1 }", {"x": (2, 3, 4)}, ("y",),
     ("flatten_param.end_axis",)),
    ("Flatten", "flatten_param { axis: 4 }", {"x": (2, 3, 4)}, ("y",),
     ("flatten_param.axis", "out of range")),
    ("Crop", "crop_param { offset: 3 }", {"x": (2, 3, 7, 7), "r": (2, 3, 5, 5)}, ("y",),
     ("crop_param.offset", "out of bounds", "axis 2")),
    ("Crop", "crop_param { axis: 1 offset: 1 offset: 1 }", {"x": (2, 3, 7, 7), "r": (2, 3, 5, 5)},
     ("y",), ("crop_param.offset", "give 1 or 3")),
    ("Crop", "", {"x": (2, 3, 7, 7), "r": (2, 3)}, ("y",), ("bottom 1",)),
    ("Tile", "tile_param { axis: 1 }", {"x": (2, 3)}, ("y",),
     ("tile_param.tiles", "must be given")),
    ("Tile", "tile_param { tiles: 0 }", {"x": (2, 3)}, ("y",), ("tile_param.tiles", "positive")),
    ("Embed", "embed_param { input_dim: 5 }", {"x": (2,)}, ("y",), ("embed_param.num_output",)),
    ("Embed", "embed_param { num_output: 5 }", {"x": (2,)}, ("y",), ("embed_param.input_dim",)),
    ("Filter", "", {"x": (5, 2), "s": (5, 2)}, ("a",), ("selector", "(5, 2)")),
    ("Filter", "", {"x": (4, 2), "s": (5,)}, ("a",), ("first dimensions", "(4, 2)", "(5,)")),
    ("Filter", "", {"x": (5, 2), "z": (5, 2), "s": (5,)}, ("a",), ("need 2 tops",)),
]


@pytest.mark.parametrize("type_,params,shapes,tops,needles", ERROR_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(ERROR_CASES)])
def test_errors_name_the_layer_and_field(type_, params, shapes, tops, needles):
    expect_error(layer(type_, params, tuple(shapes), tops), shapes, *needles)


def test_eltwise_needs_two_bottoms():  # a count check, not a parameter's: a DecaffeError
    expect_error(layer("Eltwise", "", ("a",)), {"a": (2, 3)}, "'l'", "at least 2",
                 error=DecaffeError)
