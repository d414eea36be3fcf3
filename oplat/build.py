"""Build a one-operator ONNX model from an :class:`~oplat.spec.OpSpec`.

Everything here is pure and deterministic: the same spec always gives a byte-identical
serialized model, so a latency row can be rebuilt and re-timed later. Weights come from
``np.random.default_rng(zlib.crc32(spec.key.encode()))``.

Graph contract (all precisions):

* inputs ``x0``, ``x1``, … with shapes ``spec.input_shapes`` (N, C, H, W);
* one output ``y`` with shape ``spec.output_shape``;
* default-domain opset :data:`OPSET`, IR version :data:`IR_VERSION`;
* ``model.metadata_props`` holds ``spec.key`` under :data:`SPEC_METADATA_KEY`.

FP32 models are the bare operator (``conv+relu`` is Conv → Relu; the runtime fuses it).

INT8 models are in QDQ form with uint8 model I/O, the form ONNX Runtime and OpenVINO
turn into integer kernels::

    x_i (uint8) → DequantizeLinear(x_scale, x_zero) → float op(s) → QuantizeLinear(y_scale, y_zero) → y (uint8)

Conv weights are int8 per-output-channel symmetric (``W_q``, ``W_scale``, ``W_zero``,
DequantizeLinear axis 0) and the bias is int32 (``B_q``) at scale
``x_scale * W_scale[c]`` with zero point 0 (``B_scale``, ``B_zero``). The activation
quantization parameters are chosen from the real-valued range each tensor is expected
to span (see :func:`_int8_ranges`); no runtime is run to calibrate them.

Initializer names are stable and part of the contract (tests read them): FP32 conv
``W``/``B``, clip ``clip_min``/``clip_max``, resize ``scales``, and the INT8 names above.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from oplat.errors import OplatError
from oplat.nodespec import ELEM_NAMES, NodeSpec, elem_name
from oplat.onnxgraph import nhwc_context
from oplat.spec import OpSpec

__all__ = [
    "IR_VERSION",
    "complete_nodespec",
    "model_from_nodespec",
    "OPSET",
    "SPEC_METADATA_KEY",
    "inputs_for",
    "model_from_op",
]

#: Default-domain opset of every built model.
OPSET = 17
#: ONNX IR version: 9 is new enough for opset 17 and old enough for every runtime we
#: target (onnxruntime >= 1.14, OpenVINO 2023+); newer onnx packages default to IRs
#: that older runtimes refuse.
IR_VERSION = 9
#: ``metadata_props`` key under which the spec's canonical JSON is stored.
SPEC_METADATA_KEY = "oplat.spec"

# How many standard deviations of a conv output (for i.i.d. uniform inputs) the INT8
# output range covers. 6σ never saturates in practice yet keeps 2-3x the resolution of
# the worst-case |w|-sum bound on wide convs.
_CONV_RANGE_SIGMAS = 6.0
# Bias standard deviation: small next to the ~0.4 spread a He-initialised conv gives on
# [0, 1] inputs, so the bias shifts but does not dominate the output range.
_BIAS_STD = 0.05


# --------------------------------------------------------------------------- public API
def model_from_op(spec) -> onnx.ModelProto:
    """Return a one-operator ONNX model for ``spec`` (passes the full checker and strict
    shape inference). A :class:`~oplat.nodespec.NodeSpec` (any ONNX kernel) builds its own
    model (:meth:`~oplat.nodespec.NodeSpec.model`).

    Args:
        spec: the operator, shapes (N, C, H, W in pixels) and precision.

    Returns:
        A ``ModelProto`` with inputs ``x0``… (float32, or uint8 for ``int8``) and one
        output ``y`` of shape ``spec.output_shape`` (same element type as the inputs).
        No I/O is done; the same spec always gives the same bytes.
    """
    if spec.layout == "nhwc":  # the NCHW op between Transposes the runtime cancels
        return nhwc_context(model_from_op(dataclasses.replace(spec, layout="nchw")))
    if spec.op == "onnx":
        return model_from_nodespec(spec)
    rng = np.random.default_rng(zlib.crc32(spec.key.encode()))
    conv = _conv_params(spec, rng) if spec.op in ("conv", "conv+relu") else None
    int8 = spec.precision == "int8"
    elem = {"int8": TensorProto.UINT8, "fp16": TensorProto.FLOAT16}.get(spec.precision, TensorProto.FLOAT)
    g = _Graph()
    names = [f"x{i}" for i in range(len(spec.input_shapes))]

    if not int8:
        _build_float_op(g, spec, names, "y", conv, None)
        if spec.precision == "fp16":  # data tensors in half precision; Resize scales stay float32 (its schema)
            g.inits = [numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name)
                       if t.name != "scales" and t.data_type == TensorProto.FLOAT else t for t in g.inits]
    else:
        in_range, out_range = _int8_ranges(spec, conv)
        x_scale, x_zero = _qparams(*in_range)
        g.init("x_scale", np.array(x_scale, np.float32))
        g.init("x_zero", np.array(x_zero, np.uint8))
        floats = []
        for name in names:
            floats.append(g.node("DequantizeLinear", [name, "x_scale", "x_zero"], f"{name}_dq"))
        y_float = _build_float_op(g, spec, floats, "y_float", conv, x_scale)
        y_scale, y_zero = _qparams(*out_range)
        g.init("y_scale", np.array(y_scale, np.float32))
        g.init("y_zero", np.array(y_zero, np.uint8))
        g.node("QuantizeLinear", [y_float, "y_scale", "y_zero"], "y")

    graph = helper.make_graph(
        g.nodes,
        _graph_name(spec),
        inputs=[helper.make_tensor_value_info(n, elem, list(s)) for n, s in zip(names, spec.input_shapes)],
        outputs=[helper.make_tensor_value_info("y", elem, list(spec.output_shape))],
        initializer=g.inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="oplat",
        ir_version=IR_VERSION,
    )
    helper.set_model_props(model, {SPEC_METADATA_KEY: spec.key})
    return model


def inputs_for(model_or_spec: onnx.ModelProto | OpSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic random feeds for every graph input.

    Args:
        model_or_spec: a model built by :func:`model_from_op` (any model with static
            float32/uint8 inputs works) or the spec it would be built from; both give
            the same feeds.
        seed: seed of ``np.random.default_rng``; inputs are drawn in graph order.

    Returns:
        ``{name: array}``; float32 and float16 arrays are uniform in [0, 1), uint8 arrays
        uniform over 0…255 and int8 over -128…127 (the full quantized range of an INT8
        model's inputs).
    """
    if isinstance(model_or_spec, OpSpec):
        spec = model_or_spec
        dtype = {"int8": np.uint8, "fp16": np.float16}.get(spec.precision, np.float32)
        wanted = [(f"x{i}", tuple(s), dtype) for i, s in enumerate(spec.input_shapes)]
    elif isinstance(model_or_spec, onnx.ModelProto):
        wanted = []
        initializers = {t.name for t in model_or_spec.graph.initializer}
        for vi in model_or_spec.graph.input:
            if vi.name in initializers:  # IR < 4 style: initializers listed as inputs
                continue
            tensor_type = vi.type.tensor_type
            dtype = {TensorProto.FLOAT: np.float32, TensorProto.UINT8: np.uint8, TensorProto.INT8: np.int8,
                     TensorProto.FLOAT16: np.float16}.get(tensor_type.elem_type)
            if dtype is None:
                raise OplatError(
                    f"input {vi.name!r} has element type "
                    f"{TensorProto.DataType.Name(tensor_type.elem_type)}; oplat feeds float32, float16, uint8 and int8"
                )
            dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tensor_type.shape.dim]
            if any(d < 1 for d in dims):
                raise OplatError(f"input {vi.name!r} needs a static shape to make feeds, got {dims}")
            wanted.append((vi.name, tuple(dims), dtype))
    else:
        raise TypeError(f"inputs_for takes an onnx.ModelProto or an OpSpec, got {type(model_or_spec).__name__}")

    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for name, shape, dtype in wanted:
        if dtype is np.uint8:
            feeds[name] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        elif dtype is np.int8:
            feeds[name] = rng.integers(-128, 128, size=shape, dtype=np.int8)
        else:
            feeds[name] = rng.random(shape, dtype=np.float32).astype(dtype, copy=False)
    return feeds


