"""ImageSegData (DeepLab v2) and VideoData (TSN, yjxiong/caffe) on small data made here.

References are per-pixel loops written from the forks' C++ (DeepLab's TransformImgAndSeg,
TSN's VideoDataLayer::load_batch and DataTransformer::Transform), not from decaffe's code;
random draws are checked by finding the one crop/mirror/scale among all the fork allows
that gives the top exactly.
"""

from __future__ import annotations

import itertools
import os

import cv2
import numpy as np
import pytest

import decaffe
from decaffe.errors import DecaffeError
from decaffe.layers.forks.data import _fill_crop_sizes, _fix_offsets


def _batches(net, n: int) -> list:
    """n forwards' (data, label) copies."""
    out = []
    for _ in range(n):
        net.forward()
        out.append((net.blobs["data"].data.copy(), net.blobs["label"].data.copy()))
    return out


def _assert_same_batches(a, b) -> None:
    """Two runs' (data, label) batches agree bitwise as far as both go."""
    for (da, la), (db, lb) in zip(a, b):
        np.testing.assert_array_equal(da, db)
        np.testing.assert_array_equal(la, lb)


def _assert_resumes(net, pos, batches, first: int) -> None:
    """net, moved to a recorded position, reads batches[first:] next."""
    net._layers[0].set_position(pos)
    for k in range(first, len(batches)):
        net.forward()
        np.testing.assert_array_equal(net.blobs["data"].data, batches[k][0])
        np.testing.assert_array_equal(net.blobs["label"].data, batches[k][1])


# ----------------------------------------------------------------------------------------------
# ImageSegData
# ----------------------------------------------------------------------------------------------

def _seg_data(tmp_path, sizes, classes=21, seed=0):
    rng = np.random.default_rng(seed)
    imgs, labs, lines = [], [], []
    for i, (h, w) in enumerate(sizes):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        lab = rng.integers(0, classes, (h, w), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / f"img{i}.png"), img)
        cv2.imwrite(str(tmp_path / f"lab{i}.png"), lab)
        imgs.append(img)
        labs.append(lab)
        lines.append(f"img{i}.png lab{i}.png")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return imgs, labs


def _seg_net(tmp_path, phase, tops=2, param="", transform="", batch=2):
    names = ["data", "label", "data_dim"][:tops]
    top = " ".join(f'top: "{t}"' for t in names)
    text = (f'layer {{ name: "d" type: "ImageSegData" {top} '
            f'image_data_param {{ source: "{tmp_path / "list.txt"}" root_folder: "{tmp_path}/" '
            f'batch_size: {batch} label_type: PIXEL {param} }} '
            f'transform_param {{ {transform} }} }}')
    return decaffe.Net(text, phase)


def _ref_seg(img, lab, crop, mean, scale, off, mirror, ignore=255):
    """DeepLab's TransformImgAndSeg for one pair, as its loops read: pad (bottom/right) the
    image with the mean pixel and the label with ignore_label, crop at off, then per pixel
    (pixel - mean[c]) * scale, mirrored columns."""
    h, w, c = img.shape
    ch, cw = crop
    ph, pw = max(ch - h, 0), max(cw - w, 0)
    big = np.empty((h + ph, w + pw, c), np.float64)
    big[:, :] = mean
    big[:h, :w] = img
    seg = np.full((h + ph, w + pw), ignore, np.uint8)
    seg[:h, :w] = lab
    data = np.zeros((c, ch, cw), np.float32)
    label = np.zeros((ch, cw), np.float32)
    for y in range(ch):
        for x in range(cw):
            tx = cw - 1 - x if mirror else x
            for k in range(c):
                px = np.float32(big[off[0] + y, off[1] + x, k])
                data[k, y, tx] = (px - np.float32(mean[k])) * np.float32(scale)
            label[y, tx] = seg[off[0] + y, off[1] + x]
    return data, label


