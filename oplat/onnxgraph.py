"""One index of an ONNX graph: constants, producers, consumers, shapes, element types.

The predictor's reader (:mod:`oplat.graph`), the TFLite writer (:mod:`oplat.tflite`) and
the quantizer's helpers (:mod:`oplat.arch`) all walk ONNX graphs by tensor name; this is
the one place that builds the maps they walk.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from oplat.errors import OplatError

__all__ = ["GraphIndex", "attr", "infer_shapes", "load_onnx", "nhwc_context", "nhwc_feeds"]


def attr(node: onnx.NodeProto, name: str, default=None):
    """The value of ``node``'s attribute ``name`` (``default`` when it has none)."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _rank4(value: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    dims = _dims(value)
    return dims if dims is not None and len(dims) == 4 else None


def nhwc_context(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` as it runs inside an NHWC region of a network: every 4-D input comes in
    NHWC (``<name>_nhwc``) through a Transpose to NCHW, every 4-D output leaves through a
    Transpose to NHWC. A runtime that pushes Transposes through layout-agnostic ops (ORT's
    transpose optimizer: Quantize/Dequantize, element-wise ops, PRelu, Resize, concat)
    cancels them and runs the op in NHWC, as in the network; where it keeps them (a uint8
    MaxPool alone), :func:`oplat.backends.ort.runs_without_transposes` says so."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inputs, pre = _nhwc_edge(g.input, "in")
    outputs, post = _nhwc_edge(g.output, "out")
    nodes = [*pre, *g.node, *post]
    del g.node[:], g.input[:], g.output[:]
    g.node.extend(nodes)
    g.input.extend(inputs)
    g.output.extend(outputs)
    return out


def _nhwc_edge(values, side: str) -> tuple[list, list]:
    """(the graph's ``values`` with each 4-D one as ``<name>_nhwc`` in NHWC, the Transposes
    joining them: NHWC → NCHW on the ``in`` side, NCHW → NHWC on the ``out`` side)."""
    kept, transposes = [], []
    for i, value in enumerate(values):
        dims = _rank4(value)
        if dims is None:
            kept.append(value)
            continue
        n, c, h, w = dims
        name = value.name + "_nhwc"
        kept.append(onnx.helper.make_tensor_value_info(name, value.type.tensor_type.elem_type, [n, h, w, c]))
        src, dst, perm = (name, value.name, [0, 3, 1, 2]) if side == "in" else (value.name, name, [0, 2, 3, 1])
        transposes.append(onnx.helper.make_node("Transpose", [src], [dst], perm=perm, name=f"nhwc_{side}{i}"))
    return kept, transposes


def native_nhwc_model(model: onnx.ModelProto, node: onnx.NodeProto, initializers) -> onnx.ModelProto | None:
    """The one-kernel ``model`` replaced by ``node``, a runtime's own NHWC form of its op
    (ORT's ``com.microsoft`` ``NhwcMaxPool``), reading the model's inputs and writing its
    outputs in NHWC (named as :func:`nhwc_context` names them, so :func:`nhwc_feeds` feeds
    it); None where ``node``'s data inputs or outputs do not match the model's."""
    inputs, _ = _nhwc_edge(model.graph.input, "in")
    outputs, _ = _nhwc_edge(model.graph.output, "out")
    consts = {t.name for t in initializers}
    data = [i for i, t in enumerate(node.input) if t and t not in consts]
    if len(data) != len(inputs) or len(node.output) != len(outputs):
        return None
    native = onnx.NodeProto()
    native.CopyFrom(node)
    for i, value in zip(data, inputs):
        native.input[i] = value.name
    del native.output[:]
    native.output.extend(v.name for v in outputs)
    graph = onnx.helper.make_graph([native], model.graph.name + "_native_nhwc", inputs, outputs, list(initializers))
    opsets = [o for o in model.opset_import if o.domain != node.domain] + [onnx.helper.make_opsetid(node.domain, 1)]
    out = onnx.helper.make_model(graph, opset_imports=opsets)
    out.ir_version = model.ir_version
    return out


def nhwc_feeds(feeds: dict[str, np.ndarray], context: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Feeds of a model for its :func:`nhwc_context` form ``context`` (4-D ones transposed)."""
    out = {}
    for value in context.graph.input:
        if value.name.endswith("_nhwc") and value.name[:-5] in feeds:
            out[value.name] = np.ascontiguousarray(feeds[value.name[:-5]].transpose(0, 2, 3, 1))
        else:
            out[value.name] = feeds[value.name]
    return out


def load_onnx(path: str) -> onnx.ModelProto:
    """Read an ONNX file; a missing, unreadable or empty one is one clear error (an empty
    file parses as a model with no graph, which would be priced at 0 ms)."""
    try:
        model = onnx.load(path)
    except FileNotFoundError:
        raise OplatError(f"{path}: no such ONNX file") from None
    except IsADirectoryError:
        raise OplatError(f"{path} is a folder, not an ONNX file") from None
    except Exception as exc:  # onnx raises DecodeError and others for a bad file
        raise OplatError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    if not model.graph.node:
        raise OplatError(f"{path}: not an ONNX model with a graph (no nodes); check the file")
    return model


def infer_shapes(model: onnx.ModelProto, *, what: str = "the network") -> onnx.ModelProto:
    """``model`` with every value's shape and type inferred (strict): an
    :class:`OplatError` naming ``what`` when ONNX cannot type the graph."""
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as exc:  # onnx raises several exception types here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OplatError(f"shape inference failed on {what} ({first}); export it with static shapes") from None


def _constant_tensor(node: onnx.NodeProto) -> onnx.TensorProto | None:
    """A ``Constant`` node's value as a tensor (value, value_float(s), value_int(s));
    None for the kinds oplat does not read (sparse and string constants)."""
    for a in node.attribute:
        if a.name == "value":
            return a.t
        if a.name in ("value_float", "value_floats"):
            return numpy_helper.from_array(np.asarray(onnx.helper.get_attribute_value(a), np.float32))
        if a.name in ("value_int", "value_ints"):
            return numpy_helper.from_array(np.asarray(onnx.helper.get_attribute_value(a), np.int64))
    return None


def _dims(value: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    t = value.type.tensor_type
    if not t.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else 0 for d in t.shape.dim)


@dataclass
class GraphIndex:
    """Maps of one graph, by tensor name.

    Attributes:
        graph: the (shape-inferred, when asked) graph.
        consts: initializers and ``Constant`` node outputs (TensorProto).
        producer: tensor -> the node that writes it.
        consumers: tensor -> the nodes that read it, in graph order.
        shapes: tensor -> dims (0 for a symbolic dim) where known; initializers included.
        elem: tensor -> ONNX element type where known.
        inputs: graph inputs that are not constants (IR < 4 lists initializers as inputs).
        outputs: graph output names.
    """

    graph: onnx.GraphProto
    consts: dict[str, onnx.TensorProto]
    producer: dict[str, onnx.NodeProto]
    consumers: dict[str, list[onnx.NodeProto]]
    shapes: dict[str, tuple[int, ...]]
    elem: dict[str, int]
    inputs: list[str]
    outputs: list[str]

    @classmethod
    def of(cls, model: onnx.ModelProto, *, infer: bool = False, what: str = "the network") -> GraphIndex:
        """Index ``model``; ``infer``: run strict shape inference first (see :func:`infer_shapes`)."""
        if infer:
            model = infer_shapes(model, what=what)
        g = model.graph
        consts: dict[str, onnx.TensorProto] = {t.name: t for t in g.initializer}
        for node in g.node:
            if node.op_type == "Constant" and node.output:
                value = _constant_tensor(node)
                if value is not None:
                    consts[node.output[0]] = value
        producer = {o: n for n in g.node for o in n.output if o}
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in g.node:
            for name in node.input:
                if name:
                    consumers.setdefault(name, []).append(node)
        shapes: dict[str, tuple[int, ...]] = {}
        elem: dict[str, int] = {}
        for vi in [*g.input, *g.value_info, *g.output]:
            elem[vi.name] = vi.type.tensor_type.elem_type
            dims = _dims(vi)
            if dims is not None:
                shapes[vi.name] = dims
        for init in g.initializer:
            shapes[init.name] = tuple(init.dims)
            elem.setdefault(init.name, init.data_type)
        return cls(
            graph=g,
            consts=consts,
            producer=producer,
            consumers=consumers,
            shapes=shapes,
            elem=elem,
            inputs=[i.name for i in g.input if i.name not in consts],
            outputs=[o.name for o in g.output],
        )

    def const(self, name: str) -> np.ndarray | None:
        """The constant tensor ``name`` as an array, or None when it is not a constant."""
        t = self.consts.get(name)
        return None if t is None else numpy_helper.to_array(t)

    def uses(self, name: str) -> int:
        """How many node inputs read tensor ``name``."""
        return len(self.consumers.get(name, ()))

    def nodes(self) -> Iterator[onnx.NodeProto]:
        return iter(self.graph.node)