# --------------------------------------------------------------------------- any ONNX kernel
def _quantized_inputs(spec: NodeSpec, int8: bool, nodes: list, inits: list, graph_inputs: list) -> list[str]:
    """Declare ``spec``'s graph inputs; returns the activation names the first op reads
    (an INT8 group's quantized inputs pass through their own DequantizeLinear)."""
    acts = []
    for i, inp in enumerate(spec.inputs):
        name = f"x{i}"
        elem = ELEM_NAMES[inp["elem"]]
        graph_inputs.append(helper.make_tensor_value_info(name, elem, list(inp["shape"])))
        if int8 and inp["elem"] in ("uint8", "int8"):
            zero = numpy_helper.from_array(np.array(128 if inp["elem"] == "uint8" else 0, np.uint8 if inp["elem"] == "uint8" else np.int8), f"x{i}_zero")
            inits.append(zero)
            nodes.append(helper.make_node("DequantizeLinear", [name, "q_scale", zero.name], [f"{name}_dq"]))
            name = f"{name}_dq"
        acts.append(name)
    return acts


def _const_array(c: dict, op: str, slot: int, rng: np.random.Generator) -> np.ndarray:
    """The initializer value of constant ``c`` (slot ``slot`` of ``op``), drawn from ``rng``
    where it is generated."""
    if "value" in c:
        return np.asarray(c["value"], dtype=onnx.helper.tensor_dtype_to_np_dtype(ELEM_NAMES[c["elem"]])).reshape(c["shape"])
    if c["elem"] in ("int64", "int32") and not c.get("q"):
        return np.ones(c["shape"], dtype=onnx.helper.tensor_dtype_to_np_dtype(ELEM_NAMES[c["elem"]]))
    if c.get("q"):
        dtype = np.int32 if c["elem"] == "int32" else np.int8
        return rng.integers(-20, 21, size=c["shape"]).astype(dtype)
    dtype = np.float16 if c["elem"] == "float16" else np.float32
    array = (rng.standard_normal(c["shape"]) * 0.1).astype(dtype)
    if op in ("BatchNormalization",) and slot == 4:  # variance must be positive
        array = np.abs(array) + np.asarray(0.5, dtype)
    return array


