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

from oplat.errors import OplatError
from oplat.fold import prepare
from oplat.nodespec import ACTIVATION_ELEMS, SMALL_CONST, NodeSpec, canonical, elem_name
from oplat.onnxgraph import GraphIndex, attr, infer_shapes
from oplat.spec import OpSpec

__all__ = ["Kernel", "NetGraph", "net_graph"]

_QDQ = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class Kernel:
    """One priced unit of work: its spec (a built-in :class:`OpSpec` or a
    :class:`~oplat.nodespec.NodeSpec`) and the ONNX nodes it stands for.

    ``nodes`` are the real ops (what a breakdown shows); ``members`` every ONNX node of
    the kernel, its Quantize/Dequantize included, and ``inputs`` / ``outputs`` the tensors
    that cross its edge: what :mod:`oplat.extract` cuts out to measure it alone.
    """

    spec: OpSpec | NodeSpec
    nodes: tuple[str, ...]
    note: str = ""  # e.g. an approximation made when mapping the node to an OpSpec
    after: tuple[str, ...] = ()  # ops of the kernels that produce its inputs (fusion rules)
    members: tuple[str, ...] = field(default=(), compare=False)
    inputs: tuple[str, ...] = field(default=(), compare=False)
    outputs: tuple[str, ...] = field(default=(), compare=False)


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
    batch: int = 1  # the first dim of the first graph input


def _dtype_sizes(index: GraphIndex) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for name, elem in index.elem.items():
        try:
            sizes[name] = onnx.helper.tensor_dtype_to_np_dtype(elem).itemsize
        except Exception:
            sizes[name] = 4
    return sizes


def net_graph(model: onnx.ModelProto) -> NetGraph:
    """Read a network into the kernels the device runs.

    The graph is first folded the way a runtime's optimizer folds it (:func:`prepare`),
    then every node is grouped: a built-in family kernel (an :class:`OpSpec`) where the
    node is one, else a :class:`~oplat.nodespec.NodeSpec` of its exact signature. What
    cannot be read at all (symbolic shapes, control flow, another op domain, int64
    activations) is one error listing every such node.
    """
    model = infer_shapes(prepare(model))  # every walk below is over this one (typed) graph
    return _Reader(model).read()


#: Activations a Conv's kernel absorbs in every runtime oplat knows (ORT FusedConv,
#: OpenVINO post-ops), so the pair is timed (and keyed) as one kernel.
_FUSED_ACTIVATIONS = ("Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid")


