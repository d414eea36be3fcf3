"""ONNX → TFLite (``.tflite`` flatbuffer) for the graphs oplat builds, without TensorFlow.

The flatbuffer is written with the object API of ``ai_edge_litert.schema_py_generated``
(schema version 3, file identifier ``TFL3``) and ``flatbuffers``; nothing here needs
TensorFlow or a LiteRT runtime, only the ``ai-edge-litert`` wheel for the schema module.

Layout
    TFLite is channels-last: every 4-D tensor of the ``.tflite`` model, **its inputs and
    outputs included**, is N, H, W, C where the ONNX model has N, C, H, W. Conv weights go
    from ONNX O, I, kH, kW to TFLite O, kH, kW, I (OHWI). Graph inputs and outputs keep
    their ONNX names; the model has one signature, ``serving_default``.

FP32
    ============================================  =========================================
    ONNX                                          TFLite
    ============================================  =========================================
    Conv (+ Relu when the Relu is the Conv's      CONV_2D, padding SAME or VALID, fused
    only consumer)                                RELU
    Add (+ Relu likewise)                         ADD
    Relu                                          RELU
    Concat                                        CONCATENATION (axis 1 → 3)
    Resize nearest, asymmetric, floor             RESIZE_NEAREST_NEIGHBOR
    Resize linear, half_pixel                     RESIZE_BILINEAR(half_pixel_centers)
    Resize linear, align_corners / asymmetric     RESIZE_BILINEAR(align_corners / neither)
    Clip [0, 1] / [-1, 1] / [0, 6] / [0, ∞)       RELU_0_TO_1 / RELU_N1_TO_1 / RELU6 / RELU
    Clip, other bounds                            MAXIMUM and/or MINIMUM with a constant
    DepthToSpace DCR                              DEPTH_TO_SPACE (TFLite's is DCR too)
    ============================================  =========================================

INT8 (QDQ)
    QuantizeLinear/DequantizeLinear pairs are folded into tensor quantization parameters:
    an op whose inputs are DequantizeLinear outputs and whose output feeds only
    QuantizeLinear nodes becomes one integer TFLite op. Activations are **int8**
    (TFLite's full-integer scheme): a uint8 tensor with zero point ``z`` becomes an int8
    tensor with zero point ``z - 128`` and the same scale — the same real values, every
    stored byte shifted by 128. Conv weights are int8 per output channel (zero point 0,
    ``quantized_dimension`` 0 of OHWI), biases int32 at scale ``x_scale · w_scale[c]``.
    Ops whose int8 kernels read their input at the output's scale (CONCATENATION,
    DEPTH_TO_SPACE, RESIZE_*, MAXIMUM/MINIMUM) get a requantizing QUANTIZE (int8 → int8)
    in front of each input whose scale or zero point differs; ADD, CONV_2D and the RELU
    family rescale themselves.

    Model I/O: a **uint8** ONNX input or output becomes an **int8** ``.tflite`` input or
    output (zero point − 128, no boundary ops, so a lone-op model times the op alone); use
    :func:`tflite_feeds` and :func:`onnx_like_output` to go between the two. A float
    ONNX input followed by QuantizeLinear (onnxruntime's ``quantize_static`` form) gets a
    QUANTIZE (float32 → int8), and a float output after DequantizeLinear a DEQUANTIZE, so
    such a network keeps float32 I/O and runs int8 inside.

    A QDQ graph may leave parts in float (an op whose output is not quantized, or whose
    inputs are float): those become float TFLite ops, with DEQUANTIZE/QUANTIZE where the
    precision changes — the ``.tflite`` computes what the ONNX graph says.

Anything outside this vocabulary raises :class:`~oplat.errors.OplatError` naming the ONNX op.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from oplat.errors import OplatError
from oplat.onnxgraph import GraphIndex

__all__ = [
    "CONVERTIBLE_OPS",
    "onnx_like_output",
    "tflite_feeds",
    "tflite_from_onnx",
    "write_tflite",
]

#: ONNX op types (default domain) :func:`tflite_from_onnx` converts.
CONVERTIBLE_OPS = (
    "Add",
    "Clip",
    "Concat",
    "Constant",
    "Conv",
    "DepthToSpace",
    "DequantizeLinear",
    "QuantizeLinear",
    "Relu",
    "Resize",
)

_FILE_IDENTIFIER = b"TFL3"
_SCHEMA_VERSION = 3
#: Builtin codes above this go in OperatorCode.builtin_code only; the deprecated int8
#: field then holds this placeholder (schema: PLACEHOLDER_FOR_GREATER_OP_CODES).
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127
#: Alignment of constant buffers (bytes): what the TFLite converter uses, so weights can be
#: read in place by any kernel.
_BUFFER_ALIGNMENT = 16
#: NCHW axis → NHWC axis.
_NHWC_AXIS = {0: 0, 1: 3, 2: 1, 3: 2}


# --------------------------------------------------------------------------- public API
def tflite_from_onnx(model: onnx.ModelProto) -> bytes:
    """Convert an oplat ONNX model (FP32, or INT8 in QDQ form) to a ``.tflite`` flatbuffer.

    Args:
        model: a model from :func:`oplat.build.model_from_op`,
            :func:`oplat.arch.model_from_arch` or :func:`oplat.arch.quantize_qdq` (any
            static-shape graph over the ops listed in the module docstring works). Its
            activations must be 4-D (N, C, H, W).

    Returns:
        The ``.tflite`` bytes. Inputs and outputs keep their ONNX names, are NHWC, and are
        float32 where the ONNX model's are float and int8 (zero point − 128) where they are
        uint8; see the module docstring.

    Raises:
        OplatError: an op (or an attribute of one) TFLite cannot express, naming the op.
    """
    return _Converter(model).convert()


def write_tflite(model: onnx.ModelProto, path: str | os.PathLike) -> str:
    """Convert ``model`` with :func:`tflite_from_onnx` and write it to ``path``; returns the path."""
    data = tflite_from_onnx(model)
    with open(path, "wb") as f:
        f.write(data)
    return os.fspath(path)


def tflite_feeds(onnx_feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The ``.tflite`` model's inputs for the ONNX model's ``onnx_feeds``.

    4-D arrays go from N, C, H, W to N, H, W, C; uint8 arrays become int8 minus 128 (the
    same real values under the zero point the converter gives uint8 inputs); float32 and
    int8 arrays keep their values. Names are unchanged. Returns new C-contiguous arrays.
    """
    out: dict[str, np.ndarray] = {}
    for name, value in onnx_feeds.items():
        a = np.asarray(value)
        if a.dtype == np.uint8:
            a = (a ^ np.uint8(0x80)).view(np.int8)
        if a.ndim == 4:
            a = a.transpose(0, 2, 3, 1)
        out[name] = np.ascontiguousarray(a)
    return out


