"""With several workers, ImageData keeps image i on worker i mod N in TRAIN (as Caffe 1.0's
Data layer keeps records), and every image in TEST."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import decaffe
from decaffe import mode


@pytest.fixture
def listing(tmp_path):
    lines = []
    for i in range(7):
        path = tmp_path / f"im{i}.png"
        cv2.imwrite(str(path), np.full((2, 2), i * 10, np.uint8))
        lines.append(f"{path} {i}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return str(tmp_path / "list.txt")


def _labels(listing, phase, batches=2):
    net = decaffe.Net(f"""name: "i" layer {{ name: "d" type: "ImageData" top: "data" top: "label"
        image_data_param {{ source: "{listing}" batch_size: 3 is_color: false }}
        data_param {{ prefetch: 0 }} }}""", phase)
    try:
        return [net.forward()["label"].tolist() for _ in range(batches)]
    finally:
        net.close()


@pytest.mark.parametrize("rank,want", [(0, [[0, 2, 4], [6, 1, 3]]), (1, [[1, 3, 5], [0, 2, 4]])])
def test_image_data_workers_take_turns(listing, rank, want):
    mode.set_solver_count(2)
    mode.set_solver_rank(rank)
    try:
        assert _labels(listing, decaffe.TRAIN) == want  # offsets counted across the wrap
        assert _labels(listing, decaffe.TEST) == [[0, 1, 2], [3, 4, 5]]
    finally:
        mode.set_solver_count(1)
        mode.set_solver_rank(0)
