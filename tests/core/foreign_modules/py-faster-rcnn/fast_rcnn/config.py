"""py-faster-rcnn's default configuration (rbgirshick/py-faster-rcnn ``lib/fast_rcnn/config.py``
at 028dc40): the values its RPN and target layers read, as ``cfg.TRAIN.X`` / ``cfg["TEST"].X``.

Keys the R-FCN descendant (soeaver/py-RFCN-priv ``lib/fast_rcnn/config.py``) adds are here with
values that keep py-faster-rcnn's behaviour: ONLY_INSIDE_ANCHORS on, RPN_NORMALIZE_TARGETS and
AGNOSTIC off. Tests may change values and restore them, as a training script's yml does.
"""

from __future__ import annotations


class AttrDict(dict):
    """easydict's EasyDict, as far as the layers use it: keys read as attributes too."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


cfg = AttrDict(
    TRAIN=AttrDict(
        BATCH_SIZE=128,  # ROIs per image in a minibatch
        FG_FRACTION=0.25,
        FG_THRESH=0.5,
        BG_THRESH_HI=0.5,
        BG_THRESH_LO=0.1,
        BBOX_NORMALIZE_TARGETS=True,
        BBOX_INSIDE_WEIGHTS=(1.0, 1.0, 1.0, 1.0),
        BBOX_NORMALIZE_TARGETS_PRECOMPUTED=False,
        BBOX_NORMALIZE_MEANS=(0.0, 0.0, 0.0, 0.0),
        BBOX_NORMALIZE_STDS=(0.1, 0.1, 0.2, 0.2),
        RPN_POSITIVE_OVERLAP=0.7,
        RPN_NEGATIVE_OVERLAP=0.3,
        RPN_CLOBBER_POSITIVES=False,
        RPN_FG_FRACTION=0.5,
        RPN_BATCHSIZE=256,
        RPN_NMS_THRESH=0.7,
        RPN_PRE_NMS_TOP_N=12000,
        RPN_POST_NMS_TOP_N=2000,
        RPN_MIN_SIZE=16,
        RPN_BBOX_INSIDE_WEIGHTS=(1.0, 1.0, 1.0, 1.0),
        RPN_POSITIVE_WEIGHT=-1.0,
        # py-RFCN-priv's additions, off by default
        ONLY_INSIDE_ANCHORS=True,
        RPN_NORMALIZE_TARGETS=False,
        RPN_NORMALIZE_MEANS=(0.0, 0.0, 0.0, 0.0),
        RPN_NORMALIZE_STDS=(1.0, 1.0, 1.0, 1.0),
        AGNOSTIC=False,
    ),
    TEST=AttrDict(
        RPN_NMS_THRESH=0.7,
        RPN_PRE_NMS_TOP_N=6000,
        RPN_POST_NMS_TOP_N=300,
        RPN_MIN_SIZE=16,
    ),
    EPS=1e-14,
)


def phase_key(phase) -> str:
    """The cfg section of a layer's phase: pycaffe's 0/1 or the 'TRAIN'/'TEST' names."""
    if isinstance(phase, str):
        return phase
    return "TRAIN" if int(phase) == 0 else "TEST"