def test_seg_test_phase_pads_with_mean_and_ignore_then_centre_crops(tmp_path):
    sizes = [(5, 9), (8, 4), (7, 7)]
    imgs, labs = _seg_data(tmp_path, sizes)
    mean, scale, crop = [10.0, 20.0, 30.0], 0.5, (6, 6)
    net = _seg_net(tmp_path, decaffe.TEST, tops=3,
                   transform="crop_size: 6 mean_value: 10 mean_value: 20 mean_value: 30 "
                             "scale: 0.5")
    assert net.blobs["data"].data.shape == (2, 3, 6, 6)
    assert net.blobs["label"].data.shape == (2, 1, 6, 6)
    assert net.blobs["data_dim"].data.shape == (2, 1, 1, 2)
    seen = []
    for _ in range(2):  # batches 0,1 then 2,0 (wrapping around)
        net.forward()
        seen.append({k: net.blobs[k].data.copy() for k in ("data", "label", "data_dim")})
    for b, order in enumerate([(0, 1), (2, 0)]):
        for k, i in enumerate(order):
            h, w = sizes[i]
            ph, pw = max(h, 6), max(w, 6)
            off = ((ph - 6) // 2, (pw - 6) // 2)
            data, label = _ref_seg(imgs[i], labs[i], crop, mean, scale, off, False)
            np.testing.assert_allclose(seen[b]["data"][k], data, rtol=0, atol=1e-6)
            np.testing.assert_array_equal(seen[b]["label"][k, 0], label)
            assert seen[b]["data_dim"][k].ravel().tolist() == [min(6, h), min(6, w)]
    # the padded rows of image 0 (5 high) are 0 after the mean and 255 in the label
    assert (seen[0]["label"][0, 0, 5] == 255).all()
    np.testing.assert_array_equal(seen[0]["data"][0][:, 5], 0)


def test_seg_train_crop_mirror_and_scale_are_ones_the_fork_allows(tmp_path):
    sizes = [(9, 11), (10, 8)]
    imgs, labs = _seg_data(tmp_path, sizes, seed=1)
    decaffe.set_random_seed(5)
    net = _seg_net(tmp_path, decaffe.TRAIN, batch=1,
                   transform="crop_size: 7 mirror: true mean_value: 100 scale: 2 "
                             "scale_factors: 1 scale_factors: 0.5")
    mirrors, scales = set(), set()
    for it in range(12):
        net.forward()
        i = it % 2
        got_d, got_l = net.blobs["data"].data[0], net.blobs["label"].data[0, 0]
        found = None
        for s in (1.0, 0.5):
            img, lab = imgs[i], labs[i]
            if s != 1:
                h, w = int(np.float32(img.shape[0]) * np.float32(s)), \
                    int(np.float32(img.shape[1]) * np.float32(s))
                img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
                lab = cv2.resize(lab, (w, h), interpolation=cv2.INTER_NEAREST)
            ph, pw = max(img.shape[0], 7), max(img.shape[1], 7)
            for y, x, m in itertools.product(range(ph - 6), range(pw - 6), (False, True)):
                d, lb = _ref_seg(img, lab, (7, 7), [100.0] * 3, 2.0, (y, x), m)
                if np.array_equal(d, got_d) and np.array_equal(lb, got_l):
                    found = (s, m)
                    break
            if found:
                break
        assert found is not None, f"batch {it}: no crop/mirror/scale of the fork gives it"
        scales.add(found[0])
        mirrors.add(found[1])
    assert mirrors == {False, True} and scales == {1.0, 0.5}


def test_seg_label_types_image_and_none_and_resize(tmp_path):
    rng = np.random.default_rng(2)
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), rng.integers(0, 256, (6, 5, 3), np.uint8))
    (tmp_path / "list.txt").write_text("img0.png 3\n\nimg1.png 300 extra words\n")
    text = (f'layer {{ name: "d" type: "ImageSegData" top: "data" top: "label" '
            f'image_data_param {{ source: "{tmp_path / "list.txt"}" root_folder: "{tmp_path}/" '
            f'batch_size: 2 label_type: IMAGE new_height: 4 new_width: 3 }} }}')
    net = decaffe.Net(text, decaffe.TRAIN)
    net.forward()
    assert net.blobs["label"].data.shape == (2, 1, 4, 3)
    assert (net.blobs["label"].data[0] == 3).all()
    assert (net.blobs["label"].data[1] == 255).all()  # cv::Scalar saturates in a uint8 map
    img = cv2.imread(str(tmp_path / "img0.png"))
    want = cv2.resize(img, (3, 4), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
    np.testing.assert_array_equal(net.blobs["data"].data[0], want.astype(np.float32))
    none = text.replace("label_type: IMAGE", "label_type: NONE ignore_label: 7")
    (tmp_path / "list.txt").write_text("img0.png\nimg1.png\n")
    net = decaffe.Net(none, decaffe.TRAIN)
    net.forward()
    assert (net.blobs["label"].data == 7).all()


def test_seg_crop_height_width_and_pspnet_crop_h_w(tmp_path):
    imgs, labs = _seg_data(tmp_path, [(6, 9), (6, 9)])
    for tf in ("crop_height: 4 crop_width: 7", "crop_h: 4 crop_w: 7"):
        net = _seg_net(tmp_path, decaffe.TEST, transform=tf)
        net.forward()
        assert net.blobs["data"].data.shape == (2, 3, 4, 7)
        data, label = _ref_seg(imgs[0], labs[0], (4, 7), [0.0] * 3, 1.0, (1, 1), False)
        np.testing.assert_array_equal(net.blobs["data"].data[0], data)
        np.testing.assert_array_equal(net.blobs["label"].data[0, 0], label)
    with pytest.raises(DecaffeError, match="crop_size"):
        _seg_net(tmp_path, decaffe.TEST, transform="crop_height: 4")


def test_seg_pixel_labels_resized_bilinearly_like_deeplab(tmp_path):
    imgs, labs = _seg_data(tmp_path, [(6, 6), (6, 6)], classes=3)
    net = _seg_net(tmp_path, decaffe.TEST, param="new_height: 4 new_width: 5")
    net.forward()
    for k in range(2):
        # DeepLab v2 reads the label map through ReadImageToCVMat: bilinear, not nearest
        want = cv2.resize(labs[k], (5, 4), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(net.blobs["label"].data[k, 0], want)


def test_seg_seeded_runs_repeat_and_resume_from_position(tmp_path):
    _seg_data(tmp_path, [(8, 8)] * 5)
    tf = "crop_size: 5 mirror: true mean_value: 1"

    def run(seed, n):
        decaffe.set_random_seed(seed)
        net = _seg_net(tmp_path, decaffe.TRAIN, param="shuffle: true", transform=tf)
        return net, _batches(net, n)

    _, a = run(11, 6)
    net, b = run(11, 3)
    _assert_same_batches(a, b)
    pos = net._layers[0].position()
    assert pos["kind"] == "_SegSource"
    _, c = run(12, 1)
    assert not np.array_equal(c[0][0], a[0][0])
    other, _ = run(11, 1)  # the same definition and seed, one batch read (and more prefetched)
    _assert_resumes(other, pos, a, 3)


@pytest.mark.parametrize("case, match", [
    ("no_list", "cannot open the list file"),
    ("no_label_word", r"list\.txt:2: label_type PIXEL needs"),
    ("missing_image", "could not load image '.*nope.png'"),
    ("missing_label", "could not load label image '.*nolab.png'"),
    ("label_size", "label image '.*lab1.png' is 5x4 but its image"),
    ("mean_file", "mean_file"),
    ("crop_both", "crop_size"),
    ("sizes", "every image must have the first one's size"),
])
def test_seg_refusals_name_the_file_or_field(tmp_path, case, match):
    _seg_data(tmp_path, [(4, 4), (4, 4)])
    param, tf, lines = "", "", None
    if case == "no_list":
        (tmp_path / "list.txt").unlink()
    elif case == "no_label_word":
        lines = "img0.png lab0.png\nimg1.png\n"
    elif case == "missing_image":
        lines = "img0.png lab0.png\nnope.png lab1.png\n"
    elif case == "missing_label":
        lines = "img0.png lab0.png\nimg1.png nolab.png\n"
    elif case == "label_size":
        cv2.imwrite(str(tmp_path / "lab1.png"), np.zeros((5, 4), np.uint8))
    elif case == "mean_file":
        tf = 'mean_file: "m.binaryproto"'
    elif case == "crop_both":
        tf = "crop_size: 3 crop_height: 3"
    elif case == "sizes":
        cv2.imwrite(str(tmp_path / "img1.png"), np.zeros((5, 4, 3), np.uint8))
        cv2.imwrite(str(tmp_path / "lab1.png"), np.zeros((5, 4), np.uint8))
    if lines is not None:
        (tmp_path / "list.txt").write_text(lines)
    with pytest.raises(DecaffeError, match=match) as e:
        _seg_net(tmp_path, decaffe.TEST, transform=tf, param=param).forward()
    if case != "no_list":
        assert e.value.layer == "d"


def test_seg_image_label_refusal(tmp_path):
    _seg_data(tmp_path, [(4, 4)])
    (tmp_path / "list.txt").write_text("img0.png 3\nimg0.png cat\n")
    text = (f'layer {{ name: "d" type: "ImageSegData" top: "data" top: "label" '
            f'image_data_param {{ source: "{tmp_path / "list.txt"}" root_folder: "{tmp_path}/" '
            f'batch_size: 1 label_type: IMAGE }} }}')
    with pytest.raises(DecaffeError, match=r"list\.txt:2: label_type IMAGE needs an integer"):
        decaffe.Net(text, decaffe.TRAIN)


# ----------------------------------------------------------------------------------------------
# VideoData (TSN)
# ----------------------------------------------------------------------------------------------
def _videos(tmp_path, durations, hw=(6, 8), const=False, seed=0):
    """Frame folders v0, v1, ...: img_%05d.png (BGR) and flow_x/flow_y_%05d.png. With const
    every pixel of frame k of video v is 40·v + k (so a top tells which frames it holds)."""
    rng = np.random.default_rng(seed)
    frames = {}
    lines = []
    for v, n in enumerate(durations):
        d = tmp_path / f"v{v}"
        d.mkdir()
        for k in range(1, n + 1):
            if const:
                rgb = np.full(hw + (3,), 40 * v + k, np.uint8)
                fx = fy = np.full(hw, 40 * v + k, np.uint8)
            else:
                rgb = rng.integers(0, 256, hw + (3,), dtype=np.uint8)
                fx = rng.integers(0, 256, hw, dtype=np.uint8)
                fy = rng.integers(0, 256, hw, dtype=np.uint8)
            cv2.imwrite(str(d / f"img_{k:05d}.png"), rgb)
            cv2.imwrite(str(d / f"flow_x_{k:05d}.png"), fx)
            cv2.imwrite(str(d / f"flow_y_{k:05d}.png"), fy)
            frames[v, k] = (rgb, fx, fy)
        lines.append(f"{d} {n} {v + 3}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return frames


def _video_net(tmp_path, phase, modality="RGB", param="", transform="", batch=2, length=2,
               segments=3):
    pat = "img_%05d.png" if modality == "RGB" else "flow_%c_%05d.png"
    text = (f'layer {{ name: "v" type: "VideoData" top: "data" top: "label" '
            f'video_data_param {{ source: "{tmp_path / "list.txt"}" batch_size: {batch} '
            f'new_length: {length} num_segments: {segments} modality: {modality} '
            f'name_pattern: "{pat}" {param} }} transform_param {{ {transform} }} }}')
    return decaffe.Net(text, phase)


def _ref_stack(frames, v, starts, length, flow):
    """ReadSegment{RGB,Flow}ToDatum: for each snippet, frames start+1..start+length, their
    B, G, R planes (or flow x then y) one after another."""
    planes = []
    for s in starts:
        for k in range(s + 1, s + length + 1):
            rgb, fx, fy = frames[v, k]
            planes += [fx, fy] if flow else [rgb[:, :, c] for c in range(3)]
    return np.stack(planes)


def test_video_test_phase_centres_segments_and_crop(tmp_path):
    durations = [10, 17]
    frames = _videos(tmp_path, durations)
    net = _video_net(tmp_path, decaffe.TEST, transform="crop_size: 4 mean_value: 100 scale: 0.5")
    assert net.blobs["data"].data.shape == (2, 18, 4, 4)
    assert net.blobs["label"].data.shape == (2, 1, 1, 1)
    net.forward()
    for v, n in enumerate(durations):
        avg = n // 3
        starts = [(avg - 2 + 1) // 2 + i * avg for i in range(3)]  # 10: 1,4,7; 17: 2,7,12
        x = _ref_stack(frames, v, starts, 2, False).astype(np.float32)
        want = (x[:, 1:5, 2:6] - np.float32(100)) * np.float32(0.5)
        np.testing.assert_array_equal(net.blobs["data"].data[v], want)
        assert net.blobs["label"].data[v].ravel().tolist() == [v + 3]


def test_video_short_segments_start_at_the_first_frame(tmp_path):
    frames = _videos(tmp_path, [5])
    net = _video_net(tmp_path, decaffe.TEST, batch=1, length=2, segments=3)
    net.forward()  # 5 // 3 = 1 < new_length: every snippet is frames 1, 2
    want = _ref_stack(frames, 0, [0, 0, 0], 2, False).astype(np.float32)
    np.testing.assert_array_equal(net.blobs["data"].data[0], want)


def test_video_train_snippets_lie_in_their_segments(tmp_path):
    durations = [12, 20]
    _videos(tmp_path, durations, const=True)
    decaffe.set_random_seed(3)
    net = _video_net(tmp_path, decaffe.TRAIN, batch=2, length=2, segments=3,
                     transform="crop_size: 4 fix_crop: true more_fix_crop: true "
                               "multi_scale: true scale_ratios: 1 scale_ratios: 0.75")
    starts_seen = set()
    for _ in range(40):
        net.forward()
        for v, n in enumerate(durations):
            avg = n // 3
            got = net.blobs["data"].data[v]
            frame_ids = (got[:, 0, 0] - 40 * v).astype(int).reshape(3, 2, 3)
            assert (got == got[:, :1, :1]).all()  # constant frames stay constant
            for i in range(3):
                ids = frame_ids[i]
                assert (ids == ids[:, :1]).all()  # B, G, R of one frame
                first = ids[0, 0]
                assert ids[1, 0] == first + 1  # consecutive frames
                assert i * avg + 1 <= first <= i * avg + avg - 2 + 1
                starts_seen.add((n, i, first))
    # the random start covers every position the fork can draw (avg - new_length + 1 each)
    assert len(starts_seen) == 3 * (12 // 3 - 1) + 3 * (20 // 3 - 1)


def test_video_flow_mirror_inverts_x_flow(tmp_path):
    frames = _videos(tmp_path, [6], hw=(5, 5))
    decaffe.set_random_seed(1)
    net = _video_net(tmp_path, decaffe.TEST, modality="FLOW", batch=1, length=1, segments=2,
                     transform="mirror: true is_flow: true mean_value: 128")
    assert net.blobs["data"].data.shape == (1, 4, 5, 5)
    x = _ref_stack(frames, 0, [1, 4], 1, True).astype(np.float32)  # avg 3: starts 1, 4
    plain = x - 128
    flipped = x.copy()
    flipped[0::2] = 255 - flipped[0::2]
    flipped = (flipped - 128)[:, :, ::-1]
    kinds = set()
    for _ in range(8):
        net.forward()
        got = net.blobs["data"].data[0]
        if np.array_equal(got, plain):
            kinds.add("plain")
        else:
            np.testing.assert_array_equal(got, flipped)
            kinds.add("mirrored")
    assert kinds == {"plain", "mirrored"}


def test_tsn_crop_sizes_and_fixed_offsets():
    # base 256: 256, 224 (the crop), 192, int(256·0.66) = 168; neighbours only (max_distort 1)
    sizes = _fill_crop_sizes(256, 340, 224, [1, .875, .75, .66], 1)
    assert sizes == [(256, 256), (256, 224), (224, 256), (224, 224), (224, 192), (192, 224),
                     (192, 192), (192, 168), (168, 192), (168, 168)]
    # 226 is within 2 pixels of the crop 224 and becomes it
    assert _fill_crop_sizes(226, 300, 224, [1.0], 0) == [(224, 224)]
    assert _fix_offsets(256, 340, 224, 224, False) == [(0, 0), (0, 116), (32, 0), (32, 116),
                                                       (16, 58)]
    assert len(_fix_offsets(256, 340, 224, 224, True)) == 13
    assert _fix_offsets(256, 340, 224, 224, True)[5:] == [
        (0, 58), (32, 58), (16, 0), (16, 116), (8, 29), (8, 87), (24, 29), (24, 87)]


def test_video_multiscale_fixed_crop_is_one_the_fork_allows(tmp_path):
    frames = _videos(tmp_path, [3], hw=(9, 12), seed=4)
    decaffe.set_random_seed(2)
    net = _video_net(tmp_path, decaffe.TRAIN, batch=1, length=1, segments=1,
                     transform="crop_size: 6 fix_crop: true multi_scale: true "
                               "scale_ratios: 1 scale_ratios: 0.8 max_distort: 1")
    sizes = _fill_crop_sizes(9, 12, 6, [1, 0.8], 1)
    for _ in range(6):
        net.forward()
        got = net.blobs["data"].data[0]
        ok = False
        for k in range(1, 4):
            x = _ref_stack(frames, 0, [k - 1], 1, False)
            for ch, cw in sizes:
                for y, xo in _fix_offsets(9, 12, ch, cw, False):
                    win = x[:, y:y + ch, xo:xo + cw]
                    if (ch, cw) != (6, 6):
                        win = np.stack([cv2.resize(np.ascontiguousarray(p), (6, 6),
                                                   interpolation=cv2.INTER_LINEAR) for p in win])
                    ok = ok or np.array_equal(got, win.astype(np.float32))
        assert ok


def test_video_seeded_runs_repeat_and_resume_from_position(tmp_path):
    _videos(tmp_path, [9, 11, 7, 14])
    tf = "crop_size: 4 mirror: true fix_crop: true"

    def run(seed, n):
        decaffe.set_random_seed(seed)
        net = _video_net(tmp_path, decaffe.TRAIN, batch=3, param="shuffle: true",
                         transform=tf)
        return net, _batches(net, n)

    _, a = run(21, 5)
    net, b = run(21, 2)
    _assert_same_batches(a, b)
    pos = net._layers[0].position()
    assert pos["kind"] == "_VideoSource" and len(pos["rngs"]) == 2
    other, _ = run(21, 4)
    _assert_resumes(other, pos, a, 2)


@pytest.mark.parametrize("case, match", [
    ("bad_line", r"list\.txt:2: expected 'FOLDER NUM_FRAMES LABEL'"),
    ("missing_frame", "could not load frame '.*v1.*img_00015.png'"),
    ("ssd", "SSD's webcam/video-file VideoData is not supported"),
    ("segments", "num_segments"),
    ("frame_size", "frame '.*v1.*' is 5x8, not 6x8"),
    ("mean_values", "mean_value: specify either 1 mean_value or as many as channels"),
])
def test_video_refusals_name_the_file_or_field(tmp_path, case, match):
    _videos(tmp_path, [6, 6])
    param, tf = "", ""
    lst = tmp_path / "list.txt"
    if case == "bad_line":
        lst.write_text(f"{tmp_path / 'v0'} 6 1\n{tmp_path / 'v1'} six 1\n")
    elif case == "missing_frame":
        lst.write_text(f"{tmp_path / 'v0'} 6 1\n{tmp_path / 'v1'} 30 1\n")
    elif case == "frame_size":
        for k in range(1, 7):
            cv2.imwrite(str(tmp_path / "v1" / f"img_{k:05d}.png"), np.zeros((5, 8, 3), np.uint8))
    elif case == "mean_values":
        tf = "mean_value: 1 mean_value: 2"
    with pytest.raises(DecaffeError, match=match) as e:
        if case == "ssd":
            decaffe.Net('layer { name: "v" type: "VideoData" top: "data" top: "label" '
                        'video_data_param { video_type: VIDEO video_file: "a.avi" } }',
                        decaffe.TEST)
        else:
            _video_net(tmp_path, decaffe.TEST, param=param, transform=tf,
                       segments=0 if case == "segments" else 3).forward()
    assert e.value.layer == "v"


def test_video_bad_name_pattern(tmp_path):
    _videos(tmp_path, [4])
    text = (f'layer {{ name: "v" type: "VideoData" top: "data" top: "label" '
            f'video_data_param {{ source: "{tmp_path / "list.txt"}" batch_size: 1 '
            f'modality: FLOW name_pattern: "flow_%05d.png" }} }}')
    with pytest.raises(DecaffeError, match="name_pattern.*axis"):
        decaffe.Net(text, decaffe.TEST)


# ----------------------------------------------------------------------------------------------
# The corpus's own data layer definitions, run on small data
# ----------------------------------------------------------------------------------------------
TSN_RGB_TRAIN = """
layer { name: "data" type: "VideoData" top: "data" top: "label"
  video_data_param { source: "SOURCE" batch_size: 2 new_length: 1 num_segments: 3
    modality: RGB shuffle: true name_pattern: "img_%05d.jpg" }
  transform_param { crop_size: 224 mirror: true fix_crop: true more_fix_crop: true
    multi_scale: true max_distort: 1 scale_ratios: [1,.875,.75, .66] is_flow: false
    mean_value: [104, 117, 123, 104, 117, 123, 104, 117, 123] }
  include: { phase: TRAIN } }
"""
TSN_FLOW_TEST = """
layer { name: "data" type: "VideoData" top: "data" top: "label"
  video_data_param { source: "SOURCE" batch_size: 1 new_length: 5 num_segments: 3
    modality: FLOW name_pattern: "flow_%c_%05d.jpg" }
  transform_param { crop_size: 224 mirror: false mean_value: 128 is_flow: true }
  include: { phase: TEST } }
"""
PSP_TRAIN = """
layer { name: "data" type: "ImageSegData" top: "data" top: "label" include { phase: TRAIN }
  transform_param { mirror: true crop_size: 513 mean_value: 103.52 mean_value: 116.28
    mean_value: 123.675 scale: 0.01739 scale_factors: 0.75 scale_factors: 1
    scale_factors: 1.25 scale_factors: 1.5 scale_factors: 2.0 }
  image_data_param { root_folder: "ROOT" source: "SOURCE" batch_size: 1 shuffle: true
    label_type: PIXEL } }
"""


def test_corpus_definitions_run_on_small_data(tmp_path):
    """TSN's ucf101 RGB train and flow test layers and soeaver's PSPNet train layer, as the
    corpus nets write them (the list and batch size changed), run on data made here."""
    root = tmp_path
    lines = []
    for v, n in enumerate((16, 20)):
        d = root / f"v{v}"
        d.mkdir()
        for k in range(1, n + 1):
            cv2.imwrite(str(d / f"img_{k:05d}.jpg"), np.full((240, 300, 3), k, np.uint8))
            for ax in "xy":
                cv2.imwrite(str(d / f"flow_{ax}_{k:05d}.jpg"), np.full((240, 300), k, np.uint8))
        lines.append(f"{d} {n} {v}")
    (root / "v.txt").write_text("\n".join(lines) + "\n")
    net = decaffe.Net(TSN_RGB_TRAIN.replace("SOURCE", str(root / "v.txt")), decaffe.TRAIN)
    net.forward()
    assert net.blobs["data"].data.shape == (2, 9, 224, 224)
    net = decaffe.Net(TSN_FLOW_TEST.replace("SOURCE", str(root / "v.txt")), decaffe.TEST)
    net.forward()
    assert net.blobs["data"].data.shape == (1, 30, 224, 224)
    # 16 frames: segments of 5, snippets start at (5 - 5 + 1) // 2 = 0, 5, 10 (frames 1-5, ...)
    frame_of = net.blobs["data"].data[0, :, 100, 100] + 128
    assert frame_of.tolist() == [float(k) for k in range(1, 16) for _ in "xy"]
    rng = np.random.default_rng(0)
    cv2.imwrite(str(root / "a.png"), rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    cv2.imwrite(str(root / "a_l.png"), rng.integers(0, 21, (300, 400), dtype=np.uint8))
    (root / "s.txt").write_text("/a.png /a_l.png\n")
    net = decaffe.Net(PSP_TRAIN.replace("SOURCE", str(root / "s.txt"))
                      .replace("ROOT", str(root)), decaffe.TRAIN)
    net.forward()
    assert net.blobs["data"].data.shape == (1, 3, 513, 513)
    lab = net.blobs["label"].data
    assert set(np.unique(lab)) <= set(range(21)) | {255}
    assert os.path.isfile(root / "a.png")
