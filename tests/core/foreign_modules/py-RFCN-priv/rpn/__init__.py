"""soeaver/py-RFCN-priv's ``lib/rpn``: its proposal target layer; the other rpn modules are
py-faster-rcnn's as py-RFCN-priv reads param_str (found through this package's path)."""

import os

__path__.append(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "py-faster-rcnn", "rpn"))
