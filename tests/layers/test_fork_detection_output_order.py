"""DetectionOutput's order of equal scores and its NMS, against loop references written from
the SSD fork's code (weiliu89/caffe ssd: detection_output_layer.cpp, bbox_util.cpp's
ApplyNMSFast) and libstdc++'s std::sort, which the fork's keep_top_k step calls: equal
scores are not kept in order once more than 16 pairs are sorted (a Pelee-SSD deploy net's
rows of equally confident boxes of one class came out swapped against the fork's build)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from prototxt_text import inp, lay

import decaffe
from decaffe import bbox as B

F32 = np.float32


# ------------------------------------------------------------------------------------------
# libstdc++'s std::sort (bits/stl_algo.h, bits/stl_heap.h), for the comparator a > b
# ------------------------------------------------------------------------------------------
def _std_sort_reference(keys):
    a = [(float(k), i) for i, k in enumerate(keys)]

    def comp(x, y):
        return x[0] > y[0]

    def adjust_heap(first, hole, length, value):
        top, child = hole, hole
        while child < (length - 1) // 2:
            child = 2 * (child + 1)
            if comp(a[first + child], a[first + child - 1]):
                child -= 1
            a[first + hole] = a[first + child]
            hole = child
        if (length & 1) == 0 and child == (length - 2) // 2:
            child = 2 * (child + 1)
            a[first + hole] = a[first + child - 1]
            hole = child - 1
        parent = (hole - 1) // 2
        while hole > top and comp(a[first + parent], value):
            a[first + hole] = a[first + parent]
            hole = parent
            parent = (hole - 1) // 2
        a[first + hole] = value

    def heap_sort(first, last):
        n = last - first
        if n < 2:
            return
        for parent in range((n - 2) // 2, -1, -1):
            adjust_heap(first, parent, n, a[first + parent])
        while last - first > 1:
            last -= 1
            value = a[last]
            a[last] = a[first]
            adjust_heap(first, 0, last - first, value)

    def move_median_to_first(result, x, y, z):
        if comp(a[x], a[y]):
            m = y if comp(a[y], a[z]) else (z if comp(a[x], a[z]) else x)
        else:
            m = x if comp(a[x], a[z]) else (z if comp(a[y], a[z]) else y)
        a[result], a[m] = a[m], a[result]

    def unguarded_partition(first, last, pivot):
        while True:
            while comp(a[first], a[pivot]):
                first += 1
            last -= 1
            while comp(a[pivot], a[last]):
                last -= 1
            if not first < last:
                return first
            a[first], a[last] = a[last], a[first]
            first += 1

    def introsort_loop(first, last, depth):
        while last - first > 16:
            if depth == 0:
                heap_sort(first, last)
                return
            depth -= 1
            mid = first + (last - first) // 2
            move_median_to_first(first, first + 1, mid, last - 1)
            cut = unguarded_partition(first + 1, last, first)
            introsort_loop(cut, last, depth)
            last = cut

    def insertion_sort(first, last):
        for i in range(first + 1, last):
            v = a[i]
            j = i
            while j > first and comp(v, a[j - 1]):
                a[j] = a[j - 1]
                j -= 1
            a[j] = v

    n = len(a)
    if n > 1:
        introsort_loop(0, n, 2 * (n.bit_length() - 1))
        insertion_sort(0, n)  # the final insertion sort (guarded here: the same moves)
    return [i for _, i in a]


def _keys(kind, rng, n):
    if kind == "ties":
        return rng.integers(0, 40, n)
    if kind == "few":
        return rng.integers(0, 3, n)
    if kind == "ascending":
        return np.sort(rng.integers(0, 9, n))
    if kind == "descending":
        return np.sort(rng.integers(0, 9, n))[::-1]
    if kind == "equal":
        return np.ones(n)
    return rng.random(n)


@pytest.mark.parametrize("kind", ["ties", "few", "ascending", "descending", "equal", "real"])
def test_std_sort_descending_is_libstdcxx_introsort(kind):
    rng = np.random.default_rng(len(kind))
    for _ in range(120):
        n = int(rng.integers(1, 300))
        v = _keys(kind, rng, n)
        v = np.asarray(v, F32)
        assert B.std_sort_descending(v).tolist() == _std_sort_reference(v)


def test_heap_fallback_is_libstdcxx_partial_sort():
    rng = np.random.default_rng(9)
    for _ in range(200):
        n = int(rng.integers(1, 120))
        v = rng.integers(0, 5, n).astype(np.float64)
        idx = np.arange(n)
        B._heap_sort_descending(v, idx, 0, n)
        keys = [(x, i) for i, x in enumerate(v)]
        # the reference's heap sort alone: depth 0 sends the whole range to it
        ref = _heap_only(keys)
        assert idx.tolist() == ref


def _heap_only(keys):
    a = list(keys)

    def comp(x, y):
        return x[0] > y[0]

    def adjust(hole, length, value):
        top, child = hole, hole
        while child < (length - 1) // 2:
            child = 2 * (child + 1)
            if comp(a[child], a[child - 1]):
                child -= 1
            a[hole] = a[child]
            hole = child
        if (length & 1) == 0 and child == (length - 2) // 2:
            child = 2 * (child + 1)
            a[hole] = a[child - 1]
            hole = child - 1
        parent = (hole - 1) // 2
        while hole > top and comp(a[parent], value):
            a[hole] = a[parent]
            hole = parent
            parent = (hole - 1) // 2
        a[hole] = value

    n = len(a)
    if n >= 2:
        for parent in range((n - 2) // 2, -1, -1):
            adjust(parent, n, a[parent])
        for last in range(n - 1, 0, -1):
            value = a[last]
            a[last] = a[0]
            adjust(0, last, value)
    return [i for _, i in a]


# ------------------------------------------------------------------------------------------
# ApplyNMSFast
# ------------------------------------------------------------------------------------------
def _nms_fast_reference(boxes, scores, score_threshold, nms_threshold, eta, top_k):
    """bbox_util.cpp's ApplyNMSFast line by line (float32)."""
    order = [i for i in np.argsort(-scores.astype(np.float64), kind="stable")
             if scores[i] > F32(score_threshold)]
    if top_k > -1:
        order = order[:top_k]
    thr = F32(nms_threshold)
    kept = []
    for idx in order:
        keep = True
        for k in kept:
            if not keep:
                break
            keep = bool(B.jaccard(boxes[idx:idx + 1], boxes[k:k + 1])[0, 0] <= thr)
        if keep:
            kept.append(int(idx))
        if keep and eta < 1 and thr > 0.5:
            thr = F32(thr * F32(eta))
    return kept


