"""Any ONNX network → a networkx graph → the kernels a latency table can price.

QDQ INT8 graphs are read in their quantized meaning: a DequantizeLinear→op→QuantizeLinear
group is one int8 op (what ONNX Runtime fuses into QLinearConv, QLinearAdd, …); the
Quantize at the input and the Dequantize at the output are boundary work, priced by the
composition model, not by the table. A Conv whose only consumer is a Relu is one
``conv+relu`` kernel (every runtime oplat knows fuses it; the table measures it fused).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import onnx
from onnx import numpy_helper

from oplat.errors import OplatError
from oplat.onnxgraph import GraphIndex, attr, infer_shapes
from oplat.spec import OpSpec

__all__ = ["Kernel", "NetGraph", "net_graph"]

_QDQ = ("QuantizeLinear", "DequantizeLinear")
_SUPPORTED = ("Conv", "Relu", "Add", "Concat", "Resize", "Clip", "DepthToSpace")


@dataclass(frozen=True)
class Kernel:
    """One priced unit of work: an OpSpec and the ONNX nodes it stands for."""

    spec: OpSpec
    nodes: tuple[str, ...]
    note: str = ""  # e.g. an approximation made when mapping the node to an OpSpec
    after: tuple[str, ...] = ()  # ops of the kernels that produce its inputs (fusion rules)


@dataclass
class NetGraph:
    """A network as oplat sees it."""

    graph: nx.DiGraph  # nodes: ONNX node names (attrs: op_type); edges: tensors between them
    kernels: list[Kernel]
    input_elements: int  # elements of every graph input
    output_elements: int  # elements of every graph output
    boundary_nodes: list[str] = field(default_factory=list)  # boundary Quantize/Dequantize
    params: int = 0
    macs: int = 0
    peak_activation_bytes: int = 0
    precision: str = "fp32"


def _dtype_sizes(index: GraphIndex) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for name, elem in index.elem.items():
        try:
            sizes[name] = onnx.helper.tensor_dtype_to_np_dtype(elem).itemsize
        except Exception:
            sizes[name] = 4
    return sizes


def net_graph(model: onnx.ModelProto) -> NetGraph:
    """Read a network into kernels; an op oplat cannot price is an error that names it."""
    model = infer_shapes(model)  # every walk below is over this one (typed) graph
    index = GraphIndex.of(model)
    shapes, consts, producer, consumers = index.shapes, index.consts, index.producer, index.consumers
    graph_inputs, graph_outputs = index.inputs, index.outputs

    g = nx.DiGraph()
    names = {}
    for idx, node in enumerate(model.graph.node):
        names[id(node)] = node.name or f"{node.op_type}_{idx}"
        g.add_node(names[id(node)], op_type=node.op_type)
    for node in model.graph.node:
        for i in node.input:
            if i in producer:
                g.add_edge(names[id(producer[i])], names[id(node)], tensor=i)

    def name(node: onnx.NodeProto) -> str:
        return names[id(node)]

    def real_source(tensor: str) -> str:
        """Follow DequantizeLinear(QuantizeLinear(t)) back to the real-valued tensor t."""
        for _ in range(4):
            p = producer.get(tensor)
            if p is None or p.op_type not in _QDQ:
                break
            tensor = p.input[0]
        return tensor

    def is_dequantized(tensor: str) -> bool:
        p = producer.get(tensor)
        return p is not None and p.op_type == "DequantizeLinear" and p.input[0] not in consts

    def const_value(tensor: str) -> np.ndarray | None:
        t = tensor
        if t in producer and producer[t].op_type == "DequantizeLinear":
            dq = producer[t]
            if dq.input[0] in consts:  # a quantized weight: its real value
                q = numpy_helper.to_array(consts[dq.input[0]]).astype(np.float64)
                s = numpy_helper.to_array(consts[dq.input[1]]).astype(np.float64)
                z = numpy_helper.to_array(consts[dq.input[2]]).astype(np.float64) if len(dq.input) > 2 and dq.input[2] else 0.0
                axis = attr(dq, "axis", 1)
                if np.ndim(s) == 1 and q.ndim > 1:
                    shape = [1] * q.ndim
                    shape[axis] = -1
                    s, z = np.reshape(s, shape), np.reshape(z, shape) if np.ndim(z) else z
                return (q - z) * s
        if t in consts:
            return numpy_helper.to_array(consts[t])
        return None

    kernels: list[Kernel] = []
    made_by: dict[str, str] = {}  # tensor -> op of the kernel that writes it
    boundary: list[str] = []
    absorbed: set[str] = set()
    real_ops = [n for n in model.graph.node if n.op_type not in _QDQ and n.op_type != "Constant"]
    quantized = any(n.op_type == "DequantizeLinear" and n.input[0] not in consts for n in model.graph.node)
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer if len(t.dims) >= 1 and _is_weight(t, model))
    macs = 0

    for node in real_ops:
        if name(node) in absorbed:
            continue
        if node.op_type not in _SUPPORTED:
            raise OplatError(
                f"node {name(node)!r} is a {node.op_type}, which oplat cannot price (it prices "
                f"{', '.join(_SUPPORTED)} and their QDQ INT8 forms); replace it or extend oplat's op vocabulary"
            )
        acts = [i for i in node.input if i and const_value(i) is None]
        precision = "int8" if quantized and acts and all(is_dequantized(i) for i in acts) else "fp32"
        in_shape = shapes.get(acts[0], ()) if acts else ()
        if len(in_shape) != 4 or 0 in in_shape:
            raise OplatError(f"node {name(node)!r} ({node.op_type}) has input shape {in_shape}; oplat prices static N,C,H,W tensors")
        n_, c, h, w = in_shape
        note = ""
        nodes = [name(node)]
        op = node.op_type
        if op == "Conv":
            weight = const_value(node.input[1])
            if weight is None:
                raise OplatError(f"conv {name(node)!r} has weights computed at run time; oplat prices constant-weight convs")
            c_out, c_in_g, kh, kw = weight.shape
            group = attr(node, "group", 1)
            strides = attr(node, "strides", [1, 1])
            if group != 1 or kh != kw or list(strides) != [1, 1]:
                raise OplatError(
                    f"conv {name(node)!r} (group={group}, kernel {kh}×{kw}, strides {list(strides)}) is not a plain "
                    "stride-1 square conv; oplat's op sets only hold those"
                )
            macs += n_ * c_out * h * w * c * kh * kw
            op_name = "conv"
            out = node.output[0]
            follow = _single_consumer_through_qdq(out, consumers)
            if follow is not None and follow.op_type == "Relu":
                op_name = "conv+relu"
                nodes.append(name(follow))
                absorbed.add(name(follow))
            spec = OpSpec(op_name, c, h, w, n=n_, c_out=int(c_out), kernel=int(kh), precision=precision)
        elif op == "Relu":
            spec = OpSpec("relu", c, h, w, n=n_, precision=precision)
        elif op == "Add":
            shapes_in = [shapes.get(i) for i in node.input]
            if len(set(shapes_in)) != 1:
                raise OplatError(f"add {name(node)!r} broadcasts {shapes_in}; oplat prices same-shape adds")
            spec = OpSpec("add", c, h, w, n=n_, precision=precision)
        elif op == "Concat":
            axis = attr(node, "axis")
            chans = [shapes[i][1] for i in node.input]
            if axis not in (1, -3):
                raise OplatError(f"concat {name(node)!r} along axis {axis}; oplat prices channel concats")
            if len(set(chans)) != 1:
                note = f"inputs of {chans} channels priced as {len(chans)}×{round(sum(chans) / len(chans))}"
            spec = OpSpec("concat", max(1, round(sum(chans) / len(chans))), h, w, n=n_, arity=len(chans), precision=precision)
        elif op == "Resize":
            mode = attr(node, "mode", b"nearest")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            out_shape = shapes.get(node.output[0])
            scale = out_shape[2] // h if out_shape and out_shape[2] % h == 0 else None
            if scale is None or out_shape[3] != w * scale:
                raise OplatError(f"resize {name(node)!r} is not an integer upscale ({in_shape} → {out_shape})")
            spec = OpSpec("resize", c, h, w, n=n_, mode="bilinear" if mode == "linear" else mode, scale=scale, precision=precision)
        elif op == "Clip":
            lo = const_value(node.input[1]) if len(node.input) > 1 and node.input[1] else attr(node, "min", None)
            hi = const_value(node.input[2]) if len(node.input) > 2 and node.input[2] else attr(node, "max", None)
            spec = OpSpec("clip", c, h, w, n=n_, lo=float(lo if lo is not None else -np.inf), hi=float(hi if hi is not None else np.inf), precision=precision)
        else:  # DepthToSpace
            block = attr(node, "blocksize")
            spec = OpSpec("depth_to_space", c, h, w, n=n_, block=int(block), precision=precision)
        after = tuple(made_by[t] for t in (real_source(i) for i in acts) if t in made_by)
        kernels.append(Kernel(spec, tuple(nodes), note, after))
        last = follow if spec.op == "conv+relu" else node
        for o in last.output:
            made_by[o] = spec.op

    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in graph_inputs:
            boundary.append(name(node))
        if node.op_type == "DequantizeLinear" and node.output[0] in graph_outputs:
            boundary.append(name(node))

    numel = lambda t: int(np.prod(shapes[t])) if t in shapes else 0  # noqa: E731
    return NetGraph(
        graph=g,
        kernels=kernels,
        input_elements=sum(numel(t) for t in graph_inputs),
        output_elements=sum(numel(t) for t in graph_outputs),
        boundary_nodes=boundary,
        params=params,
        macs=macs,
        peak_activation_bytes=_peak_activation_bytes(model, index),
        precision="int8" if quantized else "fp32",
    )


def _is_weight(init: onnx.TensorProto, model: onnx.ModelProto) -> bool:
    """Conv weights and biases count as parameters; QDQ scales and zero points do not."""
    users = [n for n in model.graph.node if init.name in n.input]
    for n in users:
        if n.op_type == "Conv" and list(n.input).index(init.name) in (1, 2):
            return True
        if n.op_type == "DequantizeLinear" and n.input[0] == init.name:
            return True
    return False


def _single_consumer_through_qdq(tensor: str, consumers: dict) -> onnx.NodeProto | None:
    """The only consumer of ``tensor``, looking through a Q→DQ pair in QDQ graphs."""
    users = consumers.get(tensor, [])
    if len(users) != 1:
        return None
    user = users[0]
    if user.op_type == "QuantizeLinear":
        dq = consumers.get(user.output[0], [])
        if len(dq) == 1 and dq[0].op_type == "DequantizeLinear":
            after = consumers.get(dq[0].output[0], [])
            return after[0] if len(after) == 1 else None
        return None
    return user


def _peak_activation_bytes(model: onnx.ModelProto, index: GraphIndex) -> int:
    """Peak bytes of live activations over a topological schedule (liveness analysis)."""
    shapes, consts = index.shapes, index.consts
    sizes = _dtype_sizes(index)
    last_use: dict[str, int] = {}
    for idx, node in enumerate(model.graph.node):
        for i in node.input:
            last_use[i] = idx
    outputs = {o.name for o in model.graph.output}
    live: dict[str, int] = {}
    for i in model.graph.input:
        if i.name not in consts and i.name in shapes:
            live[i.name] = int(np.prod(shapes[i.name])) * sizes.get(i.name, 4)
    peak = sum(live.values())
    for idx, node in enumerate(model.graph.node):
        for o in node.output:
            if o in shapes and o not in consts:
                live[o] = int(np.prod(shapes[o])) * sizes.get(o, 4)
        peak = max(peak, sum(live.values()))
        for t in list(live):
            if last_use.get(t, -1) <= idx and t not in outputs:
                del live[t]
    return peak

