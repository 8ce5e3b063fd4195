"""pycaffe's caffe.coord_map: map coordinates between NetSpec tops, and crop by them
(see decaffe.pycaffe.coord_map)."""

from decaffe.pycaffe.coord_map import (  # noqa: F401
    PASS_THROUGH_LAYERS,
    AxisMismatchException,
    CoordMapError,
    CropError,
    UnconnectedTopsError,
    UndefinedMapException,
    compose,
    conv_params,
    coord_map,
    coord_map_from_to,
    crop,
    crop_params,
    inverse,
)
