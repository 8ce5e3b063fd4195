"""Caffe's data: Datum records, LMDB/LevelDB databases, the DataTransformer, prefetching,
the data layers' record sources (``sources``) and the bundled digits dataset. The data
layers that use them are in decaffe.layers.data and decaffe.layers.forks.data."""

from .datum import Datum, datum_array, parse_datum, read_image, read_image_to_datum  # noqa: F401
from .db import NEW, READ, WRITE, open_db  # noqa: F401
from .transformer import DataTransformer, load_mean_file  # noqa: F401
