"""The forks' schema in decaffe's caffe.proto: every fork golden prototxt and every net of the
fork corpus parses, the forks' field numbers read their bytes, the numbering choices of
docs/compat.md ("Fork schema") hold, and the upgrade tools pass fork files through as the
forks' own tools did."""

from __future__ import annotations

import glob
import os
import struct

import pytest
from fork_corpus import nets
from google.protobuf import descriptor_pb2, text_format

from decaffe.formats import prototxt
from decaffe.formats.wire import encode_varint as _varint
from decaffe.formats.wire import len_field as _len
from decaffe.formats.wire import tag as _key
from decaffe.proto import caffe_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "..", "golden")
FORK_GOLDENS = sorted(glob.glob(os.path.join(GOLDEN, "fork_*.prototxt")))
CORPUS = nets()
FDP = descriptor_pb2.FieldDescriptorProto


def _layer_types(net: caffe_pb2.NetParameter) -> list[str]:
    """Layer types in file order: current layers, V1 enum names, V0 type strings."""
    out = [lp.type for lp in net.layer]
    for lc in net.layers:
        if lc.HasField("layer"):
            out.append(lc.layer.type)
        else:
            out.append(caffe_pb2.V1LayerParameter.LayerType.Name(lc.type))
    return out


# --- everything parses ----------------------------------------------------------------------


def test_there_are_fork_goldens_and_260_corpus_nets():
    assert len(FORK_GOLDENS) >= 40
    assert len(CORPUS) == 260


@pytest.mark.parametrize("path", FORK_GOLDENS, ids=os.path.basename)
def test_fork_golden_prototxt_parses(path):
    net = prototxt.read_text(path, caffe_pb2.NetParameter())
    assert net.layer, "no layers read"


@pytest.mark.parametrize("fork_net", CORPUS, ids=lambda n: n.local_path)
def test_corpus_net_parses_and_keeps_its_layer_types(fork_net):
    net = prototxt.parse_text(fork_net.text, caffe_pb2.NetParameter(), fork_net.local_path)
    assert set(_layer_types(net)) == set(fork_net.row["layer_types"].split(","))


def test_templates_parse_only_after_gen_model_substitution():
    templates = [n for n in CORPUS if n.is_template]
    assert len(templates) == 3
    deploy = next(n for n in templates if "deploy" in n.local_path)
    with pytest.raises(Exception, match="cls3x"):
        prototxt.parse_text(deploy.raw, caffe_pb2.NetParameter())
    net = prototxt.parse_text(deploy.text, caffe_pb2.NetParameter())
    out = next(lp for lp in net.layer if lp.type == "DetectionOutput")
    assert out.detection_output_param.num_classes == 21


# --- field numbers: the forks' where free, documented choices elsewhere ----------------------


def _field_proto(message: str, name: str):
    desc = caffe_pb2.DESCRIPTOR.message_types_by_name[message]
    proto = descriptor_pb2.DescriptorProto()
    desc.CopyToProto(proto)
    return next(f for f in proto.field if f.name == name)


