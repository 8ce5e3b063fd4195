"""pycaffe's caffe.draw: a net as a graphviz graph, drawn the way Caffe's draw_net.py draws it.

Every layer is a filled record box labelled with its name and ``(Type)``; Convolution and
Deconvolution boxes are red (#FF5050), Pooling orange (#FF9900, labelled ``(Pooling MAX)``),
InnerProduct purple (#CC33FF), other layers blue (#6495ED), and an in-place layer (one bottom,
one top, the same blob) light green (#90EE90). Convolution, Deconvolution and Pooling labels
add ``kernel size``, ``stride`` and ``pad``; with ``display_lrm`` the learning layers add their
``lr mult``. Blobs are grey octagons; a blob no layer reads keeps graphviz's plain ellipse, as
in Caffe's pictures. Edges out of a layer carry its output count (``num_output``, or ``Batch N``
for Data layers). Label words are joined by newlines for left-right layouts and by spaces for
top-bottom ones.

The graph is built with pydot and rendered by graphviz's ``dot`` when it is on the PATH, else
by ``graphviz-pure`` (a pip-installable graphviz port). ``$DECAFFE_DOT`` names another program.
A ``.raw`` file gets the graph's dot source, which any graphviz reads.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING

from ..errors import DecaffeError
from ..formats import prototxt, upgrade
from ..formats.atomic import atomic_write
from ..proto import caffe_pb2

if TYPE_CHECKING:
    import pydot

# What the draw functions take: a NetParameter or a prototxt path
NetLike = caffe_pb2.NetParameter | str | os.PathLike[str]

# Node styles, as Caffe's draw.py defines them.
LAYER_STYLE_DEFAULT = {"shape": "record", "fillcolor": "#6495ED", "style": "filled"}
NEURON_LAYER_STYLE = {"shape": "record", "fillcolor": "#90EE90", "style": "filled"}
BLOB_STYLE = {"shape": "octagon", "fillcolor": "#E0E0E0", "style": "filled"}

_LRM_TYPES = ("Convolution", "Deconvolution", "InnerProduct")
# Formats graphviz-pure cannot write itself and that we make from its PNG output.
_RASTER_WRAPPED = ("pdf",)


class DrawError(DecaffeError, ValueError):
    """A net or request that cannot be drawn (pycaffe raised ValueError for these)."""


def get_pooling_types_dict() -> dict[int, str]:
    """{enum number: name} of PoolingParameter.PoolMethod (0: 'MAX', 1: 'AVE', 2: 'STOCHASTIC')."""
    desc = caffe_pb2.PoolingParameter.PoolMethod.DESCRIPTOR
    return {v.number: name for name, v in desc.values_by_name.items()}


def get_edge_label(layer: caffe_pb2.LayerParameter) -> str:
    """The label of the edges out of a layer: its batch size or output count, else empty."""
    if layer.type == "Data":
        return "Batch " + str(layer.data_param.batch_size)
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return '""'


def get_layer_lr_mult(layer: caffe_pb2.LayerParameter) -> tuple[float, float]:
    """The (weights, bias) learning-rate multipliers of a Convolution/Deconvolution/InnerProduct
    layer; an absent ParamSpec counts as 1."""
    if layer.type not in _LRM_TYPES:
        raise DrawError(f"{layer.type} layers do not have a learning rate multiplier")
    specs = list(layer.param)
    if len(specs) > 2:
        raise DrawError(f"layer '{layer.name}': could not parse the learning rate multiplier "
                        f"({len(specs)} param entries, at most 2 expected)")
    mults = [s.lr_mult for s in specs] + [1.0] * (2 - len(specs))
    return mults[0], mults[1]


def _record_escape(text: str) -> str:
    # In a record-shaped node these characters delimit fields; escaped, they print as typed.
    for ch in "\\{}|<>":
        text = text.replace(ch, "\\" + ch)
    return text.replace('"', '\\"')


def _spatial(layer: caffe_pb2.LayerParameter) -> tuple[str, str, str]:
    """kernel, stride and pad as Caffe's draw.py reports them (the first value of each).

    Rectangular kernels given as kernel_h/kernel_w (or pad_h.., stride_h..) are shown as HxW,
    where Caffe's script would show its default."""
    if layer.type == "Pooling":
        p = layer.pooling_param
        kernel = (f"{p.kernel_h}x{p.kernel_w}" if p.HasField("kernel_h") else
                  str(p.kernel_size))
        stride = f"{p.stride_h}x{p.stride_w}" if p.HasField("stride_h") else str(p.stride)
        pad = f"{p.pad_h}x{p.pad_w}" if p.HasField("pad_h") else str(p.pad)
        return kernel, stride, pad
    p = layer.convolution_param
    if p.HasField("kernel_h"):
        kernel = f"{p.kernel_h}x{p.kernel_w}"
    else:
        kernel = str(p.kernel_size[0]) if len(p.kernel_size) else "1"
    if p.HasField("stride_h"):
        stride = f"{p.stride_h}x{p.stride_w}"
    else:
        stride = str(p.stride[0]) if len(p.stride) else "1"
    if p.HasField("pad_h"):
        pad = f"{p.pad_h}x{p.pad_w}"
    else:
        pad = str(p.pad[0]) if len(p.pad) else "0"
    return kernel, stride, pad


