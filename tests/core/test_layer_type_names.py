"""Each layer reports the type it was registered as, as Caffe's Layer::type() does, also when
its class extends another registered layer (the forks' depthwise convolutions, the OHEM
losses, LaneData)."""

import pytest

import caffe
from decaffe.layer import layer_class, layer_type_list


@pytest.mark.parametrize("name", layer_type_list())
def test_registered_class_reports_its_own_type(name):
    assert layer_class(name).type == name


def test_pycaffe_layers_report_the_prototxt_type(tmp_path):
    path = tmp_path / "dw.prototxt"
    path.write_text(
        "layer { name: 'x' type: 'Input' top: 'x' input_param { shape { dim: 1 dim: 4 "
        "dim: 8 dim: 8 } } }\n"
        "layer { name: 'dw' type: 'DepthwiseConvolution' bottom: 'x' top: 'y' "
        "convolution_param { num_output: 4 group: 4 kernel_size: 3 } }\n"
        "layer { name: 'dw2' type: 'ConvolutionDepthwise' bottom: 'y' top: 'z' "
        "convolution_param { num_output: 4 kernel_size: 3 } }\n"
        "layer { name: 'c' type: 'Convolution' bottom: 'z' top: 'w' "
        "convolution_param { num_output: 2 kernel_size: 1 } }\n")
    net = caffe.Net(str(path), caffe.TEST)
    assert [layer.type for layer in net.layers] == [
        "Input", "DepthwiseConvolution", "ConvolutionDepthwise", "Convolution"]
    assert net.layer_dict["dw"].type == "DepthwiseConvolution"