class _Reader:
    """One pass over a shape-inferred graph: kernels, boundary nodes, params, MACs."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.index = index = GraphIndex.of(model)
        self.shapes, self.consts = index.shapes, index.consts
        self.producer, self.consumers = index.producer, index.consumers
        self.graph_inputs, self.graph_outputs = index.inputs, index.outputs
        self.g = nx.DiGraph()
        self.names: dict[int, str] = {}
        for idx, node in enumerate(model.graph.node):
            self.names[id(node)] = node.name or f"{node.op_type}_{idx}"
            self.g.add_node(self.names[id(node)], op_type=node.op_type)
        for node in model.graph.node:
            for i in node.input:
                if i in self.producer:
                    self.g.add_edge(self.names[id(self.producer[i])], self.names[id(node)], tensor=i)
        self.quantized = any(n.op_type == "DequantizeLinear" and n.input[0] not in self.consts for n in model.graph.node)
        self.problems: list[str] = []

    def name(self, node: onnx.NodeProto) -> str:
        return self.names[id(node)]

    # ------------------------------------------------------------------ tensors
    def real_source(self, tensor: str) -> str:
        """Follow DequantizeLinear(QuantizeLinear(t)) back to the real-valued tensor t."""
        for _ in range(4):
            p = self.producer.get(tensor)
            if p is None or p.op_type not in _QDQ:
                break
            tensor = p.input[0]
        return tensor

    def is_dequantized(self, tensor: str) -> bool:
        p = self.producer.get(tensor)
        return p is not None and p.op_type == "DequantizeLinear" and p.input[0] not in self.consts

    def const_value(self, tensor: str) -> np.ndarray | None:
        p = self.producer.get(tensor)
        if p is not None and p.op_type == "DequantizeLinear" and p.input[0] in self.consts:  # a quantized weight
            q = self.index.const(p.input[0]).astype(np.float64)
            s = self.index.const(p.input[1]).astype(np.float64)
            z = self.index.const(p.input[2]).astype(np.float64) if len(p.input) > 2 and p.input[2] else 0.0
            axis = attr(p, "axis", 1)
            if np.ndim(s) == 1 and q.ndim > 1:
                shape = [1] * q.ndim
                shape[axis] = -1
                s, z = np.reshape(s, shape), np.reshape(z, shape) if np.ndim(z) else z
            return (q - z) * s
        return self.index.const(tensor)

    def only_quantized_out(self, tensor: str) -> bool:
        """Every reader of ``tensor`` is a QuantizeLinear (the op's result is requantized)."""
        users = self.consumers.get(tensor, [])
        return bool(users) and tensor not in self.graph_outputs and all(u.op_type == "QuantizeLinear" for u in users)

    # ------------------------------------------------------------------ reading
    def read(self) -> NetGraph:
        self._check_readable()
        kernels: list[Kernel] = []
        made_by: dict[str, str] = {}  # tensor -> op of the kernel that writes it
        absorbed: set[str] = set()  # nodes (real ops and Q/DQ) some kernel stands for
        macs = 0
        for node in self.model.graph.node:
            if node.op_type in _QDQ or node.op_type == "Constant" or self.name(node) in absorbed:
                continue
            kernel, members = self._kernel(node)
            absorbed.update(members)
            acts = [i for i in node.input if i and self.const_value(i) is None]
            after = tuple(made_by[t] for t in (self.real_source(i) for i in acts) if t in made_by)
            kernel = Kernel(kernel.spec, kernel.nodes, kernel.note, after, tuple(members), kernel.inputs, kernel.outputs)
            kernels.append(kernel)
            macs += kernel.spec.macs
            for o in kernel.outputs:
                made_by[o] = kernel.spec.op
                made_by[self.real_source(o)] = kernel.spec.op
        boundary = self._boundary()
        kernels += self._interior_qdq(absorbed | set(boundary))
        if self.problems:
            raise OplatError("this network cannot be read: " + "; ".join(self.problems))
        numel = lambda t: int(np.prod(self.shapes[t])) if t in self.shapes else 0  # noqa: E731
        return NetGraph(
            graph=self.g,
            kernels=kernels,
            input_elements=sum(numel(t) for t in self.graph_inputs),
            output_elements=sum(numel(t) for t in self.graph_outputs),
            boundary_nodes=boundary,
            params=sum(int(np.prod(t.dims)) for t in self.model.graph.initializer if len(t.dims) >= 1 and _is_weight(t, self.model)),
            macs=macs,
            peak_activation_bytes=_peak_activation_bytes(self.model, self.index),
            precision=self._precision(),
            batch=int((self.shapes.get(self.graph_inputs[0]) or (1,))[0] or 1) if self.graph_inputs else 1,
        )

    def _precision(self) -> str:
        if self.quantized:
            return "int8"
        elems = {self.index.elem.get(t) for t in self.graph_inputs}
        return "fp16" if onnx.TensorProto.FLOAT16 in elems else "fp32"

    def _check_readable(self) -> None:
        for name in self.graph_inputs + self.graph_outputs:
            elem = self.index.elem.get(name)
            if elem is not None and elem_name(elem) not in ACTIVATION_ELEMS:
                self.problems.append(
                    f"graph {'input' if name in self.graph_inputs else 'output'} {name!r} is {elem_name(elem)}; "
                    f"oplat prices networks on {', '.join(ACTIVATION_ELEMS)} tensors"
                )
        for node in self.model.graph.node:
            if node.domain not in ("", "ai.onnx"):
                self.problems.append(f"node {self.name(node)!r} is {node.domain}.{node.op_type}, outside the ONNX default domain")
            elif any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
                self.problems.append(f"node {self.name(node)!r} ({node.op_type}) holds a sub-graph (control flow)")
        if self.problems:
            raise OplatError("this network cannot be read: " + "; ".join(self.problems))

    def _boundary(self) -> list[str]:
        """Quantize of a graph input and Dequantize to a graph output: composition's work."""
        out = []
        for node in self.model.graph.node:
            if node.op_type == "QuantizeLinear" and node.input[0] in self.graph_inputs:
                out.append(self.name(node))
            if node.op_type == "DequantizeLinear" and node.output[0] in self.graph_outputs:
                out.append(self.name(node))
        return out

    # ------------------------------------------------------------------ one kernel
    def _group(self, node: onnx.NodeProto) -> tuple[list[onnx.NodeProto], bool]:
        """The real ops of the kernel that starts at ``node`` (a conv with the activation
        fused into it) and whether the runtime runs them on quantized data."""
        ops = [node]
        if node.op_type == "Conv":
            follow = _single_consumer_through_qdq(node.output[0], self.consumers)
            if follow is not None and follow.op_type in _FUSED_ACTIVATIONS:
                ops.append(follow)
        acts = [i for i in node.input if i and self.const_value(i) is None]
        int8 = self.quantized and bool(acts) and all(self.is_dequantized(i) for i in acts) and self.only_quantized_out(ops[-1].output[0])
        if int8 and len(ops) == 2 and not self.only_quantized_out(node.output[0]):
            ops = ops[:1]  # Conv → Relu with no requantize between: keep the conv's own group
            int8 = self.only_quantized_out(node.output[0])
        return ops, int8

    def _members(self, ops: list[onnx.NodeProto], int8: bool) -> tuple[list[str], list[str], list[str]]:
        """(every ONNX node of the kernel, its input tensors, its output tensors)."""
        members = [self.name(n) for n in ops]
        inputs: list[str] = []
        for index, node in enumerate(ops):
            for slot, t in enumerate(node.input):
                if not t or (index > 0 and slot == 0):
                    continue
                p = self.producer.get(t)
                if p is not None and p.op_type == "DequantizeLinear" and (int8 or p.input[0] in self.consts):
                    members.append(self.name(p))  # the group's own dequantize (activation or weight)
                    if p.input[0] not in self.consts:
                        inputs.append(p.input[0])
                elif self.const_value(t) is None and index == 0:
                    inputs.append(t)
        if len(ops) == 2:  # Q→DQ between the conv and its activation belong to the kernel
            q = self.consumers.get(ops[0].output[0], [])
            if q and q[0].op_type == "QuantizeLinear":
                members.append(self.name(q[0]))
                members += [self.name(d) for d in self.consumers.get(q[0].output[0], [])]
        outputs = list(ops[-1].output)
        if int8:
            qs = self.consumers.get(ops[-1].output[0], [])
            members += [self.name(q) for q in qs]
            outputs = [q.output[0] for q in qs]
        unique = lambda items: list(dict.fromkeys(items))  # noqa: E731 (a tensor read twice is one input)
        return unique(members), unique(inputs), unique(outputs)

    def _kernel(self, node: onnx.NodeProto) -> tuple[Kernel, list[str]]:
        ops, int8 = self._group(node)
        members, inputs, outputs = self._members(ops, int8)
        precision = "int8" if int8 else self._float_precision(node)
        builtin = self._builtin(ops, precision)
        if builtin is not None:
            spec, note = builtin
            return Kernel(spec, tuple(self.name(n) for n in ops), note, (), (), tuple(inputs), tuple(outputs)), members
        spec = self._node_spec(ops, inputs, outputs, precision)
        return Kernel(spec, tuple(self.name(n) for n in ops), "", (), (), tuple(inputs), tuple(outputs)), members

    def _builtin(self, ops: list[onnx.NodeProto], precision: str) -> tuple[OpSpec, str] | None:
        """The built-in family kernel (OpSpec) these ops are, with a note on any
        approximation; None when they are not one (then they are a NodeSpec)."""
        node = ops[0]
        acts = [i for i in node.input if i and self.const_value(i) is None]
        in_shape = self.shapes.get(acts[0], ()) if acts else ()
        if len(in_shape) != 4 or 0 in in_shape:
            return None
        n_, c, h, w = in_shape
        op = node.op_type
        if op == "Conv":
            return self._builtin_conv(ops, precision, in_shape)
        if len(ops) > 1:
            return None
        kw = dict(n=n_, precision=precision)
        if op == "Relu":
            return OpSpec("relu", c, h, w, **kw), ""
        if op == "Add":
            if len(acts) != 2 or len({self.shapes.get(i) for i in acts}) != 1:
                return None  # a broadcast or a constant operand: a node kernel
            return OpSpec("add", c, h, w, **kw), ""
        if op == "Concat":
            if attr(node, "axis") not in (1, -3) or len(acts) != len(node.input) or len(acts) < 2:
                return None
            chans = [self.shapes[i][1] for i in acts]
            note = f"inputs of {chans} channels priced as {len(chans)}×{round(sum(chans) / len(chans))}" if len(set(chans)) != 1 else ""
            return OpSpec("concat", max(1, round(sum(chans) / len(chans))), h, w, arity=len(chans), **kw), note
        if op == "Resize":
            mode = attr(node, "mode", "nearest")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            out_shape = self.shapes.get(node.output[0])
            if mode not in ("nearest", "linear") or not out_shape or out_shape[2] % h or out_shape[2] // h < 2:
                return None
            scale = out_shape[2] // h
            if out_shape[3] != w * scale:
                return None
            return OpSpec("resize", c, h, w, mode="bilinear" if mode == "linear" else mode, scale=scale, **kw), ""
        if op == "Clip":
            lo = self.const_value(node.input[1]) if len(node.input) > 1 and node.input[1] else attr(node, "min", None)
            hi = self.const_value(node.input[2]) if len(node.input) > 2 and node.input[2] else attr(node, "max", None)
            lo = float(lo if lo is not None else -np.inf)
            hi = float(hi if hi is not None else np.inf)
            return (OpSpec("clip", c, h, w, lo=lo, hi=hi, **kw), "") if lo < hi else None
        if op == "DepthToSpace":
            block = int(attr(node, "blocksize"))
            if c % (block * block) or block < 2:
                return None
            return OpSpec("depth_to_space", c, h, w, block=block, **kw), ""
        return None

    def _builtin_conv(self, ops, precision, in_shape) -> tuple[OpSpec, str] | None:
        node = ops[0]
        n_, c, h, w = in_shape
        weight = self.const_value(node.input[1]) if len(node.input) > 1 else None
        if weight is None or weight.ndim != 4:
            return None
        c_out, _, kh, kw = weight.shape
        plain = (
            attr(node, "group", 1) == 1 and kh == kw and kh % 2 == 1
            and list(attr(node, "strides", [1, 1])) == [1, 1]
            and list(attr(node, "dilations", [1, 1])) == [1, 1]
            and self.shapes.get(node.output[0], ())[2:] == (h, w)  # "same" padding
        )
        if not plain or (len(ops) == 2 and ops[1].op_type != "Relu"):
            return None  # grouped, strided, dilated, padded otherwise, or another activation: a node kernel
        op = "conv+relu" if len(ops) == 2 else "conv"
        return OpSpec(op, c, h, w, n=n_, c_out=int(c_out), kernel=int(kh), precision=precision), ""

    def _float_precision(self, node: onnx.NodeProto) -> str:
        elems = {self.index.elem.get(t) for t in node.input if t and t in self.index.elem and t not in self.consts}
        return "fp16" if onnx.TensorProto.FLOAT16 in elems else "fp32"

    def _node_spec(self, ops, inputs, outputs, precision) -> NodeSpec:
        def tensor(t: str) -> dict:
            shape = list(self.shapes.get(t, ()))
            if not shape or 0 in shape:
                self.problems.append(f"tensor {t!r} has no static shape ({shape or 'unknown'}); export the network with fixed input sizes")
            return {"shape": shape, "elem": elem_name(self.index.elem.get(t, 1))}

        consts = []
        for index, node in enumerate(ops):
            for slot, t in enumerate(node.input):
                if index > 0 and slot == 0:
                    continue
                if not t:
                    consts.append({"op": index, "slot": slot, "empty": True})
                    continue
                p = self.producer.get(t)
                if p is not None and p.op_type == "DequantizeLinear" and p.input[0] in self.consts:
                    q = self.consts[p.input[0]]
                    consts.append({"op": index, "slot": slot, "shape": list(q.dims), "elem": elem_name(q.data_type), "q": True})
                    continue
                value = self.index.const(t)
                if value is None:
                    continue
                entry = {"op": index, "slot": slot, "shape": list(value.shape), "elem": elem_name(self.index.elem.get(t, 1))}
                if value.size <= SMALL_CONST:
                    entry["value"] = [canonical(v) for v in value.reshape(-1).tolist()]
                consts.append(entry)
        attrs = tuple({a.name: canonical(onnx.helper.get_attribute_value(a)) for a in node.attribute} for node in ops)
        return NodeSpec(
            ops=tuple(n.op_type for n in ops),
            attrs=attrs,
            inputs=tuple(tensor(t) for t in inputs),
            consts=tuple(consts),
            slots=tuple(len(n.input) for n in ops),
            precision=precision,
            outputs=tuple(tensor(t) for t in outputs),
        )

    def _interior_qdq(self, taken: set[str]) -> list[Kernel]:
        """Quantize / Dequantize nodes no int8 kernel absorbs and no boundary owns: a float
        island's requantization, priced as kernels of their own."""
        out = []
        for node in self.model.graph.node:
            if node.op_type not in _QDQ or self.name(node) in taken or node.input[0] in self.consts:
                continue
            spec = self._node_spec([node], [node.input[0]], [node.output[0]], "fp32")
            out.append(Kernel(spec, (self.name(node),), "", (), (self.name(node),), (node.input[0],), (node.output[0],)))
        return out
#: Inputs (by op type, slot) that hold learned parameters.
_PARAM_SLOTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (1,), "PRelu": (1,),
                "BatchNormalization": (1, 2), "InstanceNormalization": (1, 2), "LayerNormalization": (1, 2)}


def _is_weight(init: onnx.TensorProto, model: onnx.ModelProto) -> bool:
    """Weights and biases count as parameters; QDQ scales and zero points do not."""
    users = [n for n in model.graph.node if init.name in n.input]
    for n in users:
        if any(list(n.input)[slot] == init.name for slot in _PARAM_SLOTS.get(n.op_type, ()) if slot < len(n.input)):
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

