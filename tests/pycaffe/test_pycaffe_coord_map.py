"""caffe.coord_map: pycaffe's receptive-field arithmetic, checked against hand-derived maps,
FCN's published crop offsets, and the shapes decaffe's own layers produce."""

from __future__ import annotations

import numpy as np
import pytest

from decaffe.errors import DecaffeError
from decaffe.netspec import NetSpec
from decaffe.netspec import layers as L
from decaffe.netspec import params as P
from decaffe.pycaffe.coord_map import (
    AxisMismatchException,
    CoordMapError,
    CropError,
    UnconnectedTopsError,
    compose,
    coord_map,
    coord_map_from_to,
    crop,
    inverse,
)


def conv_pool_deconv(ks=3, stride=1, pad=0, pool=2, dstride=2, dpad=0):
    """data -> conv -> max pool -> deconv (kernel twice the stride), plus an aux input."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 1, 100, 100]))
    n.aux = L.Input(shape=dict(dim=[2, 1, 20, 20]))
    n.conv = L.Convolution(n.data, num_output=10, kernel_size=ks, stride=stride, pad=pad)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=pool, stride=pool, pad=0)
    dks = [2 * s for s in dstride] if isinstance(dstride, list) else 2 * dstride
    # Deconvolution has no parameter message of its own: its fields go in convolution_param
    n.deconv = L.Deconvolution(n.pool, convolution_param=dict(
        num_output=10, kernel_size=dks, stride=dstride, pad=dpad))
    return n


def test_single_layer_maps():
    n = conv_pool_deconv(ks=5, stride=2, pad=1)
    ax, a, b = coord_map(n.conv.fn)
    # conv: out = (in + p - (k-1)/2) / s  ->  scale 1/2, shift (1 - 2) / 2
    assert ax == 1 and a == pytest.approx(0.5) and b == pytest.approx(-0.5)
    ax, a, b = coord_map(n.deconv.fn)
    # deconv k4 s2 p0: scale 2, shift (4-1)/2 - 0
    assert ax == 1 and a == 2 and b == pytest.approx(1.5)
    assert coord_map(L.ReLU(n.conv).fn) == (None, 1, 0)
    ax, a, b = coord_map(L.Crop(n.deconv, n.data, axis=2, offset=[3, 4]).fn)
    assert ax == 1 and a == 1 and list(b) == [-3, -4]
    with pytest.raises(DecaffeError):
        coord_map(L.InnerProduct(n.conv, num_output=3).fn)


def test_dilation_and_legacy_hw_fields():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 50, 50]))
    n.c = L.Convolution(n.data, num_output=1, kernel_size=3, dilation=2, pad=2)
    ax, a, b = coord_map(n.c.fn)
    # effective kernel (3-1)*2+1 = 5: shift 2 - 2 = 0
    assert a == 1 and b == 0
    n.r = L.Convolution(n.data, num_output=1, kernel_h=3, kernel_w=5, stride_h=1, stride_w=2,
                        pad_h=0, pad_w=1)
    ax, a, b = coord_map(n.r.fn)
    np.testing.assert_allclose(a, [1, 0.5])
    np.testing.assert_allclose(b, [-1, (1 - 2) / 2])
    n.p = L.Pooling(n.data, pooling_param=dict(kernel_size=3, stride=2, pad=1))
    ax, a, b = coord_map(n.p.fn)
    assert ax == 1 and a == 0.5 and b == 0
    with pytest.raises(CoordMapError, match="kernel_size"):
        coord_map(L.Convolution(n.data, num_output=1).fn)
    with pytest.raises(CoordMapError, match="together"):
        coord_map(L.Convolution(n.data, num_output=1, kernel_h=3).fn)


def test_conv_pool_deconv_identity_and_shift():
    n = conv_pool_deconv()
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    assert (ax, a, b) == (1, 1, 0)
    n = conv_pool_deconv(pool=4, dstride=4)
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    assert (ax, a, b) == (1, 1, -1)


def test_pass_through_and_1x1_are_identity():
    n = conv_pool_deconv()
    base = coord_map_from_to(n.deconv, n.data)
    n.relu = L.ReLU(n.deconv)
    n.bn = L.BatchNorm(n.relu)
    n.conv1x1 = L.Convolution(n.bn, num_output=10, kernel_size=1, stride=1, pad=0)
    for top in (n.relu, n.bn, n.conv1x1):
        assert coord_map_from_to(top, n.data) == base


@pytest.mark.parametrize("pad", [1, 4, 7])
def test_padding_shifts(pad):
    _, a, b = coord_map_from_to(*(lambda n: (n.deconv, n.data))(conv_pool_deconv()))
    n = conv_pool_deconv(pad=pad)
    _, a_p, b_p = coord_map_from_to(n.deconv, n.data)
    assert a_p == a and b_p == b - pad
    n = conv_pool_deconv(dpad=pad)
    _, a_p, b_p = coord_map_from_to(n.deconv, n.data)
    assert a_p == a and b_p == b + pad
    n = conv_pool_deconv(pad=pad, dpad=pad)
    _, a_p, b_p = coord_map_from_to(n.deconv, n.data)
    assert a_p == a and b_p == b


def test_multi_bottom_layers_map_each_bottom_alike():
    n = conv_pool_deconv()
    n.conv_data, n.conv_aux = L.Convolution(n.data, n.aux, ntop=2, num_output=10, kernel_size=5,
                                            stride=2, pad=0)
    assert coord_map_from_to(n.conv_data, n.data) == coord_map_from_to(n.conv_aux, n.aux)


def test_rectangular_is_its_isotropic_parts():
    m3 = conv_pool_deconv(ks=3, stride=1, pad=0)
    m5 = conv_pool_deconv(ks=5, stride=2, pad=10)
    m35 = conv_pool_deconv(ks=[3, 5], stride=[1, 2], pad=[0, 10])
    ax3, a3, b3 = coord_map_from_to(m3.deconv, m3.data)
    ax5, a5, b5 = coord_map_from_to(m5.deconv, m5.data)
    ax35, a35, b35 = coord_map_from_to(m35.deconv, m35.data)
    assert ax3 == ax5 == ax35 == 1
    assert (a35[0], b35[0]) == (a3, b3)
    assert (a35[1], b35[1]) == (a5, b5)


def test_nd_convolution():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3, 100, 100, 100]))
    n.conv = L.Convolution(n.data, num_output=10, kernel_size=[3, 3, 3], stride=[1, 1, 1],
                           pad=[0, 1, 2])
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2, pad=0)
    n.deconv = L.Deconvolution(n.pool, convolution_param=dict(num_output=10, kernel_size=4,
                                                              stride=2, pad=0))
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    assert ax == 1 and len(a) == len(b) == 3
    assert np.all(a == 1)
    assert b[0] - 1 == b[1] and b[1] - 1 == b[2]


@pytest.mark.parametrize("offset", [0, 3, 9])
def test_crop_of_crop(offset):
    n = conv_pool_deconv()
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    n.crop = L.Crop(n.deconv, n.data, axis=2, offset=offset)
    ax_c, a_c, b_c = coord_map_from_to(n.crop, n.data)
    assert ax_c == ax and a_c == a and b_c == b + offset


def test_crop_helper_builds_crop_layer():
    n = conv_pool_deconv(pool=4, dstride=4)
    n.crop = crop(n.deconv, n.data)
    proto = n.to_proto()
    layer = [lp for lp in proto.layer if lp.name == "crop"][0]
    assert layer.type == "Crop"
    assert list(layer.bottom) == ["deconv", "data"]
    assert layer.crop_param.axis == 2
    assert list(layer.crop_param.offset) == [1]


def test_errors():
    n = conv_pool_deconv()
    n.ip = L.InnerProduct(n.deconv, num_output=10)
    with pytest.raises(RuntimeError):
        coord_map_from_to(n.ip, n.data)
    with pytest.raises(UnconnectedTopsError):
        coord_map_from_to(n.ip, n.data)
    # pool 3x but deconv 2x: scales differ
    n = conv_pool_deconv(pool=3, dstride=2)
    with pytest.raises(AssertionError, match="scale"):
        crop(n.deconv, n.data)
    with pytest.raises(CropError):
        crop(n.deconv, n.data)
    # output smaller than the reference: would need a negative crop
    n = conv_pool_deconv(dpad=10)
    with pytest.raises(AssertionError, match="negative"):
        crop(n.deconv, n.data)
    # a half-pixel shift cannot be cropped
    n = conv_pool_deconv(ks=2)
    with pytest.raises(CropError, match="noninteger"):
        crop(n.deconv, n.data)
    with pytest.raises(AxisMismatchException):
        compose((1, 1, 0), (2, 1, 0))
    assert inverse((1, 2.0, 3.0)) == (1, 0.5, -1.5)


def _vgg16_fcn(n, data):
    """VGG-16's conv layers as FCN writes them (conv1_1 padded by 100), fc6/fc7 as convs."""
    cfg = [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)]
    bottom = data
    pools = []
    for i, (reps, width) in enumerate(cfg, start=1):
        for j in range(1, reps + 1):
            pad = 100 if (i, j) == (1, 1) else 1
            conv = L.Convolution(bottom, num_output=width, kernel_size=3, pad=pad)
            setattr(n, f"conv{i}_{j}", conv)
            relu = L.ReLU(conv, in_place=True)
            setattr(n, f"relu{i}_{j}", relu)
            bottom = relu
        pool = L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=2, stride=2)
        setattr(n, f"pool{i}", pool)
        pools.append(pool)
        bottom = pool
    n.fc6 = L.Convolution(bottom, num_output=4096, kernel_size=7)
    n.relu6 = L.ReLU(n.fc6, in_place=True)
    n.drop6 = L.Dropout(n.relu6, dropout_ratio=0.5, in_place=True)
    n.fc7 = L.Convolution(n.drop6, num_output=4096, kernel_size=1)
    n.relu7 = L.ReLU(n.fc7, in_place=True)
    n.drop7 = L.Dropout(n.relu7, dropout_ratio=0.5, in_place=True)
    n.score_fr = L.Convolution(n.drop7, num_output=21, kernel_size=1)
    return pools