def get_layer_label(layer: caffe_pb2.LayerParameter, rankdir: str,
                    display_lrm: bool = False) -> str:
    """A layer's node label (quoted for dot): name, (Type), spatial parameters, lr mults."""
    # vertical layouts have room across, horizontal ones have room down
    separator = " " if rankdir in ("TB", "BT") else r"\n"
    if layer.type == "Pooling":
        pool = get_pooling_types_dict().get(layer.pooling_param.pool, str(layer.pooling_param.pool))
        kind = f"({layer.type} {pool})"
    else:
        kind = f"({layer.type})"
    parts = [_record_escape(layer.name), _record_escape(kind)]
    if layer.type in ("Convolution", "Deconvolution", "Pooling"):
        kernel, stride, pad = _spatial(layer)
        parts.append(separator.join([f"kernel size: {kernel}", f"stride: {stride}",
                                     f"pad: {pad}"]))
    if display_lrm and layer.type in _LRM_TYPES:
        lrm0, lrm1 = get_layer_lr_mult(layer)
        if lrm0 or lrm1:
            parts.append(f"lr mult: {lrm0:.1f}, {lrm1:.1f}")
    return '"' + separator.join(parts) + '"'


def choose_color_by_layertype(layertype: str) -> str:
    """A layer box's fill colour by type."""
    if layertype in ("Convolution", "Deconvolution"):
        return "#FF5050"
    if layertype == "Pooling":
        return "#FF9900"
    if layertype == "InnerProduct":
        return "#CC33FF"
    return "#6495ED"


def _phase_value(phase: int | str | None) -> int | None:
    if phase is None:
        return None
    if isinstance(phase, str):
        try:
            return caffe_pb2.Phase.Value(phase.upper())
        except ValueError:
            raise DrawError(f"unknown phase {phase!r} (TRAIN, TEST or None for all)") from None
    if phase not in (caffe_pb2.TRAIN, caffe_pb2.TEST):
        raise DrawError(f"unknown phase {phase!r} (caffe.TRAIN, caffe.TEST or None for all)")
    return phase


def _included(layer: caffe_pb2.LayerParameter, phase: int) -> bool:
    """Caffe's draw.py phase test: include rules admit, exclude rules remove, by phase only."""
    if len(layer.include) and len(layer.exclude):
        raise DrawError(f"layer '{layer.name}' has both include and exclude specified")
    included = not len(layer.include)
    for rule in layer.include:
        included = included or rule.phase == phase
    for rule in layer.exclude:
        included = included and rule.phase != phase
    return included


def _as_net_param(caffe_net: NetLike) -> caffe_pb2.NetParameter:
    """A NetParameter from a message or a prototxt path.

    Files are drawn as written (an old-style `input:` stays a blob, as in Caffe's picture);
    only V0/V1 nets, which have no `layer` entries to draw, are upgraded first."""
    if isinstance(caffe_net, caffe_pb2.NetParameter):
        return caffe_net
    if isinstance(caffe_net, (str, os.PathLike)):
        param = prototxt.read_net(os.fspath(caffe_net), upgrade=False)
        if len(param.layers):
            upgrade.upgrade_net(param, os.fspath(caffe_net))
        return param
    raise DrawError(f"cannot draw a {type(caffe_net).__name__}: give a NetParameter or a "
                    "prototxt path")


def _pydot():
    try:
        import pydot  # pydot is optional (the draw extra)
    except ImportError:
        raise DrawError("drawing nets needs pydot: pip install pydot (or decaffe[draw])") from None
    return pydot