def _const_input(c: dict, index: int, op: str, slot: int, rng: np.random.Generator, nodes: list, inits: list) -> str:
    """Add constant ``c`` as an initializer (quantized ones through a DequantizeLinear);
    returns the name op ``index`` reads it by."""
    cname = f"c{index}_{slot}"
    array = _const_array(c, op, slot, rng)
    inits.append(numpy_helper.from_array(array, cname))
    if c.get("q"):
        zero = numpy_helper.from_array(np.zeros((), array.dtype), f"{cname}_zero")
        inits.append(zero)
        nodes.append(helper.make_node("DequantizeLinear", [cname, "q_scale", zero.name], [f"{cname}_dq"]))
        cname = f"{cname}_dq"
    return cname


def _op_input_names(spec: NodeSpec, index: int, acts: list[str], previous: str | None,
                    consts: dict, rng: np.random.Generator, nodes: list, inits: list) -> list[str]:
    """The input names of op ``index`` (trailing omitted optionals dropped), adding the
    initializers of its constants."""
    op = spec.ops[index]
    slots = spec.slots[index] if spec.slots else (len(acts) if index == 0 else 1)
    names = []
    act_iter = iter(acts if index == 0 else [previous])
    for slot in range(slots):
        c = consts.get((index, slot))
        if c is None:
            if index > 0 and slot > 0:
                names.append("")
                continue
            names.append(next(act_iter, ""))
            continue
        if c.get("empty"):  # an omitted optional input (Resize's roi "")
            names.append("")
            continue
        names.append(_const_input(c, index, op, slot, rng, nodes, inits))
    while names and names[-1] == "":
        names.pop()
    return names


