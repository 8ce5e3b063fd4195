"""NetSpec: write nets in Python, as pycaffe's net_spec does, and get the same prototxt.

    n = NetSpec()
    n.data, n.label = L.Data(source="train_lmdb", batch_size=64, ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=3, num_output=64, pad=1)
    n.bn1 = L.BatchNorm(n.conv1, use_global_stats=False)
    str(n.to_proto())

``L.<Type>(*bottoms, **fields)`` makes a layer of that Caffe type. A keyword ending in
``param`` goes on the LayerParameter itself (``param=[dict(lr_mult=1)]``,
``transform_param=dict(...)``); any other keyword goes into the type's own parameter
message (``num_output`` into ``convolution_param``) when that message has the field, else
onto the LayerParameter (``loss_weight``, ``include``, ``top``...). ``ntop`` sets the
number of tops (0 gives the layer itself); ``in_place=True`` writes the top over the bottom.
Layers and tops without a NetSpec name get ``<Type><n>`` names, counted per type.
``P.<Type>.<ENUM>`` gives enum values, e.g. ``P.Pooling.MAX``.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence

from google.protobuf.message import Message

from .proto import caffe_pb2

_PARAM_NAMES: dict[str, str] | None = None


def param_name_dict() -> dict[str, str]:
    """Map a layer type ("Convolution") to its parameter field's stem ("convolution")."""
    global _PARAM_NAMES
    if _PARAM_NAMES is None:
        names = {}
        for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
            if field.name.endswith("_param") and field.message_type is not None:
                type_name = field.message_type.name
                if type_name.endswith("Parameter"):
                    names[type_name[: -len("Parameter")]] = field.name[: -len("_param")]
        _PARAM_NAMES = names
    return _PARAM_NAMES


def assign_proto(proto: Message, name: str, value: object) -> None:
    """Set field `name` of proto from a Python value: scalars, lists, dicts (sub-messages)
    and lists of dicts (repeated sub-messages); a scalar given to a repeated field is appended."""
    field = getattr(proto, name)
    repeated = hasattr(field, "extend")
    if repeated and not isinstance(value, list):
        value = [value]
    if isinstance(value, list):
        if value and isinstance(value[0], dict):
            for item in value:
                sub = field.add()
                for k, v in item.items():
                    assign_proto(sub, k, v)
        else:
            field.extend(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            assign_proto(field, k, v)
    else:
        setattr(proto, name, value)


class Top:
    """One output of a layer function; what NetSpec attributes hold."""

    def __init__(self, fn: Function, n: int) -> None:
        self.fn = fn
        self.n = n

    def to_proto(self) -> caffe_pb2.NetParameter:
        """The net needed to compute this top."""
        return to_proto(self)

    def _to_proto(self, layers: dict[Function, caffe_pb2.LayerParameter],
                  names: dict[Top | Function, str], autonames: Counter[str]) -> None:
        return self.fn._to_proto(layers, names, autonames)


class Function:
    """A layer in the making: its type, bottoms (Tops) and fields."""

    def __init__(self, type_name: str, inputs: Sequence[Top], params: dict) -> None:
        self.type_name = type_name
        for i, inp in enumerate(inputs):
            if not isinstance(inp, Top):
                raise TypeError(f"{type_name} input {i} is not a Top (type is {type(inp)})")
        self.inputs = inputs
        self.params = dict(params)
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _get_name(self, names: dict[Top | Function, str], autonames: Counter[str]) -> str:
        if self not in names and self.ntop > 0:
            names[self] = self._get_top_name(self.tops[0], names, autonames)
        elif self not in names:
            autonames[self.type_name] += 1
            names[self] = self.type_name + str(autonames[self.type_name])
        return names[self]

    def _get_top_name(self, top: Top, names: dict[Top | Function, str],
                      autonames: Counter[str]) -> str:
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = top.fn.type_name + str(autonames[top.fn.type_name])
        return names[top]

    def _to_proto(self, layers: dict[Function, caffe_pb2.LayerParameter],
                  names: dict[Top | Function, str], autonames: Counter[str]) -> None:
        if self in layers:
            return
        bottoms = []
        for inp in self.inputs:
            inp._to_proto(layers, names, autonames)
            bottoms.append(layers[inp.fn].top[inp.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottoms)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            for top in self.tops:
                layer.top.append(self._get_top_name(top, names, autonames))
        layer.name = self._get_name(names, autonames)
        stem = param_name_dict().get(self.type_name)
        for k, v in self.params.items():
            if k.endswith("param"):
                assign_proto(layer, k, v)
                continue
            if stem is not None:
                sub = getattr(layer, stem + "_param")
                if k in sub.DESCRIPTOR.fields_by_name:
                    assign_proto(sub, k, v)
                    continue
            assign_proto(layer, k, v)
        layers[self] = layer


def to_proto(*tops: Top) -> caffe_pb2.NetParameter:
    """The net computing these tops (layers in dependency order)."""
    layers: OrderedDict = OrderedDict()
    autonames: Counter = Counter()
    for top in tops:
        top.fn._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class NetSpec:
    """Named tops in assignment order; to_proto() names each layer after its first top."""

    def __init__(self) -> None:
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name: str, value: Top | Function) -> None:
        self.tops[name] = value

    def __getattr__(self, name: str) -> object:
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(f"NetSpec has no top named '{name}'") from None

    def __setitem__(self, key: str, value: Top | Function) -> None:
        self.__setattr__(key, value)

    def __getitem__(self, item: str) -> Top:
        return self.__getattr__(item)

    def __delitem__(self, name: str) -> None:
        del self.tops[name]

    def keys(self) -> list[str]:
        return list(self.tops)

    def vals(self) -> list:
        return list(self.tops.values())

    def to_proto(self) -> caffe_pb2.NetParameter:
        names = {v: k for k, v in self.tops.items()}
        autonames: Counter = Counter()
        layers: OrderedDict = OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


class Layers:
    """`L.<Type>(*bottoms, **fields)`: one top, a tuple of tops (ntop > 1), or the layer
    (ntop 0)."""

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)

        def layer_fn(*args: Top, **kwargs: object) -> Top | tuple[Top, ...] | Function:
            fn = Function(name, args, kwargs)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops

        return layer_fn


class Parameters:
    """`P.<Type>.<ENUM>`: enum values of <Type>Parameter, e.g. P.Pooling.MAX."""

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        message = getattr(caffe_pb2, name + "Parameter", None)
        if message is None:
            raise AttributeError(f"caffe_pb2 has no message {name}Parameter")

        class _Param:
            def __getattr__(self, value_name: str) -> object:
                try:
                    return getattr(message, value_name)
                except AttributeError:
                    raise AttributeError(f"{name}Parameter has no value {value_name}") from None

        return _Param()


layers = Layers()
params = Parameters()