def onnx_like_output(tflite_output: np.ndarray, dtype: np.dtype | type | None = None) -> np.ndarray:
    """A ``.tflite`` output in the ONNX model's layout and element type.

    4-D arrays go from N, H, W, C to N, C, H, W. An int8 array becomes uint8 plus 128 — the
    uint8 output of the ONNX model — unless ``dtype`` is int8 (an ONNX model with an int8
    output; oplat's never have one). float32 stays float32. Returns a new C-contiguous array.
    """
    a = np.asarray(tflite_output)
    if a.dtype == np.int8 and (dtype is None or np.dtype(dtype) == np.uint8):
        a = a.view(np.uint8) ^ np.uint8(0x80)
    if a.ndim == 4:
        a = a.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(a)


# --------------------------------------------------------------------------- converter
@dataclass
class _Tensor:
    """A TFLite activation tensor: ``real = scale · (q − zero)`` when int8."""

    index: int
    dtype: str  # "float32" or "int8"
    shape: tuple[int, ...]  # TFLite layout: NHWC for 4-D
    scale: float | None = None
    zero: int | None = None

    @property
    def qparams(self) -> tuple[float | None, int | None]:
        return self.scale, self.zero


@dataclass(frozen=True)
class _Plan:
    """Where an op's float output gets quantized: the QuantizeLinear it feeds."""

    scale: float
    zero: int  # int8 domain
    name: str  # the QuantizeLinear's output: names the TFLite tensor