def _graph_outputs(spec: NodeSpec, int8: bool, previous: str | None, nodes: list, inits: list) -> list:
    """The graph's single output ``y`` (an INT8 group's re-quantized by QuantizeLinear)."""
    outputs = []
    if int8:
        out_elem = spec.outputs[-1]["elem"] if spec.outputs else "uint8"
        zero = numpy_helper.from_array(np.array(128 if out_elem == "uint8" else 0, np.uint8 if out_elem != "int8" else np.int8), "y_zero")
        inits.append(zero)
        nodes.append(helper.make_node("QuantizeLinear", [previous, "q_scale", "y_zero"], ["y"]))
        outputs.append(helper.make_tensor_value_info("y", ELEM_NAMES[out_elem if out_elem in ("uint8", "int8") else "uint8"], None))
    else:
        float_elem = TensorProto.FLOAT16 if spec.precision == "fp16" else TensorProto.FLOAT
        nodes[-1].output[0] = "y"
        outputs.append(helper.make_tensor_value_info("y", float_elem, None))
    return outputs


def _checked_model(spec: NodeSpec, model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` shape-inferred (strictly) and checked; an invalid kernel is an OplatError."""
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises several types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OplatError(f"{spec.label()}: not a valid ONNX kernel ({first})") from None
    return model


def model_from_nodespec(spec: NodeSpec) -> onnx.ModelProto:
    """A one-kernel ONNX model of ``spec``'s signature (weights generated deterministically);
    INT8 groups are built in QDQ form: quantized inputs → DequantizeLinear → ops →
    QuantizeLinear, quantized weights through their own DequantizeLinear."""
    rng = np.random.default_rng(zlib.crc32(spec.key.encode()))
    nodes, inits, graph_inputs = [], [], []
    int8 = spec.precision == "int8"
    if int8:
        inits.append(numpy_helper.from_array(np.array(1 / 64, np.float32), "q_scale"))
    acts = _quantized_inputs(spec, int8, nodes, inits, graph_inputs)
    consts = {(c["op"], c["slot"]): c for c in spec.consts}
    previous = None
    for index, op in enumerate(spec.ops):
        names = _op_input_names(spec, index, acts, previous, consts, rng, nodes, inits)
        out = f"t{index}"
        nodes.append(helper.make_node(op, names, [out], **spec.attrs[index]))
        previous = out
    outputs = _graph_outputs(spec, int8, previous, nodes, inits)
    graph = helper.make_graph(nodes, f"oplat_{spec.kind}", graph_inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="oplat", ir_version=IR_VERSION)
    model = _checked_model(spec, model)
    helper.set_model_props(model, {SPEC_METADATA_KEY: spec.key})
    return model


def complete_nodespec(spec: NodeSpec) -> NodeSpec:
    """``spec`` with ``outputs`` filled in from shape inference of its own model (an
    op-set entry names inputs and attributes; the key also holds the outputs)."""
    if spec.outputs:
        return spec
    model = model_from_nodespec(spec)
    outs = tuple({"shape": [d.dim_value for d in o.type.tensor_type.shape.dim], "elem": elem_name(o.type.tensor_type.elem_type)}
                 for o in model.graph.output)
    return NodeSpec(spec.ops, spec.attrs, spec.inputs, spec.consts, spec.slots, spec.precision, outs)


# --------------------------------------------------------------------------- graph assembly
@dataclass
class _Graph:
    """Nodes and initializers collected in build order (the order is part of the bytes)."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inits: list[onnx.TensorProto] = field(default_factory=list)

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op_type: str, inputs: list[str], output: str, **attrs: object) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=f"{op_type}_{len(self.nodes)}", **attrs))
        return output


def _graph_name(spec: OpSpec) -> str:
    return f"oplat_{spec.op.replace('+', '_')}_{spec.precision}"


def _build_float_op(
    g: _Graph,
    spec: OpSpec,
    xs: list[str],
    out: str,
    conv: tuple[np.ndarray, np.ndarray] | None,
    x_scale: float | None,
) -> str:
    """Add the float operator(s) reading float tensors ``xs`` and writing ``out``.

    ``conv`` is the float (weights, bias) of a conv op (None otherwise). ``x_scale`` is
    the INT8 input scale (real units per uint8 step), or None for FP32; it only matters
    for conv, whose weights are then stored quantized.
    """
    op = spec.op
    if op in ("conv", "conv+relu"):
        w, b = conv
        if x_scale is None:
            g.init("W", w)
            g.init("B", b)
            w_name, b_name = "W", "B"
        else:
            w_q, w_scale, b_q, b_scale = _quantize_conv(w, b, x_scale)
            g.init("W_q", w_q)
            g.init("W_scale", w_scale)
            g.init("W_zero", np.zeros(w_q.shape[0], np.int8))
            g.init("B_q", b_q)
            g.init("B_scale", b_scale)
            g.init("B_zero", np.zeros(b_q.shape[0], np.int32))
            w_name = g.node("DequantizeLinear", ["W_q", "W_scale", "W_zero"], "W_dq", axis=0)
            b_name = g.node("DequantizeLinear", ["B_q", "B_scale", "B_zero"], "B_dq", axis=0)
        k = spec.kernel
        conv_out = out if op == "conv" else "conv_out"
        g.node(
            "Conv",
            [xs[0], w_name, b_name],
            conv_out,
            kernel_shape=[k, k],
            pads=[k // 2] * 4,
            strides=[1, 1],
            dilations=[1, 1],
            group=1,
        )
        if op == "conv+relu":
            g.node("Relu", [conv_out], out)
    elif op == "add":
        g.node("Add", xs[:2], out)
    elif op == "concat":
        g.node("Concat", xs, out, axis=1)
    elif op == "relu":
        g.node("Relu", xs, out)
    elif op == "clip":
        g.init("clip_min", np.array(spec.lo, np.float32))
        g.init("clip_max", np.array(spec.hi, np.float32))
        g.node("Clip", [xs[0], "clip_min", "clip_max"], out)
    elif op == "resize":
        s = float(spec.scale)
        g.init("scales", np.array([1.0, 1.0, s, s], np.float32))
        if spec.mode == "nearest":
            attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
        else:
            attrs = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
        # roi is unused by these coordinate modes; "" marks the optional input absent.
        g.node("Resize", [xs[0], "", "scales"], out, **attrs)
    elif op == "depth_to_space":
        g.node("DepthToSpace", xs, out, blocksize=spec.block, mode="DCR")
    else:  # pragma: no cover - OpSpec validation rejects unknown ops
        raise OplatError(f"no builder for op {op!r}")
    return out


# --------------------------------------------------------------------------- weights
def _conv_params(spec: OpSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """He-normal weights (c_out, c, k, k) and small biases (c_out,), float32."""
    fan_in = spec.c * spec.kernel * spec.kernel
    w = rng.standard_normal((spec.c_out, spec.c, spec.kernel, spec.kernel)) * math.sqrt(2.0 / fan_in)
    b = rng.standard_normal(spec.c_out) * _BIAS_STD
    return w.astype(np.float32), b.astype(np.float32)


def _quantize_conv(
    w: np.ndarray, b: np.ndarray, x_scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-output-channel symmetric int8 weights and int32 bias.

    Returns ``(w_q int8 (c_out,c,k,k), w_scale float32 (c_out,), b_q int32 (c_out,),
    b_scale float32 (c_out,))`` with ``b_scale = x_scale * w_scale``, the scale the
    integer kernel accumulates in, so the bias adds without rescaling.
    """
    peak = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
    # A dead channel would give scale 0, which DequantizeLinear forbids.
    w_scale = (np.where(peak > 0, peak, 1.0) / 127.0).astype(np.float32)
    w_q = np.clip(np.round(w / w_scale[:, None, None, None]), -127, 127).astype(np.int8)
    b_scale = (np.float32(x_scale) * w_scale).astype(np.float32)
    b_q = np.clip(np.round(b / b_scale), -(2**31), 2**31 - 1).astype(np.int32)
    return w_q, w_scale, b_q, b_scale


# --------------------------------------------------------------------------- INT8 ranges
def _int8_ranges(
    spec: OpSpec, conv: tuple[np.ndarray, np.ndarray] | None
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Real-valued (lo, hi) ranges the INT8 model's input and output tensors span.

    Inputs are images in [0, 1], except relu (and clip), whose inputs straddle the
    threshold(s) so the op actually does something. Outputs follow from the op:
    exact for data movement, add, relu and clip; a statistical bound for conv, whose
    float (weights, bias) are ``conv``.
    """
    op = spec.op
    if op == "relu":
        in_range = (-1.0, 1.0)
    elif op == "clip":
        span = spec.hi - spec.lo
        in_range = (min(spec.lo - 0.25 * span, 0.0), max(spec.hi + 0.25 * span, 0.0))
    else:
        in_range = (0.0, 1.0)

    if op in ("conv", "conv+relu"):
        x_scale, _ = _qparams(*in_range)
        w, b = conv
        # Bound what the integer kernel computes: the quantized weights and bias.
        w_q, w_scale, b_q, b_scale = _quantize_conv(w, b, x_scale)
        lo, hi = _conv_output_range(
            spec,
            w_q.astype(np.float64) * w_scale[:, None, None, None],
            b_q.astype(np.float64) * b_scale,
        )
        out_range = (0.0, hi) if op == "conv+relu" else (lo, hi)
    elif op == "add":
        out_range = (2 * in_range[0], 2 * in_range[1])
    elif op == "relu":
        out_range = (max(in_range[0], 0.0), in_range[1])
    elif op == "clip":
        out_range = (spec.lo, spec.hi)
    else:  # concat, resize, depth_to_space: values are copied or convexly mixed
        out_range = in_range
    return in_range, out_range


def _conv_output_range(spec: OpSpec, w: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(lo, hi) of a "same" conv's output for i.i.d. uniform [0, 1] inputs.

    For every output channel and every border pattern of the zero padding (which taps
    fall inside the image), take mean ± 6σ of the window's sum, clamped to the hard
    bound (all inputs at 0 or 1 wherever that maximizes / minimizes). ``w`` is
    (c_out, c, k, k), ``b`` (c_out,), both in real units.
    """
    k, p = spec.kernel, spec.kernel // 2

    def tap_ranges(size: int) -> set[tuple[int, int]]:
        # Along one axis, output i sees taps j with 0 <= i + j - p < size.
        return {(max(0, p - i), min(k, size + p - i)) for i in range(size)}

    lo, hi = math.inf, -math.inf
    for r0, r1 in tap_ranges(spec.h):
        for c0, c1 in tap_ranges(spec.w):
            win = w[:, :, r0:r1, c0:c1].reshape(w.shape[0], -1)
            mean = b + 0.5 * win.sum(axis=1)
            sigma = np.sqrt((win**2).sum(axis=1) / 12.0)
            hard_hi = b + np.clip(win, 0, None).sum(axis=1)
            hard_lo = b + np.clip(win, None, 0).sum(axis=1)
            lo = min(lo, float(np.maximum(mean - _CONV_RANGE_SIGMAS * sigma, hard_lo).min()))
            hi = max(hi, float(np.minimum(mean + _CONV_RANGE_SIGMAS * sigma, hard_hi).max()))
    return lo, hi


def _qparams(lo: float, hi: float) -> tuple[float, int]:
    """uint8 (scale, zero point) covering the real range [lo, hi] widened to include 0.

    Zero must be exact so zero padding and ReLU thresholds quantize without error; with
    ``lo >= 0`` the zero point is 0, which is what lets ONNX Runtime drop a Relu in
    front of the QuantizeLinear.
    """
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-6:
        hi = lo + 1e-6
    scale = float(np.float32((hi - lo) / 255.0))
    zero = int(np.clip(np.round(-lo / scale), 0, 255))
    return scale, zero
