"""soeaver/py-RFCN-priv's default configuration (``lib/fast_rcnn/config.py`` at 084e384):
py-faster-rcnn's, with RPN_MIN_SIZE 8 in both phases and RPN_NORMALIZE_STDS
(0.1, 0.1, 0.2, 0.2) (RPN_NORMALIZE_TARGETS stays off, as AGNOSTIC does)."""

from __future__ import annotations

import copy
import importlib.util
import os

_BASE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "py-faster-rcnn", "fast_rcnn", "config.py")
_spec = importlib.util.spec_from_file_location("_py_faster_rcnn_config", _BASE)
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)

AttrDict = _base.AttrDict
phase_key = _base.phase_key
cfg = copy.deepcopy(_base.cfg)
cfg.TRAIN.RPN_MIN_SIZE = 8
cfg.TEST.RPN_MIN_SIZE = 8
cfg.TRAIN.RPN_NORMALIZE_STDS = (0.1, 0.1, 0.2, 0.2)
cfg.TEST.AGNOSTIC = False