class _Converter:
    def __init__(self, model: onnx.ModelProto) -> None:
        try:
            from ai_edge_litert import schema_py_generated as fb
        except ImportError:  # pragma: no cover - the wheel ships both
            raise OplatError(
                "writing .tflite needs the TFLite schema from LiteRT; install it with: pip install 'oplat[litert]'"
            ) from None
        self.fb = fb
        self._check_ops(model)
        try:
            model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        except Exception as exc:  # onnx raises several exception types here
            raise OplatError(f"ONNX shape inference failed before TFLite conversion: {exc}") from None
        index = GraphIndex.of(model)
        g = model.graph
        self.graph = g
        for node in g.node:
            if node.op_type == "Constant" and node.output[0] not in index.consts:
                raise OplatError(f"Constant {node.name!r}: only value/value_float(s)/value_int(s) constants are converted")
        self.consts: dict[str, np.ndarray] = {name: numpy_helper.to_array(t) for name, t in index.consts.items()}
        self.shapes: dict[str, tuple[int, ...]] = index.shapes
        self.elem: dict[str, int] = index.elem
        self.consumers: dict[str, list[onnx.NodeProto]] = index.consumers
        self.graph_outputs = set(index.outputs)

        self.values: dict[str, _Tensor] = {}  # ONNX activation name → TFLite tensor
        self.weights_dq: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, int]] = {}  # q, scale, zero, axis
        self.absorbed: set[int] = set()  # id() of nodes fused into their producer
        self.tensors: list = []
        self.names: set[str] = set()
        self.buffers: list = [fb.BufferT()]  # buffer 0: the empty sentinel
        self.operators: list = []
        self.opcodes: list = []
        self.opcode_index: dict[tuple[int, int], int] = {}
        self._float_cache: dict[int, _Tensor] = {}
        self._requant_cache: dict[tuple[int, float, int], _Tensor] = {}

    # ------------------------------------------------------------------ driver
    @staticmethod
    def _check_ops(model: onnx.ModelProto) -> None:
        """Fail before any work on the first op outside the vocabulary."""
        for node in model.graph.node:
            if node.domain not in ("", "ai.onnx") or node.op_type not in CONVERTIBLE_OPS:
                op = f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
                raise OplatError(
                    f"cannot convert ONNX op {op} (node {node.name!r}) to TFLite; "
                    f"oplat converts {', '.join(CONVERTIBLE_OPS)}"
                )

    def convert(self) -> bytes:
        fb = self.fb
        inputs = [vi for vi in self.graph.input if vi.name not in self.consts]
        input_ids = [self._graph_input(vi).index for vi in inputs]
        handlers = {
            "Add": self._add,
            "Clip": self._clip,
            "Concat": self._concat,
            "Constant": lambda node: None,
            "Conv": self._conv,
            "DepthToSpace": self._depth_to_space,
            "DequantizeLinear": self._dequantize,
            "QuantizeLinear": self._quantize,
            "Relu": self._relu,
            "Resize": self._resize,
        }
        for node in self.graph.node:
            if id(node) not in self.absorbed:
                handlers[node.op_type](node)
        output_ids = [self._graph_output(vi).index for vi in self.graph.output]

        subgraph = fb.SubGraphT(
            tensors=self.tensors, inputs=input_ids, outputs=output_ids, operators=self.operators, name="main"
        )
        signature = fb.SignatureDefT(
            inputs=[fb.TensorMapT(name=vi.name, tensorIndex=i) for vi, i in zip(inputs, input_ids)],
            outputs=[fb.TensorMapT(name=vi.name, tensorIndex=i) for vi, i in zip(self.graph.output, output_ids)],
            signatureKey="serving_default",
            subgraphIndex=0,
        )
        tfl = fb.ModelT(
            version=_SCHEMA_VERSION,
            operatorCodes=self.opcodes,
            subgraphs=[subgraph],
            description=f"oplat: converted from ONNX graph {self.graph.name!r}",
            buffers=self.buffers,
            signatureDefs=[signature],
        )
        import flatbuffers

        builder = flatbuffers.Builder(1024)
        builder.Finish(tfl.Pack(builder), file_identifier=_FILE_IDENTIFIER)
        return bytes(builder.Output())

    # ------------------------------------------------------------------ graph I/O
    def _graph_input(self, vi: onnx.ValueInfoProto) -> _Tensor:
        name = vi.name
        shape = _to_nhwc(self._shape(name, f"input {name!r}"))
        elem = vi.type.tensor_type.elem_type
        if elem == TensorProto.FLOAT:
            t = self._new_tensor(name, shape, "float32")
        elif elem in (TensorProto.UINT8, TensorProto.INT8):
            # A quantized input means nothing until a DequantizeLinear reads it: its
            # scale and zero point come from there.
            users = self.consumers.get(name, [])
            if not users or any(u.op_type != "DequantizeLinear" for u in users):
                raise OplatError(
                    f"input {name!r} is {TensorProto.DataType.Name(elem)} but not read only by DequantizeLinear; "
                    "TFLite needs its quantization parameters"
                )
            params = {self._qdq_params(u) for u in users}
            if len(params) > 1:
                raise OplatError(f"input {name!r} is dequantized with different scales/zero points: {sorted(params)}")
            scale, zero = params.pop()
            t = self._new_tensor(name, shape, "int8", scale=scale, zero=zero)
        else:
            raise OplatError(
                f"input {name!r} has element type {TensorProto.DataType.Name(elem)}; "
                "the TFLite converter takes float32, uint8 and int8 inputs"
            )
        self.values[name] = t
        return t

    def _graph_output(self, vi: onnx.ValueInfoProto) -> _Tensor:
        name = vi.name
        if name not in self.values:
            raise OplatError(f"graph output {name!r} is not computed by any converted op")
        elem = vi.type.tensor_type.elem_type
        t = self.values[name]
        if elem == TensorProto.FLOAT and t.dtype == "int8":
            t = self._float(name)
        elif elem in (TensorProto.UINT8, TensorProto.INT8) and t.dtype != "int8":
            raise OplatError(f"graph output {name!r} is {TensorProto.DataType.Name(elem)} but computed in float")
        self._rename(t, name)
        return t

    # ------------------------------------------------------------------ Q/DQ
    def _dequantize(self, node: onnx.NodeProto) -> None:
        x, out = node.input[0], node.output[0]
        if x in self.consts:  # weights or bias: folded into the op that reads them
            scale = self._const(node.input[1], node)
            zero = self._const(node.input[2], node) if len(node.input) > 2 and node.input[2] else np.zeros((), np.uint8)
            axis = _attr(node, "axis", 1)
            self.weights_dq[out] = (self.consts[x], scale, zero, axis)
            return
        src = self._act(x, node)
        params = self._qdq_params(node)
        if src.dtype != "int8" or src.qparams != params:
            raise OplatError(
                f"DequantizeLinear {node.name!r} reads {x!r} with scale/zero point {params}, "
                f"but it was quantized with {src.qparams}"
            )
        self.values[out] = src  # the float tensor is the int8 one, read through its params

    def _quantize(self, node: onnx.NodeProto) -> None:
        x, out = node.input[0], node.output[0]
        scale, zero = self._qdq_params(node)
        src = self._act(x, node)
        if src.dtype == "float32":
            t = self._new_tensor(out, src.shape, "int8", scale=scale, zero=zero)
            self._emit("QUANTIZE", [src.index], [t.index], "QuantizeOptions", self.fb.QuantizeOptionsT(), version=2)
        elif src.qparams == (scale, zero):
            t = src  # the producing op already wrote this quantization
        else:
            t = self._requant(src, scale, zero, name=out)
        self.values[out] = t

    def _qdq_params(self, node: onnx.NodeProto) -> tuple[float, int]:
        """Per-tensor (scale, int8 zero point) of an activation Q/DQ node."""
        scale = self._const(node.input[1], node)
        zero = (
            self._const(node.input[2], node) if len(node.input) > 2 and node.input[2] else np.zeros((), np.uint8)
        )
        if scale.size != 1 or zero.size != 1:
            raise OplatError(
                f"{node.op_type} {node.name!r} quantizes an activation per axis; TFLite activations are per tensor"
            )
        if zero.dtype == np.uint8:
            z = int(zero.reshape(())) - 128
        elif zero.dtype == np.int8:
            z = int(zero.reshape(()))
        else:
            raise OplatError(
                f"{node.op_type} {node.name!r} uses {zero.dtype} activations; the TFLite converter takes uint8/int8"
            )
        return float(np.float32(scale.reshape(()))), z

    def _plan(self, out: str) -> _Plan | None:
        """Quantization of ``out`` when every consumer is a QuantizeLinear (the first one's
        parameters; the others requantize), else None: the op stays in float."""
        users = self.consumers.get(out, [])
        if out in self.graph_outputs or not users or any(u.op_type != "QuantizeLinear" for u in users):
            return None
        scale, zero = self._qdq_params(users[0])
        return _Plan(scale, zero, users[0].output[0])

    # ------------------------------------------------------------------ ops
    def _conv(self, node: onnx.NodeProto) -> None:
        fb = self.fb
        x, w = node.input[0], node.input[1]
        b = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if _attr(node, "group", 1) != 1:
            raise OplatError(f"Conv {node.name!r}: grouped/depthwise Conv (group > 1) is not converted to TFLite")
        for name in [w] + ([b] if b else []):
            if name not in self.consts and name not in self.weights_dq:
                raise OplatError(
                    f"Conv {node.name!r}: weights/bias {name!r} must be a constant (or a DequantizeLinear of one)"
                )
        w_shape = (self.weights_dq[w][0] if w in self.weights_dq else self.consts[w]).shape
        if len(w_shape) != 4:
            raise OplatError(f"Conv {node.name!r}: only 2-D convolutions are converted, weights are {w_shape}")
        kernel = tuple(w_shape[2:])
        strides = tuple(_attr(node, "strides", [1, 1]))
        dilations = tuple(_attr(node, "dilations", [1, 1]))
        in_shape = self._shape(x, node.name)
        padding = self._padding(node, in_shape[2:], kernel, strides, dilations)

        out, act = self._fuse_relu(node)
        plan = self._plan(out)
        int8 = plan is not None and w in self.weights_dq and (b is None or b in self.weights_dq or b in self.consts)
        (xt,) = self._inputs([x], node, int8)
        c_out = w_shape[0]
        if xt.dtype == "int8":
            w_q, w_scale = self._int8_weights(node, w, c_out)
            b_scale = (np.float32(xt.scale) * w_scale).astype(np.float32)
            b_q = self._int32_bias(node, b, b_scale, c_out)
            zeros = [0] * c_out
            wt = self._const_tensor(w, w_q.transpose(0, 2, 3, 1), "int8", quant=(w_scale.tolist(), zeros, 0))
            bt = self._const_tensor(b or f"{node.name}_bias", b_q, "int32", quant=(b_scale.tolist(), zeros, 0))
            yt = self._out_tensor(out, plan)
            version = 3  # per-channel int8
        else:
            weights = self._float_const(w).astype(np.float32)
            bias = self._float_const(b).astype(np.float32) if b else np.zeros(c_out, np.float32)
            wt = self._const_tensor(w, weights.transpose(0, 2, 3, 1), "float32")
            bt = self._const_tensor(b or f"{node.name}_bias", bias, "float32")
            yt = self._out_tensor(out, None)
            version = 1
        options = fb.Conv2DOptionsT(
            padding=padding,
            strideW=int(strides[1]),
            strideH=int(strides[0]),
            fusedActivationFunction=act,
            dilationWFactor=int(dilations[1]),
            dilationHFactor=int(dilations[0]),
        )
        self._emit("CONV_2D", [xt.index, wt.index, bt.index], [yt.index], "Conv2DOptions", options, version)

    def _add(self, node: onnx.NodeProto) -> None:
        # Both operands are 4-D activations (_act/_shape enforce it), so NHWC broadcasting
        # matches ONNX's.
        a, b = node.input[0], node.input[1]
        out, act = self._fuse_relu(node)
        plan = self._plan(out)
        at, bt = self._inputs([a, b], node, plan is not None)
        yt = self._out_tensor(out, plan if at.dtype == "int8" else None)
        options = self.fb.AddOptionsT(fusedActivationFunction=act)
        self._emit("ADD", [at.index, bt.index], [yt.index], "AddOptions", options, 2 if yt.dtype == "int8" else 1)

    def _relu(self, node: onnx.NodeProto) -> None:
        out = node.output[0]
        plan = self._plan(out)
        (xt,) = self._inputs([node.input[0]], node, plan is not None)
        yt = self._out_tensor(out, plan if xt.dtype == "int8" else None)
        self._emit("RELU", [xt.index], [yt.index], version=2 if yt.dtype == "int8" else 1)

    def _concat(self, node: onnx.NodeProto) -> None:
        out = node.output[0]
        axis = _attr(node, "axis", 1) % 4  # activations are 4-D (_shape enforces it)
        plan = self._plan(out)
        ins = self._inputs(list(node.input), node, plan is not None)
        if ins[0].dtype == "int8":
            # TFLite's int8 concatenation copies bytes: every input must already be at
            # the output's scale and zero point.
            ins = [self._requant(t, plan.scale, plan.zero) for t in ins]
        yt = self._out_tensor(out, plan if ins[0].dtype == "int8" else None)
        options = self.fb.ConcatenationOptionsT(axis=_NHWC_AXIS[axis])
        self._emit(
            "CONCATENATION",
            [t.index for t in ins],
            [yt.index],
            "ConcatenationOptions",
            options,
            2 if yt.dtype == "int8" else 1,
        )

    def _depth_to_space(self, node: onnx.NodeProto) -> None:
        mode = _attr(node, "mode", "DCR")
        if mode != "DCR":
            raise OplatError(
                f"DepthToSpace {node.name!r}: mode {mode} has no TFLite op (DEPTH_TO_SPACE is DCR); "
                "export with mode DCR"
            )
        out = node.output[0]
        plan = self._plan(out)
        (xt,) = self._same_scale_input(node, plan)
        yt = self._out_tensor(out, plan if xt.dtype == "int8" else None)
        options = self.fb.DepthToSpaceOptionsT(blockSize=int(_attr(node, "blocksize")))
        version = 2 if yt.dtype == "int8" else 1
        self._emit("DEPTH_TO_SPACE", [xt.index], [yt.index], "DepthToSpaceOptions", options, version)

    def _resize(self, node: onnx.NodeProto) -> None:
        fb = self.fb
        x, out = node.input[0], node.output[0]
        in_shape, out_shape = self._shape(x, node.name), self._shape(out, node.name)
        if len(in_shape) != 4 or in_shape[:2] != out_shape[:2]:
            raise OplatError(
                f"Resize {node.name!r}: only spatial (H, W) resizes of 4-D tensors are converted, "
                f"{in_shape} → {out_shape}"
            )
        if len(node.input) < 3:
            # Opset-10 Resize (X, scales) has other coordinate rules and no attributes for them.
            raise OplatError(f"Resize {node.name!r}: the opset-10 form is not converted; export with opset >= 11")
        mode = _attr(node, "mode", "nearest")
        ctm = _attr(node, "coordinate_transformation_mode", "half_pixel")
        nearest_mode = _attr(node, "nearest_mode", "round_prefer_floor")
        if _attr(node, "antialias", 0) and (out_shape[2] < in_shape[2] or out_shape[3] < in_shape[3]):
            raise OplatError(f"Resize {node.name!r}: antialiased downscaling has no TFLite op")
        if mode == "nearest" and ctm == "asymmetric" and nearest_mode == "floor":
            op, opts_name, align, half = "RESIZE_NEAREST_NEIGHBOR", "ResizeNearestNeighborOptions", False, False
        elif mode == "linear" and (
            ctm == "half_pixel" or (ctm == "pytorch_half_pixel" and min(out_shape[2:]) > 1)
        ):
            op, opts_name, align, half = "RESIZE_BILINEAR", "ResizeBilinearOptions", False, True
        elif mode == "linear" and ctm in ("align_corners", "asymmetric"):
            op, opts_name, align, half = "RESIZE_BILINEAR", "ResizeBilinearOptions", ctm == "align_corners", False
        else:
            detail = f"mode={mode}, coordinate_transformation_mode={ctm}"
            if mode == "nearest":
                detail += f", nearest_mode={nearest_mode}"
            raise OplatError(
                f"Resize {node.name!r} ({detail}) has no TFLite equivalent; converted: nearest with "
                "asymmetric/floor, linear with half_pixel, align_corners or asymmetric"
            )
        plan = self._plan(out)
        (xt,) = self._same_scale_input(node, plan)
        yt = self._out_tensor(out, plan if xt.dtype == "int8" else None)
        size = self._const_tensor(f"{node.name or out}_size", np.array(out_shape[2:], np.int32), "int32")
        options_t = fb.ResizeNearestNeighborOptionsT if op == "RESIZE_NEAREST_NEIGHBOR" else fb.ResizeBilinearOptionsT
        version = 3 if half else 2 if yt.dtype == "int8" else 1
        options = options_t(alignCorners=align, halfPixelCenters=half)
        self._emit(op, [xt.index, size.index], [yt.index], opts_name, options, version)

    def _clip(self, node: onnx.NodeProto) -> None:
        out = node.output[0]
        lo, hi = self._clip_bounds(node)
        if lo is None and hi is None:
            raise OplatError(f"Clip {node.name!r} has neither a min nor a max; nothing to convert")
        plan = self._plan(out)
        relu_like = {(0.0, None): "RELU", (0.0, 1.0): "RELU_0_TO_1", (-1.0, 1.0): "RELU_N1_TO_1", (0.0, 6.0): "RELU6"}
        op = relu_like.get((lo, hi))
        if op is not None:
            # These rescale from the input's to the output's quantization themselves.
            (xt,) = self._inputs([node.input[0]], node, plan is not None)
            yt = self._out_tensor(out, plan if xt.dtype == "int8" else None)
            # RELU_N1_TO_1 and RELU_0_TO_1 took int8 without a version bump.
            version = 2 if yt.dtype == "int8" and op in ("RELU", "RELU6") else 1
            self._emit(op, [xt.index], [yt.index], version=version)
            return
        (xt,) = self._same_scale_input(node, plan)
        int8 = xt.dtype == "int8"
        steps = [("MAXIMUM", lo), ("MINIMUM", hi)]
        steps = [(op, v) for op, v in steps if v is not None]
        cur = xt
        for i, (op, bound) in enumerate(steps):
            if int8:
                q = int(np.clip(np.round(bound / plan.scale) + plan.zero, -128, 127))
                ct = self._const_tensor(
                    f"{out}_{op.lower()}", np.array([q], np.int8), "int8", quant=([plan.scale], [plan.zero], 0)
                )
            else:
                ct = self._const_tensor(f"{out}_{op.lower()}", np.array([bound], np.float32), "float32")
            last = i == len(steps) - 1
            if last:
                nt = self._out_tensor(out, plan if int8 else None)
            else:
                nt = self._new_tensor(f"{out}_{op.lower()}_out", cur.shape, cur.dtype, scale=cur.scale, zero=cur.zero)
            options = self.fb.MaximumMinimumOptionsT()
            self._emit(op, [cur.index, ct.index], [nt.index], "MaximumMinimumOptions", options, 2 if int8 else 1)
            cur = nt

    # ------------------------------------------------------------------ op helpers
    def _fuse_relu(self, node: onnx.NodeProto) -> tuple[str, int]:
        """(output name, fused activation): a Relu that is the only reader of ``node``'s
        output is folded into it (TFLite applies it in the op's own output loop)."""
        out = node.output[0]
        users = self.consumers.get(out, [])
        if out not in self.graph_outputs and len(users) == 1 and users[0].op_type == "Relu":
            self.absorbed.add(id(users[0]))
            return users[0].output[0], self.fb.ActivationFunctionType.RELU
        return out, self.fb.ActivationFunctionType.NONE

    def _inputs(self, names: list[str], node: onnx.NodeProto, int8: bool) -> list[_Tensor]:
        """The TFLite tensors for ``names``: as they are when ``int8`` is allowed and all of
        them are int8, else all as float32 (dequantizing the int8 ones)."""
        tensors = [self._act(n, node) for n in names]
        if int8 and all(t.dtype == "int8" for t in tensors):
            return tensors
        return [self._float(n) for n in names]

    def _same_scale_input(self, node: onnx.NodeProto, plan: _Plan | None) -> list[_Tensor]:
        """The single input of an op whose int8 kernel ignores scales (it moves, compares or
        interpolates stored values): requantized to the output's parameters first."""
        (xt,) = self._inputs([node.input[0]], node, plan is not None)
        if xt.dtype == "int8":
            xt = self._requant(xt, plan.scale, plan.zero)
        return [xt]

    def _padding(self, node, in_hw, kernel, strides, dilations) -> int:
        padding = self.fb.Padding
        auto_pad = _attr(node, "auto_pad", "NOTSET")
        if auto_pad == "VALID":
            return padding.VALID
        pads = list(_attr(node, "pads", [0, 0, 0, 0]))
        if auto_pad == "NOTSET" and not any(pads):
            return padding.VALID
        totals = []
        for size, k, s, d in zip(in_hw, kernel, strides, dilations):
            out = -(-size // s)
            totals.append(max((out - 1) * s + (k - 1) * d + 1 - size, 0))
        # TFLite's SAME puts the odd pixel at the end, like ONNX SAME_UPPER.
        same = [t // 2 for t in totals] + [t - t // 2 for t in totals]
        if auto_pad == "SAME_UPPER" or (auto_pad == "NOTSET" and pads == same):
            return padding.SAME
        if auto_pad == "SAME_LOWER" and all(t % 2 == 0 for t in totals):
            return padding.SAME
        raise OplatError(
            f"Conv {node.name!r}: padding auto_pad={auto_pad} pads={pads} is neither SAME ({same}) nor VALID; "
            "TFLite would need a separate PAD op"
        )

    def _int8_weights(self, node: onnx.NodeProto, w: str, c_out: int) -> tuple[np.ndarray, np.ndarray]:
        q, scale, zero, axis = self.weights_dq[w]
        if q.dtype != np.int8:
            raise OplatError(f"Conv {node.name!r}: weights are {q.dtype}; TFLite int8 conv needs int8 weights")
        if np.any(zero != 0):
            raise OplatError(
                f"Conv {node.name!r}: weights have non-zero zero points; TFLite needs symmetric int8 weights"
            )
        scale = np.asarray(scale, np.float32).reshape(-1)
        if scale.size not in (1, c_out) or (scale.size > 1 and axis % 4 != 0):
            raise OplatError(
                f"Conv {node.name!r}: weights quantized along axis {axis}; "
                "TFLite takes per-tensor or per-output-channel scales"
            )
        return q, np.broadcast_to(scale, (c_out,)).astype(np.float32)

    def _int32_bias(self, node: onnx.NodeProto, b: str | None, b_scale: np.ndarray, c_out: int) -> np.ndarray:
        """Bias in int32 at ``b_scale`` (= x_scale · w_scale, what the kernel accumulates
        in); a QDQ bias already at that scale is taken as stored."""
        if b is None:
            return np.zeros(c_out, np.int32)
        if b in self.weights_dq:
            q, scale, zero, _ = self.weights_dq[b]
            scale = np.broadcast_to(np.asarray(scale, np.float32).reshape(-1), (c_out,))
            if q.dtype == np.int32 and not np.any(zero) and np.allclose(scale, b_scale, rtol=1e-6, atol=0):
                return q.astype(np.int32)
        real = self._float_const(b).astype(np.float64)
        return np.clip(np.round(real / b_scale), -(2**31), 2**31 - 1).astype(np.int32)

    def _clip_bounds(self, node: onnx.NodeProto) -> tuple[float | None, float | None]:
        if len(node.input) > 1:  # opset >= 11: bounds are inputs, "" when absent
            bounds = []
            for i in (1, 2):
                name = node.input[i] if len(node.input) > i else ""
                bounds.append(float(self._const(name, node).reshape(())) if name else None)
            lo, hi = bounds
        else:  # opset < 11: attributes
            lo, hi = _attr(node, "min", None), _attr(node, "max", None)
        if lo is not None and (lo == -math.inf or lo <= float(np.finfo(np.float32).min)):
            lo = None
        if hi is not None and (hi == math.inf or hi >= float(np.finfo(np.float32).max)):
            hi = None
        return lo, hi

    # ------------------------------------------------------------------ tensors
    def _act(self, name: str, node: onnx.NodeProto) -> _Tensor:
        if name in self.values:
            return self.values[name]
        if name in self.consts or name in self.weights_dq:
            raise OplatError(
                f"{node.op_type} {node.name!r}: constant input {name!r} is not supported here; "
                "the TFLite converter takes constants only as Conv weights/bias and Clip/Resize parameters"
            )
        raise OplatError(f"{node.op_type} {node.name!r}: input {name!r} is not produced by any converted op")

    def _float(self, name: str) -> _Tensor:
        """``name`` as a float32 tensor, adding a DEQUANTIZE (once) when it is int8."""
        t = self.values[name]
        if t.dtype == "float32":
            return t
        if t.index not in self._float_cache:
            ft = self._new_tensor(f"{self._tensor_name(t)}_dequantized", t.shape, "float32")
            self._emit("DEQUANTIZE", [t.index], [ft.index], "DequantizeOptions", self.fb.DequantizeOptionsT(), 2)
            self._float_cache[t.index] = ft
        return self._float_cache[t.index]

    def _requant(self, t: _Tensor, scale: float, zero: int, name: str | None = None) -> _Tensor:
        """``t`` at another int8 scale/zero point (a QUANTIZE int8 → int8), or ``t`` itself."""
        if t.qparams == (scale, zero):
            return t
        key = (t.index, scale, zero)
        if key not in self._requant_cache:
            name = name or f"{self._tensor_name(t)}_requantized"
            rt = self._new_tensor(name, t.shape, "int8", scale=scale, zero=zero)
            self._emit("QUANTIZE", [t.index], [rt.index], "QuantizeOptions", self.fb.QuantizeOptionsT(), 2)
            self._requant_cache[key] = rt
        return self._requant_cache[key]

    def _out_tensor(self, out: str, plan: _Plan | None) -> _Tensor:
        shape = self._shape(out, out)
        if plan is None:
            t = self._new_tensor(out, _to_nhwc(shape), "float32")
        else:
            t = self._new_tensor(plan.name, _to_nhwc(shape), "int8", scale=plan.scale, zero=plan.zero)
        self.values[out] = t
        return t

    def _shape(self, name: str, where: str) -> tuple[int, ...]:
        """The ONNX (N, C, H, W) shape of activation ``name``."""
        shape = self.shapes.get(name)
        if shape is None or any(d < 1 for d in shape):
            raise OplatError(f"{where}: tensor {name!r} needs a static shape to convert to TFLite, got {shape}")
        if name not in self.consts and len(shape) != 4:
            raise OplatError(f"{where}: tensor {name!r} is {len(shape)}-D; the TFLite converter takes (N, C, H, W)")
        return shape

    def _const(self, name: str, node: onnx.NodeProto) -> np.ndarray:
        if name not in self.consts:
            raise OplatError(f"{node.op_type} {node.name!r}: {name!r} must be a constant to convert to TFLite")
        return np.asarray(self.consts[name])

    def _float_const(self, name: str) -> np.ndarray:
        """A constant's real values; a DequantizeLinear of a constant is applied here."""
        if name in self.weights_dq:
            q, scale, zero, axis = self.weights_dq[name]
            scale, zero = np.asarray(scale, np.float64), np.asarray(zero, np.float64)
            if scale.ndim == 1 and q.ndim > 1:
                shape = [1] * q.ndim
                shape[axis % q.ndim] = -1
                scale, zero = scale.reshape(shape), zero.reshape(shape)
            return ((q.astype(np.float64) - zero) * scale).astype(np.float32)
        return np.asarray(self.consts[name], np.float32)

    def _new_tensor(self, name: str, shape, dtype: str, *, scale=None, zero=None) -> _Tensor:
        fb = self.fb
        quant = None
        if dtype == "int8":
            quant = fb.QuantizationParametersT(scale=[float(scale)], zeroPoint=[int(zero)], quantizedDimension=0)
        self.tensors.append(
            fb.TensorT(
                shape=[int(d) for d in shape],
                type=_TYPES[dtype],
                buffer=0,
                name=self._unique(name),
                quantization=quant,
            )
        )
        return _Tensor(len(self.tensors) - 1, dtype, tuple(int(d) for d in shape), scale, zero)

    def _const_tensor(self, name: str, array: np.ndarray, dtype: str, *, quant=None) -> _Tensor:
        """A constant tensor; ``quant`` is (scales, zero points, quantized dimension)."""
        fb = self.fb
        array = np.ascontiguousarray(array, dtype=_NUMPY[dtype])
        self.buffers.append(_AlignedBufferT(np.frombuffer(array.tobytes(), np.uint8)))
        q = None
        if quant is not None:
            scales, zeros, dim = quant
            q = fb.QuantizationParametersT(
                scale=[float(s) for s in scales], zeroPoint=[int(z) for z in zeros], quantizedDimension=dim
            )
        self.tensors.append(
            fb.TensorT(
                shape=list(array.shape),
                type=_TYPES[dtype],
                buffer=len(self.buffers) - 1,
                name=self._unique(name),
                quantization=q,
            )
        )
        return _Tensor(len(self.tensors) - 1, dtype, tuple(array.shape))

    def _unique(self, name: str) -> str:
        base, i = name, 1
        while name in self.names:
            name = f"{base}_{i}"
            i += 1
        self.names.add(name)
        return name

    def _tensor_name(self, t: _Tensor) -> str:
        return self.tensors[t.index].name

    def _rename(self, t: _Tensor, name: str) -> None:
        """Give an output tensor its ONNX name, moving another tensor off it if needed."""
        current = self.tensors[t.index].name
        if current == name:
            return
        for other in self.tensors:
            if other.name == name:
                self.names.discard(name)
                other.name = self._unique(f"{name}_internal")
        self.names.discard(current)
        self.names.add(name)
        self.tensors[t.index].name = name

    def _emit(self, op: str, inputs, outputs, options_name: str | None = None, options=None, version: int = 1) -> None:
        fb = self.fb
        code = getattr(fb.BuiltinOperator, op)
        key = (code, version)
        if key not in self.opcode_index:
            self.opcode_index[key] = len(self.opcodes)
            self.opcodes.append(
                fb.OperatorCodeT(
                    deprecatedBuiltinCode=min(code, _PLACEHOLDER_FOR_GREATER_OP_CODES),
                    builtinCode=code,
                    version=version,
                )
            )
        self.operators.append(
            fb.OperatorT(
                opcodeIndex=self.opcode_index[key],
                inputs=list(inputs),
                outputs=list(outputs),
                builtinOptionsType=getattr(fb.BuiltinOptions, options_name) if options_name else 0,
                builtinOptions=options,
            )
        )


class _AlignedBufferT:
    """A ``BufferT`` whose data starts on a :data:`_BUFFER_ALIGNMENT`-byte boundary.

    The generated ``BufferT.Pack`` aligns byte vectors to 1 byte; float and int32 weights
    read in place by a kernel want their natural (or SIMD) alignment, as the TFLite
    converter's ``force_align: 16`` on ``Buffer.data`` gives them.
    """

    def __init__(self, data: np.ndarray) -> None:
        self.data = data

    def Pack(self, builder):  # noqa: N802 (flatbuffers object-API name)
        from ai_edge_litert import schema_py_generated as fb

        # What Builder.CreateNumpyVector does, with the alignment asked of StartVector
        # (it would pass the dtype's, 1 for bytes).
        payload = self.data.tobytes()
        builder.StartVector(1, len(payload), _BUFFER_ALIGNMENT)
        builder.head = builder.head - len(payload)
        builder.Bytes[builder.head : builder.head + len(payload)] = payload
        builder.vectorNumElems = len(payload)
        data = builder.EndVector()
        fb.BufferStart(builder)
        fb.BufferAddData(builder, data)
        return fb.BufferEnd(builder)


_TYPES = {"float32": 0, "int32": 2, "uint8": 3, "int8": 9}  # schema TensorType values
_NUMPY = {"float32": np.float32, "int32": np.int32, "uint8": np.uint8, "int8": np.int8}


def _to_nhwc(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 else tuple(shape)


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


