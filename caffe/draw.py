"""pycaffe's caffe.draw: draw a NetParameter as a graph (see decaffe.pycaffe.draw)."""

from decaffe.pycaffe.draw import (  # noqa: F401
    BLOB_STYLE,
    LAYER_STYLE_DEFAULT,
    NEURON_LAYER_STYLE,
    DrawError,
    choose_color_by_layertype,
    draw_net,
    draw_net_to_file,
    get_edge_label,
    get_layer_label,
    get_layer_lr_mult,
    get_pooling_types_dict,
    get_pydot_graph,
)
