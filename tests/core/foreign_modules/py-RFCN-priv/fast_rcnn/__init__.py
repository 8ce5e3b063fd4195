"""soeaver/py-RFCN-priv's ``lib/fast_rcnn``: its own config; the box helpers are
py-faster-rcnn's (found through this package's path)."""

import os

__path__.append(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "py-faster-rcnn", "fast_rcnn"))