@pytest.mark.parametrize("message,name,number,type_", [
    # Faster R-CNN / R-FCN
    ("LayerParameter", "roi_pooling_param", 8266711, "message"),
    ("LayerParameter", "smooth_l1_loss_param", 8266712, "message"),
    ("LayerParameter", "box_annotator_ohem_param", 10000, "message"),
    ("LayerParameter", "psroi_pooling_param", 10001, "message"),
    ("LayerParameter", "proposal_param", 1000, "message"),
    ("ROIPoolingParameter", "pooled_h", 1, "uint32"),
    ("ROIPoolingParameter", "pooled_w", 2, "uint32"),
    ("ROIPoolingParameter", "spatial_scale", 3, "float"),
    ("SmoothL1LossParameter", "sigma", 1, "float"),
    ("PSROIPoolingParameter", "output_dim", 2, "int32"),
    ("PSROIPoolingParameter", "group_size", 3, "int32"),
    ("ProposalParameter", "nms_thresh", 8, "float"),
    ("DropoutParameter", "scale_train", 2, "bool"),
    ("LossParameter", "pre_fixed_normalizer", 4, "float"),
    # BN, Interp, Upsample, YOLO, mobile
    ("LayerParameter", "bn_param", 45, "message"),
    ("BNParameter", "slope_filler", 1, "message"),
    ("BNParameter", "frozen", 5, "bool"),
    ("BNParameter", "scale_filler", 101, "message"),
    ("BNParameter", "bn_mode", 103, "enum"),
    ("LayerParameter", "interp_param", 20001, "message"),
    ("InterpParameter", "zoom_factor", 3, "int32"),
    ("InterpParameter", "pad_end", 6, "int32"),
    ("LayerParameter", "upsample_param", 150, "message"),
    ("UpsampleParameter", "upsample_h", 6, "uint32"),
    ("LayerParameter", "yolov3_detection_output_param", 602, "message"),
    ("LayerParameter", "reorg_param", 149, "message"),
    ("LayerParameter", "relu6_param", 100000, "message"),
    ("LayerParameter", "shuffle_channel_param", 164, "message"),
    ("AnnotatedDataParameter", "yolo_data_jitter", 5, "float"),
    ("AnnotatedDataParameter", "seg_resize_height", 10, "int32"),
    ("Annotation", "lanes", 3, "message"),
    ("LaneInfo", "x", 1, "float"),
    ("LaneInfo", "y", 2, "float"),
    ("LaneInfo", "id", 3, "int32"),
    # inisis/caffe, the golden fork build
    ("LayerParameter", "resize_param", 251, "message"),
    ("ResizeLayerParameter", "is_pyramid_test", 3, "bool"),
    ("LayerParameter", "hardsigmoid_param", 501, "message"),
    ("LayerParameter", "unsqueeze_param", 502, "message"),
    ("LayerParameter", "pad_param", 504, "message"),
    ("LayerParameter", "bilinear_interpolate_param", 505, "message"),
    ("LayerParameter", "max_unpool_param", 506, "message"),
    ("LayerParameter", "pixelshuffle_param", 507, "message"),
    ("PadParameter", "pad_value", 6, "float"),
    ("BatchNormParameter", "use_alpha_beta", 9, "bool"),
    ("UpsampleParameter", "dims_num", 30101, "int32"),
    # fork fields on BVLC messages
    ("PoolingParameter", "ceil_mode", 1013, "bool"),
    ("PoolingParameter", "round_mode", 13, "enum"),
    ("TransformationParameter", "resize_param", 8, "message"),
    ("TransformationParameter", "crop_height", 210, "uint32"),
    ("ImageDataParameter", "label_type", 16, "enum"),
])
def test_fork_field_numbers(message, name, number, type_):
    fp = _field_proto(message, name)
    assert fp.number == number
    assert FDP.Type.Name(fp.type) == "TYPE_" + type_.upper()


def test_fork_defaults():
    assert caffe_pb2.ROIPoolingParameter().spatial_scale == 1.0
    assert caffe_pb2.SmoothL1LossParameter().sigma == 1.0
    assert caffe_pb2.PoolingParameter().ceil_mode is True
    assert caffe_pb2.BNParameter().momentum == pytest.approx(0.9)
    assert caffe_pb2.BNParameter().eps == pytest.approx(1e-5)
    assert caffe_pb2.InterpParameter().zoom_factor == 1
    assert caffe_pb2.ReLU6Parameter().threshold == 6.0
    assert caffe_pb2.HardSigmoidParameter().alpha == pytest.approx(0.2)
    assert caffe_pb2.BilinearInterpolateParameter().align_corners is True
    assert caffe_pb2.UpsampleParameter().dims_num == 4
    assert caffe_pb2.DropoutParameter().scale_train is True
    assert caffe_pb2.BoxAnnotatorOHEMParameter().ignore_label == -1
    p = caffe_pb2.ProposalParameter()
    assert (p.feat_stride, p.base_size, p.min_size) == (16, 16, 16)
    assert (p.pre_nms_topn, p.post_nms_topn) == (6000, 300)


def test_lane_annotation_types_keep_eric612_numbers():
    kind = caffe_pb2.AnnotatedDatum.AnnotationType
    assert (kind.Value("BBOX"), kind.Value("BBOXandSeg"), kind.Value("LANE")) == (0, 1, 2)


def test_loss_normalization_keeps_bvlc_none_and_adds_pre_fixed():
    mode = caffe_pb2.LossParameter.NormalizationMode
    assert mode.Value("NONE") == 3
    assert mode.Value("PRE_FIXED") == 4
    lp = text_format.Parse("normalization: PRE_FIXED pre_fixed_normalizer: 128",
                           caffe_pb2.LossParameter())
    assert lp.pre_fixed_normalizer == 128


def test_field_numbers_are_unique_in_every_message():
    # protoc enforces this; checked here too so a hand edit can never shadow a fork number
    for desc in caffe_pb2.DESCRIPTOR.message_types_by_name.values():
        numbers = [f.number for f in desc.fields]
        assert len(numbers) == len(set(numbers)), desc.full_name


# --- wire compatibility: bytes as the forks wrote them ----------------------------------------