@pytest.mark.parametrize("eta,thr,block", [(1.0, 0.45, 512), (1.0, 0.3, 8), (0.8, 0.9, 512),
                                           (0.7, 0.95, 16), (0.9, 0.4, 32)])
def test_nms_fast_is_the_forks_apply_nms_fast(eta, thr, block):
    rng = np.random.default_rng(int(thr * 100) + block)
    for t in range(12):
        n = int(rng.integers(1, 120))
        xy = rng.random((n, 2))
        boxes = np.concatenate([xy, xy + rng.random((n, 2)) * 0.4], 1).astype(F32)
        boxes[rng.random(n) < 0.1] = boxes[0]  # duplicates: overlap 1
        if t % 5 == 0:
            boxes[rng.random(n) < 0.05] = np.nan  # NaN overlaps suppress
        scores = (rng.integers(0, 25, n) / 25).astype(F32)  # many ties
        top_k = int(rng.choice([-1, 40]))
        got = B.nms_fast(boxes, scores, 0.1, thr, eta, top_k, block=block)
        assert got == _nms_fast_reference(boxes, scores, 0.1, thr, eta, top_k)


# ------------------------------------------------------------------------------------------
# DetectionOutput's keep_top_k with equal scores
# ------------------------------------------------------------------------------------------
def test_keep_top_k_orders_equal_scores_as_the_forks_std_sort():
    """40 separate priors, class 1 at 1.0 on all of them (a confident detector's saturated
    softmax), class 2 at 0.5 on some: keep_top_k 30 keeps 30 of the 1.0 boxes in the order
    std::sort leaves them — not their index order."""
    p = 40
    cx = (np.arange(p) % 8) / 8 + 1 / 16
    cy = (np.arange(p) // 8) / 8 + 1 / 16
    priors = np.stack([cx - 0.05, cy - 0.05, cx + 0.05, cy + 0.05], 1).astype(F32)
    prior_blob = np.stack([priors.reshape(-1), np.full(p * 4, 0.1, F32)])[None]
    conf = np.zeros((1, p, 3), F32)
    conf[0, :, 1] = 1.0
    conf[0, ::3, 2] = 0.5
    loc = np.zeros((1, p * 4), F32)
    text = (inp("loc", loc.shape) + inp("conf", (1, p * 3)) + inp("prior", prior_blob.shape)
            + lay("DetectionOutput", ["loc", "conf", "prior"], ["det"],
                  "detection_output_param { num_classes: 3 background_label_id: 0 "
                  "nms_param { nms_threshold: 0.45 } keep_top_k: 30 "
                  "confidence_threshold: 0.01 code_type: CORNER }"))
    net = decaffe.Net(text, decaffe.TEST, dtype=torch.float32)
    net.blobs["loc"].data[...] = loc
    net.blobs["conf"].data[...] = conf.reshape(1, -1)
    net.blobs["prior"].data[...] = prior_blob
    net.forward()
    det = net.blobs["det"].data[0, 0]
    # the fork: pairs labels ascending, NMS order within a label, then std::sort, resize(30)
    idx1 = list(range(p))
    pairs = [(1.0, 1, j) for j in idx1] + [(0.5, 2, j) for j in range(0, p, 3)]
    order = _std_sort_reference([s for s, _, _ in pairs])[:30]
    kept = [pairs[k] for k in order]
    want = [j for _, lab, j in kept if lab == 1]
    assert det.shape == (30, 7) and (det[:, 1] == 1).all()
    # CORNER with zero offsets decodes to the priors themselves: find each row's prior
    got = [int(np.flatnonzero((priors == row).all(1))[0]) for row in det[:, 3:]]
    assert got == want
    assert got != sorted(got), "the stable order would differ: the case pins the fork's"


@pytest.mark.parametrize("thr,eta", [(0.9, 0.999), (0.7, 0.8), (0.45, 0.5), (0.51, 0.99),
                                     (0.3, 1.0)])
def test_adaptive_threshold_schedule_is_the_forks(thr, eta):
    """adaptive_threshold *= eta (float) after each kept box while it is above 0.5."""
    want, t = [], F32(thr)
    for _ in range(700):
        want.append(t)
        if eta < 1 and t > 0.5:
            t = F32(t * F32(eta))
    np.testing.assert_array_equal(B._adaptive_thresholds(thr, eta, 699), np.array(want, F32))