def test_fcn_crop_offsets():
    """FCN-32s/16s/8s (Long et al.): the published crop offsets 19; 5 and 27; 5, 9 and 31."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 500, 500]))
    pools = _vgg16_fcn(n, n.data)
    n.upscore32 = L.Deconvolution(n.score_fr, convolution_param=dict(
        num_output=21, kernel_size=64, stride=32, bias_term=False))
    n.score32 = crop(n.upscore32, n.data)
    # FCN-16s
    n.upscore2 = L.Deconvolution(n.score_fr, convolution_param=dict(
        num_output=21, kernel_size=4, stride=2, bias_term=False))
    n.score_pool4 = L.Convolution(pools[3], num_output=21, kernel_size=1)
    n.score_pool4c = crop(n.score_pool4, n.upscore2)
    n.fuse_pool4 = L.Eltwise(n.upscore2, n.score_pool4c, operation=P.Eltwise.SUM)
    n.upscore16 = L.Deconvolution(n.fuse_pool4, convolution_param=dict(
        num_output=21, kernel_size=32, stride=16, bias_term=False))
    n.score16 = crop(n.upscore16, n.data)
    # FCN-8s
    n.upscore_pool4 = L.Deconvolution(n.fuse_pool4, convolution_param=dict(
        num_output=21, kernel_size=4, stride=2, bias_term=False))
    n.score_pool3 = L.Convolution(pools[2], num_output=21, kernel_size=1)
    n.score_pool3c = crop(n.score_pool3, n.upscore_pool4)
    n.fuse_pool3 = L.Eltwise(n.upscore_pool4, n.score_pool3c, operation=P.Eltwise.SUM)
    n.upscore8 = L.Deconvolution(n.fuse_pool3, convolution_param=dict(
        num_output=21, kernel_size=16, stride=8, bias_term=False))
    n.score8 = crop(n.upscore8, n.data)
    layers = {lp.name: lp for lp in n.to_proto().layer}
    expected = {"score32": 19, "score_pool4c": 5, "score16": 27, "score_pool3c": 9,
                "score8": 31}
    for name, offset in expected.items():
        cp = layers[name].crop_param
        assert cp.axis == 2, name
        assert list(cp.offset) == [offset], name


def test_resnet_style_dag_maps_quickly():
    """A deep residual chain: every block doubles the paths back to the data; the walk visits
    each blob once."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 64, 64]))
    x = n.data
    for i in range(40):
        a = L.Convolution(x, num_output=4, kernel_size=3, pad=1)
        b = L.Convolution(a, num_output=4, kernel_size=1)
        x = L.Eltwise(x, b)
        setattr(n, f"res{i}", x)
    n.down = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    ax, a, b = coord_map_from_to(n.down, n.data)
    # pool k2 s2 maps data -> down by (1/2, -1/4); from down back to data is the inverse
    assert ax == 1 and a == 2 and b == 0.5