def _f32(number: int, v: float) -> bytes:
    return _key(number, 5) + struct.pack("<f", v)


def _vint(number: int, v: int) -> bytes:
    return _key(number, 0) + _varint(v)


def _fork_layer_bytes() -> bytes:
    """A Faster R-CNN/R-FCN/BN layer set as those forks' protoc wrote it (fields by number)."""
    roi = _len(1, b"roi_pool5") + _len(2, b"ROIPooling") + _len(3, b"conv5") + _len(3, b"rois")
    roi += _len(4, b"pool5") + _len(8266711, _vint(1, 7) + _vint(2, 6) + _f32(3, 0.0625))
    ps = _len(1, b"psroi") + _len(2, b"PSROIPooling")
    ps += _len(10001, _f32(1, 0.0625) + _vint(2, 21) + _vint(3, 7))
    sl1 = _len(1, b"loss_bbox") + _len(2, b"SmoothL1Loss") + _len(8266712, _f32(1, 3.0))
    filler = _len(1, b"constant") + _f32(2, 1.0)
    bn = _len(1, b"bn") + _len(2, b"BN") + _len(45, _len(1, filler) + _vint(5, 1))
    pool = _len(1, b"pool1") + _len(2, b"Pooling")
    pool += _len(121, _vint(1, 0) + _vint(2, 3) + _vint(3, 2) + _vint(1013, 0))
    return b"".join(_len(100, layer) for layer in (roi, ps, sl1, bn, pool))


def test_fork_bytes_decode_to_the_fork_fields():
    net = caffe_pb2.NetParameter.FromString(_fork_layer_bytes())
    roi, ps, sl1, bn, pool = net.layer
    assert (roi.roi_pooling_param.pooled_h, roi.roi_pooling_param.pooled_w) == (7, 6)
    assert roi.roi_pooling_param.spatial_scale == 0.0625
    assert list(roi.bottom) == ["conv5", "rois"]
    assert (ps.psroi_pooling_param.output_dim, ps.psroi_pooling_param.group_size) == (21, 7)
    assert sl1.smooth_l1_loss_param.sigma == 3.0
    assert bn.bn_param.slope_filler.value == 1.0 and bn.bn_param.frozen
    assert pool.pooling_param.HasField("ceil_mode") and not pool.pooling_param.ceil_mode


def test_fork_fields_encode_to_the_forks_bytes():
    net = caffe_pb2.NetParameter.FromString(_fork_layer_bytes())
    assert net.SerializeToString(deterministic=True) == _fork_layer_bytes()


def test_unknown_fork_fields_survive_a_round_trip():
    # a field of some fork not in the schema (number 777777 in LayerParameter) is kept
    extra = _len(1, b"x") + _len(2, b"Mystery") + _vint(777777, 5)
    data = _len(100, extra)
    assert caffe_pb2.NetParameter.FromString(data).SerializeToString() == data


# --- the upgrade tools on fork files -----------------------------------------------------------

FORK_TEXT = """\
name: "fork"
layer {
  name: "pool1"
  type: "Pooling"
  bottom: "data"
  top: "pool1"
  pooling_param {
    pool: MAX
    kernel_size: 3
    stride: 2
    ceil_mode: false
  }
}
layer {
  name: "bn1"
  type: "BN"
  bottom: "pool1"
  top: "bn1"
  bn_param {
    slope_filler {
      type: "constant"
      value: 1
    }
    frozen: true
  }
}
layer {
  name: "roi_pool5"
  type: "ROIPooling"
  bottom: "bn1"
  bottom: "rois"
  top: "pool5"
  roi_pooling_param {
    pooled_h: 7
    pooled_w: 7
    spatial_scale: 0.0625
  }
}
layer {
  name: "loss_bbox"
  type: "SmoothL1Loss"
  bottom: "bbox_pred"
  bottom: "bbox_targets"
  bottom: "bbox_inside_weights"
  bottom: "bbox_outside_weights"
  top: "loss_bbox"
  loss_weight: 1
  smooth_l1_loss_param {
    sigma: 3
  }
}
layer {
  name: "psroi"
  type: "PSROIPooling"
  bottom: "rfcn_cls"
  bottom: "rois"
  top: "psroipooled_cls_rois"
  psroi_pooling_param {
    spatial_scale: 0.0625
    output_dim: 21
    group_size: 7
  }
}
"""


def _cli(capsys, *args) -> tuple[int, str]:
    from decaffe.cli import main

    rc = main(list(args))
    return rc, capsys.readouterr().err


