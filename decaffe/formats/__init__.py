"""Caffe's file formats: prototxt text (parse, print, upgrade), caffemodel and HDF5 weights,
binaryproto blobs and generic binary messages (solverstates)."""

from .binaryproto import array_to_blobproto, blobproto_to_array, read_blobproto, write_blobproto
from .prototxt import parse_text, read_net, read_solver, read_text, to_text, write_text
from .upgrade import net_needs_upgrade, solver_needs_upgrade, upgrade_net, upgrade_solver
from .weights import (
    BlobRecord,
    load_hdf5,
    load_weights,
    read_caffemodel_raw,
    read_message,
    save_caffemodel,
    save_hdf5,
    shapes_match,
    write_caffemodel_raw,
    write_message,
)

__all__ = [
    "read_net", "read_solver", "read_text", "parse_text", "to_text", "write_text",
    "load_weights", "save_caffemodel", "load_hdf5", "save_hdf5", "read_blobproto",
    "write_blobproto", "blobproto_to_array", "array_to_blobproto", "read_message",
    "write_message", "upgrade_net", "upgrade_solver", "net_needs_upgrade",
    "solver_needs_upgrade", "shapes_match", "BlobRecord", "read_caffemodel_raw",
    "write_caffemodel_raw",
]