def test_crop_aligns_real_layers():
    """Run the layers: a 3×3 'shift' conv then a 5×5 deconv move the image by -1 and +2;
    the Crop that crop() makes (offset 1) lines the result up with the data again."""
    import decaffe

    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 9, 11]))
    n.conv = L.Convolution(n.data, num_output=1, kernel_size=3, bias_term=False)
    n.up = L.Deconvolution(n.conv, convolution_param=dict(num_output=1, kernel_size=5,
                                                          bias_term=False))
    n.crop = crop(n.up, n.data)
    proto = n.to_proto()
    assert list(proto.layer[-1].crop_param.offset) == [1]
    net = decaffe.Net(str(proto), decaffe.TEST)
    delta3, delta5 = np.zeros((3, 3), np.float32), np.zeros((5, 5), np.float32)
    delta3[1, 1] = delta5[2, 2] = 1
    net.params["conv"][0].data[...] = delta3
    net.params["up"][0].data[...] = delta5
    img = np.random.default_rng(0).random((9, 11)).astype(np.float32)
    net.blobs["data"].data[...] = img
    out = net.forward()["crop"][0, 0]
    assert out.shape == img.shape
    # the 3×3 conv loses a one-pixel border; inside it the crop is the image itself
    np.testing.assert_allclose(out[1:-1, 1:-1], img[1:-1, 1:-1], rtol=1e-6)