def test_upgrade_net_proto_text_writes_a_fork_file_back_unchanged(tmp_path, capsys):
    src, dst = tmp_path / "fork.prototxt", tmp_path / "out.prototxt"
    src.write_text(FORK_TEXT)
    rc, err = _cli(capsys, "upgrade_net_proto_text", str(src), str(dst))
    assert rc == 0
    assert "already in latest proto format" in err
    assert dst.read_text() == FORK_TEXT


def test_upgrade_net_proto_binary_writes_fork_bytes_back_unchanged(tmp_path, capsys):
    src, dst = tmp_path / "fork.caffemodel", tmp_path / "out.caffemodel"
    src.write_bytes(_fork_layer_bytes())
    rc, err = _cli(capsys, "upgrade_net_proto_binary", str(src), str(dst))
    assert rc == 0
    assert dst.read_bytes() == _fork_layer_bytes()


def test_upgrade_text_upgrades_a_v1_file_that_carries_fork_parameters(tmp_path, capsys):
    # input fields and V1 layers upgrade; the fork's own layer{} next to them is kept
    src, dst = tmp_path / "old.prototxt", tmp_path / "new.prototxt"
    src.write_text('input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\n'
                   'layer { name: "p" type: "Pooling" bottom: "data" top: "p" '
                   'pooling_param { pool: AVE kernel_size: 2 ceil_mode: false } }\n')
    rc, _ = _cli(capsys, "upgrade_net_proto_text", str(src), str(dst))
    assert rc == 0
    net = prototxt.read_text(str(dst), caffe_pb2.NetParameter())
    assert [lp.type for lp in net.layer] == ["Input", "Pooling"]
    assert net.layer[1].pooling_param.HasField("ceil_mode")
    assert net.layer[1].pooling_param.ceil_mode is False


def test_spp_net_v0_files_upgrade_with_their_nested_parameters(tmp_path, capsys):
    # ShaoqingRen/SPP_net's V0 nets nest V1 parameter messages and say "inner_product"
    fork_net = next(n for n in CORPUS if n.local_path.endswith("Zeiler_conv5.prototxt"))
    src, dst = tmp_path / "spp.prototxt", tmp_path / "spp_up.prototxt"
    src.write_text(fork_net.text)
    rc, _ = _cli(capsys, "upgrade_net_proto_text", str(src), str(dst))
    assert rc == 0
    net = prototxt.read_text(str(dst), caffe_pb2.NetParameter())
    assert not net.layers
    by_name = {lp.name: lp for lp in net.layer}
    conv1 = by_name["conv1"]
    assert conv1.type == "Convolution"
    cp = conv1.convolution_param
    assert (cp.num_output, list(cp.kernel_size), list(cp.pad), list(cp.stride)) == \
        (96, [7], [1], [2])
    assert cp.weight_filler.std == pytest.approx(0.01)
    assert [p.lr_mult for p in conv1.param] == [1, 2]
    assert by_name["norm1"].lrn_param.norm_region == caffe_pb2.LRNParameter.WITHIN_CHANNEL
    types = {lp.type for lp in net.layer}
    assert {"InnerProduct", "Pooling", "Concat", "Dropout", "Flatten"} <= types
    fc = next(lp for lp in net.layer if lp.type == "InnerProduct")
    assert fc.inner_product_param.num_output > 0


def test_netspec_reaches_the_fork_parameter_messages():
    import caffe
    from caffe import layers as L

    n = caffe.NetSpec()
    n.data, n.rois = L.Input(shape=[dict(dim=[1, 8, 10, 10]), dict(dim=[3, 5])], ntop=2)
    n.pool = L.ROIPooling(n.data, n.rois, pooled_h=2, pooled_w=3, spatial_scale=0.5)
    n.ps = L.PSROIPooling(n.data, n.rois, spatial_scale=0.5, output_dim=2, group_size=2)
    n.bn = L.BN(n.data, frozen=True)
    n.p6 = L.Pooling(n.data, kernel_size=3, stride=2, ceil_mode=False)
    # the Resize layer's message is ResizeLayerParameter (SSD owns ResizeParameter): by name
    n.rs = L.Resize(n.data, resize_param=dict(height=4, width=4))
    net = text_format.Parse(str(n.to_proto()), caffe_pb2.NetParameter())
    layers = {lp.name: lp for lp in net.layer}
    assert layers["pool"].roi_pooling_param.pooled_w == 3
    assert layers["ps"].psroi_pooling_param.group_size == 2
    assert layers["bn"].bn_param.frozen
    assert layers["p6"].pooling_param.HasField("ceil_mode")
    assert layers["rs"].resize_param.height == 4
