"""Caffe's schema: caffe_pb2, generated from caffe.proto by tools/gen_proto.py."""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf import descriptor, message_factory, text_format
from google.protobuf.message import Message

from . import caffe_pb2


def _text(message: Message) -> str:
    return text_format.MessageToString(message)


def _use_text_format_for_str(descriptors: Iterable[descriptor.Descriptor]) -> None:
    # protobuf's C (upb) backend prints floats with 9 significant digits in str(message);
    # pycaffe users (and NetSpec goldens) see text_format's shortest form: 0.003921569.
    for desc in descriptors:
        cls = getattr(desc, "_concrete_class", None)
        if cls is None:
            cls = message_factory.GetMessageClass(desc)
        cls.__str__ = _text
        _use_text_format_for_str(desc.nested_types)


_use_text_format_for_str(caffe_pb2.DESCRIPTOR.message_types_by_name.values())

__all__ = ["caffe_pb2"]
