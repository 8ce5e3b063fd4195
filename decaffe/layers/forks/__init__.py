"""The forks' layer families (each fork's choices are in docs/compat.md); importing this
package registers them all.

- ``ssd``: the SSD fork's detection layers (PriorBox, Permute, Normalize, DetectionOutput,
  MultiBoxLoss, DetectionEvaluate);
- ``rcnn``: Faster R-CNN / R-FCN (ROIPooling, PSROIPooling, SmoothL1Loss, Proposal, the OHEM
  layers);
- ``yolo``: eric612/MobileNet-YOLO (YOLO detection outputs and losses, Reorg,
  AssistedExcitation);
- ``resize``: Interp, Upsample, MaxUnPool, Resize, BilinearInterpolate, PixelShuffle;
- ``mobile``: ConvolutionDepthwise, DepthwiseConvolution, ReLU6, HardSwish, HardSigmoid,
  ShuffleChannel, Axpy;
- ``face``: sphereface's MarginInnerProduct;
- ``norm``: BN (yjxiong/Cysu, SegNet/ENet) and BatchNormKyle;
- ``shape``: the conversion forks' Pad and Unsqueeze;
- ``data``: DenseImageData, ImageSegData, VideoData, AnnotatedData, LaneData;
- ``misc``: GuidedDropout, CenterLoss, SeLu, SeLuDropout, SegAccuracy.
"""

# one line per family, so that each family's branch adds one line
# isort: off
from . import data  # noqa: F401
from . import face  # noqa: F401
from . import misc  # noqa: F401
from . import mobile  # noqa: F401
from . import norm  # noqa: F401
from . import rcnn  # noqa: F401
from . import resize  # noqa: F401
from . import shape  # noqa: F401
from . import ssd  # noqa: F401
from . import yolo  # noqa: F401
# isort: on
