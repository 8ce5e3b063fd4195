"""The DataTransformer against Caffe's formula computed element by element."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from data_helpers import images, reference_transform, write_mean

from decaffe.data.transformer import DataTransformer, load_mean_file
from decaffe.errors import DataError
from decaffe.proto import caffe_pb2

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST


def _tp(**kw):
    tp = caffe_pb2.TransformationParameter()
    for k, v in kw.items():
        if k == "mean_value":
            tp.mean_value.extend(v)
        else:
            setattr(tp, k, v)
    return tp


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_scale_and_mean_values_no_crop():
    x = images(3, c=3, h=4, w=5)
    for mv in ([], [7.5], [10.0, 20.0, 30.0]):
        tr = DataTransformer(_tp(scale=0.25, mean_value=mv), TEST, rng=_rng())
        got = tr.transform(x).numpy()
        want = np.stack([reference_transform(a, scale=0.25, mean_values=mv) for a in x])
        np.testing.assert_array_equal(got, want)


def test_mean_file_with_centre_crop_in_test(tmp_path):
    x = images(2, c=3, h=7, w=9)
    mean = np.random.default_rng(1).uniform(0, 255, (3, 7, 9)).astype(np.float32)
    mf = write_mean(str(tmp_path / "m.binaryproto"), mean)
    tr = DataTransformer(_tp(scale=0.5, crop_size=4, mean_file=mf), TEST, rng=_rng())
    got = tr.transform(x).numpy()
    # Caffe's centre: (H - crop) / 2 rounded down -> (1, 2)
    want = np.stack([reference_transform(a, scale=0.5, mean=mean, crop=4, h_off=1, w_off=2)
                     for a in x])
    np.testing.assert_array_equal(got, want)


def test_float_datum_data():
    x = np.random.default_rng(2).standard_normal((2, 2, 3, 3)).astype(np.float32)
    tr = DataTransformer(_tp(scale=3.0, mean_value=[0.5]), TEST, rng=_rng())
    want = np.stack([reference_transform(a, scale=3.0, mean_values=[0.5]) for a in x])
    np.testing.assert_array_equal(tr.transform(x).numpy(), want)


def test_random_crop_and_mirror_match_some_caffe_window(tmp_path):
    """TRAIN: every output is Caffe's transform at one valid offset and flip, and over many
    draws every offset and both flips occur."""
    x = images(8, c=2, h=5, w=6)
    mean = np.random.default_rng(3).uniform(0, 255, (2, 5, 6)).astype(np.float32)
    mf = write_mean(str(tmp_path / "m.binaryproto"), mean)
    tr = DataTransformer(_tp(crop_size=3, mirror=True, mean_file=mf, scale=0.1), TRAIN,
                         rng=_rng(5))
    cands = list(itertools.product(range(3), range(4), (False, True)))
    refs = [{c: reference_transform(a, scale=0.1, mean=mean, crop=3, h_off=c[0], w_off=c[1],
                                    mirror=c[2]) for c in cands} for a in x]
    seen = set()
    for _ in range(40):
        out = tr.transform(x).numpy()
        assert out.shape == (8, 2, 3, 3)
        for i in range(8):
            hits = [c for c in cands if np.array_equal(out[i], refs[i][c])]
            assert hits, f"example {i} matches no window"
            seen.update(hits)
    assert seen == set(cands)


def test_mirror_in_test_phase_and_centre_crop_is_fixed():
    x = images(4, c=1, h=5, w=5)
    tr = DataTransformer(_tp(crop_size=3, mirror=True), TEST, rng=_rng(0))
    flips = set()
    for _ in range(20):
        out = tr.transform(x).numpy()
        for i in range(4):
            plain = reference_transform(x[i], crop=3, h_off=1, w_off=1)
            flipped = reference_transform(x[i], crop=3, h_off=1, w_off=1, mirror=True)
            assert np.array_equal(out[i], plain) or np.array_equal(out[i], flipped)
            flips.add(np.array_equal(out[i], flipped))
    assert flips == {True, False}


def test_same_seed_same_draws():
    x = images(6, h=8, w=8)
    a = DataTransformer(_tp(crop_size=5, mirror=True), TRAIN, rng=_rng(9))
    b = DataTransformer(_tp(crop_size=5, mirror=True), TRAIN, rng=_rng(9))
    for _ in range(3):
        np.testing.assert_array_equal(a.transform(x).numpy(), b.transform(x).numpy())


def test_transform_list_of_sizes_with_crop():
    xs = [images(1, h=6, w=6)[0], images(1, h=8, w=7, seed=1)[0]]
    tr = DataTransformer(_tp(crop_size=4), TEST, rng=_rng())
    out = tr.transform_list(xs).numpy()
    np.testing.assert_array_equal(out[0], reference_transform(xs[0], crop=4, h_off=1, w_off=1))
    np.testing.assert_array_equal(out[1], reference_transform(xs[1], crop=4, h_off=2, w_off=1))
    tr2 = DataTransformer(_tp(), TEST, rng=_rng())
    with pytest.raises(DataError, match="batch's first"):
        tr2.transform_list(xs, ["a", "b"])


def test_output_shape_is_caffes_infer_blob_shape():
    tr = DataTransformer(_tp(crop_size=4), TEST)
    assert tr.output_shape((3, 10, 12)) == (3, 4, 4)
    assert DataTransformer(_tp(), TEST).output_shape((1, 10, 12)) == (1, 10, 12)


def test_errors(tmp_path):
    mf = write_mean(str(tmp_path / "m.binaryproto"), np.zeros((3, 4, 4), np.float32))
    with pytest.raises(DataError, match="mean_file and mean_value"):
        DataTransformer(_tp(mean_file=mf, mean_value=[1.0]), TEST)
    with pytest.raises(DataError, match="force_color and force_gray"):
        DataTransformer(_tp(force_color=True, force_gray=True), TEST)
    tr = DataTransformer(_tp(mean_file=mf), TEST)
    with pytest.raises(DataError, match=r"shape 3x4x4 but the data has shape 3x5x4"):
        tr.output_shape((3, 5, 4))
    with pytest.raises(DataError, match="1 mean_value or as many as channels"):
        DataTransformer(_tp(mean_value=[1, 2]), TEST).output_shape((3, 4, 4))
    with pytest.raises(DataError, match="smaller than the crop"):
        DataTransformer(_tp(crop_size=5), TEST).output_shape((3, 4, 9))
    with pytest.raises(DataError, match="cannot read mean file"):
        DataTransformer(_tp(mean_file=str(tmp_path / "none")), TEST)
    (tmp_path / "junk").write_bytes(b"\x07\x07\x07")
    with pytest.raises(DataError, match="junk"):
        load_mean_file(str(tmp_path / "junk"))
