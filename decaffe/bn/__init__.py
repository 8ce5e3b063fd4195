"""BatchNorm tools for deployment and maintenance, with Caffe's definitions of BatchNorm.

- :func:`fold`: fold BatchNorm (and the Scale/Bias after it) into the Convolution,
  Deconvolution or InnerProduct before it; :func:`fold_result` says what was folded or kept.
- :func:`inspect`: per BatchNorm layer, its channels, scale factor, statistics ranges and
  the problems they show.
- :func:`recompute`: zero the statistics and re-accumulate them as an exact average over
  training-phase batches.
"""

from .fold import FoldedChain, FoldResult, KeptLayer, compare, fold, fold_result, time_forward
from .stats import BNInfo, inspect, recompute

__all__ = ["fold", "fold_result", "FoldResult", "FoldedChain", "KeptLayer", "compare",
           "time_forward", "inspect", "BNInfo", "recompute"]
