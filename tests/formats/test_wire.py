"""decaffe.formats.wire: protobuf's varints, tags and fields, against protobuf's own encoder."""

from __future__ import annotations

import pytest

from decaffe.formats import wire
from decaffe.proto import caffe_pb2


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**31 - 1, 2**32, 2**63 - 1])
def test_varints_round_trip_and_match_protobuf(value):
    enc = wire.encode_varint(value)
    assert len(enc) == wire.varint_size(value)
    assert wire.decode_varint(enc, 0, len(enc)) == (value, len(enc))
    # protobuf's bytes for an int64 field holding it: the tag, then the varint
    msg = caffe_pb2.BlobShape(dim=[value]).SerializeToString()
    assert msg.endswith(enc)


def test_negative_numbers_are_ten_bytes_of_twos_complement():
    enc = wire.encode_varint(-3)
    assert len(enc) == 10 == wire.varint_size(-3)
    value, _ = wire.decode_varint(enc, 0, len(enc))
    assert wire.int64(value) == -3 and wire.int32(value) == -3
    # BlobShape.dim is packed: one length-delimited run of varints
    assert caffe_pb2.BlobShape(dim=[-3]).SerializeToString() == wire.len_field(1, enc)


def test_fields_spans_and_len_field_match_protobuf():
    layer = caffe_pb2.LayerParameter(name="conv", type="Convolution", bottom=["data"])
    raw = layer.SerializeToString()
    assert raw == (wire.len_field(1, b"conv") + wire.len_field(2, b"Convolution")
                   + wire.len_field(3, b"data"))
    got = [(n, wt, raw[v[0]:v[1]]) for n, wt, v, _s, _e in wire.fields(raw, 0, len(raw))]
    assert got == [(1, wire.LEN, b"conv"), (2, wire.LEN, b"Convolution"), (3, wire.LEN, b"data")]


@pytest.mark.parametrize("data, message", [
    (b"\x80", "the file ends inside a number"),
    (b"\xff" * 11, "longer than 10 bytes"),
    (b"\x00\x01", "field number 0"),
    (b"\x0a\x05ab", "claims 5 bytes but only 2 remain"),
    (b"\x0f", "invalid wire type 7"),
    (b"\x0d\x00", "truncated: field 1"),
])
def test_bad_bytes_are_corrupt(data, message):
    with pytest.raises(wire.Corrupt, match=message):
        list(wire.fields(data, 0, len(data)))


def test_groups_are_left_to_protobuf():
    with pytest.raises(wire.Unusual, match="group"):
        list(wire.fields(b"\x0b\x0c", 0, 2))