def get_pydot_graph(caffe_net: NetLike, rankdir: str, label_edges: bool = True,
                    phase: int | str | None = None,
                    display_lrm: bool = False) -> object:
    """A pydot.Dot graph of the net: layer boxes, blob octagons, bottom->layer->top edges.

    phase (caffe.TRAIN / caffe.TEST) keeps only the layers its include/exclude rules admit
    for that phase; None draws every layer. Node and edge styles are described in the module
    docstring."""
    pydot = _pydot()
    param = _as_net_param(caffe_net)
    phase = _phase_value(phase)
    graph = pydot.Dot(param.name if param.name else "Net", graph_type="digraph",
                      rankdir=rankdir)
    nodes: dict[str, object] = {}
    edges: list[tuple[str, str, str]] = []
    for layer in param.layer:
        if phase is not None and not _included(layer, phase):
            continue
        label = get_layer_label(layer, rankdir, display_lrm=display_lrm)
        key = f"{layer.name}_{layer.type}"
        if len(layer.bottom) == 1 and len(layer.top) == 1 and layer.bottom[0] == layer.top[0]:
            nodes[key] = pydot.Node(label, **NEURON_LAYER_STYLE)
        else:
            style = dict(LAYER_STYLE_DEFAULT, fillcolor=choose_color_by_layertype(layer.type))
            nodes[key] = pydot.Node(label, **style)
        for bottom in layer.bottom:
            nodes[bottom + "_blob"] = pydot.Node(_blob_id(bottom), **BLOB_STYLE)
            edges.append((bottom + "_blob", key, '""'))
        for top in layer.top:
            # a top keeps the plain style until some layer reads it (Caffe's look)
            nodes[top + "_blob"] = pydot.Node(_blob_id(top))
            edges.append((key, top + "_blob", get_edge_label(layer) if label_edges else '""'))
    for node in nodes.values():
        graph.add_node(node)
    for src, dst, label in edges:
        graph.add_edge(pydot.Edge(nodes[src], nodes[dst], label=label))
    return graph


def _blob_id(name: str) -> str:
    # dot keywords and names with punctuation must be quoted to stay one node id
    if name.isidentifier() and name.lower() not in ("node", "edge", "graph", "digraph",
                                                     "subgraph", "strict"):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------
def find_renderer() -> str:
    """The graphviz program that renders: $DECAFFE_DOT, `dot`, or `graphviz-pure`."""
    env = os.environ.get("DECAFFE_DOT")
    if env:
        found = shutil.which(env)
        if not found:
            raise DrawError(f"$DECAFFE_DOT names {env!r}, which is not an executable program")
        return found
    for name in ("dot", "graphviz-pure"):
        found = shutil.which(name)
        if found:
            return found
    # a virtual environment's scripts are beside its interpreter even when not on the PATH
    beside = os.path.join(os.path.dirname(sys.executable), "graphviz-pure")
    if os.access(beside, os.X_OK):
        return beside
    raise DrawError("no graphviz renderer found: install graphviz (the `dot` program) or "
                    "`pip install graphviz-pure`")


def _run(prog: str, fmt: str, source: str) -> bytes:
    try:
        proc = subprocess.run([prog, f"-T{fmt}"], input=source.encode("utf-8"),
                              capture_output=True, check=False)
    except OSError as e:
        raise DrawError(f"cannot run {prog}: {e}") from None
    if proc.returncode != 0 or not proc.stdout:
        err = proc.stderr.decode("utf-8", "replace").strip()
        raise DrawError(f"{os.path.basename(prog)} could not write {fmt!r}: {err}")
    return proc.stdout


def _png_to_pdf(png: bytes) -> bytes:
    """Wrap a rendered PNG into a one-page PDF of the same size (72 dpi, as graphviz's)."""

    import matplotlib  # matplotlib (a few hundred ms to import) only for PDF output

    matplotlib.use("Agg", force=False)
    import matplotlib.image  # matplotlib, only for PDF output
    from matplotlib.figure import Figure  # matplotlib, only for PDF output

    img = matplotlib.image.imread(io.BytesIO(png), format="png")
    h, w = img.shape[:2]
    dpi = 96.0
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    fig.figimage(img, xo=0, yo=0, origin="upper")
    out = io.BytesIO()
    fig.savefig(out, format="pdf", dpi=dpi)
    return out.getvalue()


def render(graph: pydot.Dot, ext: str = "png") -> bytes:
    """The graph rendered in format ext; 'raw' gives its dot source."""
    ext = ext.lower()
    source = graph.to_string()
    if ext == "raw":
        return source.encode("utf-8")
    prog = find_renderer()
    if ext in _RASTER_WRAPPED and "graphviz-pure" in os.path.basename(prog):
        return _png_to_pdf(_run(prog, "png", source))
    return _run(prog, ext, source)


def draw_net(caffe_net: NetLike, rankdir: str = "LR", ext: str = "png",
             phase: int | str | None = None,
             display_lrm: bool = False) -> bytes:
    """The net drawn as an image in format ext ('png', 'svg', 'pdf', 'jpg', 'dot', 'raw'...)."""
    return render(get_pydot_graph(caffe_net, rankdir, phase=phase, display_lrm=display_lrm), ext)


def draw_net_to_file(caffe_net: NetLike, filename: str, rankdir: str = "LR",
                     phase: int | str | None = None,
                     display_lrm: bool = False) -> None:
    """Draw the net into filename, in the format its extension names (.raw: dot source)."""
    filename = os.fspath(filename)
    ext = filename[filename.rfind(".") + 1:] if "." in os.path.basename(filename) else ""
    if not ext:
        raise DrawError(f"{filename}: give the file an extension (.png, .svg, .pdf, ...) to "
                        "choose the image format")
    data = draw_net(caffe_net, rankdir, ext, phase, display_lrm)
    with atomic_write(filename, "wb") as f:
        f.write(data)
