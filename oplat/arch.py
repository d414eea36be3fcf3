"""ArchSpec: plain, INT8-friendly super-resolution networks (the ABPN family).

A network is a chain of same-padded convolutions on the low-resolution (LR) image, each
followed by ReLU or nothing, whose last layer outputs ``3·s²`` channels; a depth-to-space
(DCR order, as in TensorFlow) turns those into the ``s``-times larger RGB image, and an
optional Clip keeps it in the [0, 1] pixel range.

Shapes are N, C, H, W with N = 1; ``in_h`` × ``in_w`` is the LR input in pixels, the
output is ``scale·in_h`` × ``scale·in_w``. Pixel values are floats in [0, 1].

Residual modes (``ArchSpec.residual``):

``anchor``
    ABPN (Du et al., 2021): the input repeated ``s²`` times along channels (a Concat of
    ``s²`` copies of ``x``: R, G, B, R, G, B, …) is added to the last conv's output before
    the depth-to-space. With DCR order every output sub-pixel then starts from the RGB of
    its LR pixel, i.e. the anchor is a nearest-neighbour upsampling and the convs learn the
    residual.
``none``
    No skip: the convs produce the image on their own.
``folded``
    The anchor folded into the convs so that no Concat and no Add remain. The last conv
    only sees features, not the input, so the +1 cannot simply go into its weights;
    instead every conv but the last gets 3 extra output channels that carry the input
    through unchanged (weight 1 at the centre tap from input channel ``j`` to carried
    channel ``j``, 0 elsewhere, bias 0), and the last conv reads them with weight +1 at
    the centre tap from carried channel ``i mod 3`` to output channel ``i``. This is the
    same function as ``anchor`` for every input in the network's [0, 1] domain: a centre
    tap never touches the zero padding, and ReLU is the identity on non-negative values
    (a negative input would be zeroed by the first ReLU — the only case that differs).
    Cost: 3 more channels in every layer (ABPN: 28 → 31, +21% MACs) — often free on an
    NPU that pads channels to a multiple of 8 or 16 anyway — and under INT8 the carried
    image shares each layer's activation scale, so it is quantized more coarsely than the
    ``anchor`` path, whose Concat and Add run at the input's own [0, 1] scale.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from oplat.build import IR_VERSION, OPSET
from oplat.errors import OplatError
from oplat.onnxgraph import GraphIndex
from oplat.spec import OpSpec

__all__ = [
    "ABPN",
    "ACTIVATIONS",
    "IR_VERSION",
    "OPSET",
    "RESIDUALS",
    "SCALES",
    "ArchSpec",
    "Conv",
    "Layer",
    "arch_ops",
    "calibration_images",
    "convs",
    "describe",
    "macs",
    "model_from_arch",
    "optimized_op_counts",
    "params",
    "quantize_qdq",
]

SCALES = (2, 3, 4)
RESIDUALS = ("anchor", "none", "folded")
ACTIVATIONS = ("relu", "none")
# OPSET and IR_VERSION: the ones every model oplat writes uses (defined in oplat.build).

#: Input channels (RGB).
_C_IN = 3
#: Gain on the last conv's He-init weights: with a residual the convs start as a small
#: correction to the anchor, and without one the output still stays near the pixel range.
_LAST_GAIN = 0.1
_BIAS_STD = 0.01


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Layer:
    """One conv layer: ``c_out`` output channels, a ``kernel``×``kernel`` same-padded
    kernel (stride 1), then ``act`` (``relu`` or ``none`` for linear)."""

    c_out: int
    kernel: int = 3
    act: str = "relu"

    def __post_init__(self) -> None:
        if not _is_int(self.c_out) or self.c_out < 1:
            raise OplatError(f"Layer.c_out must be a positive integer, got {self.c_out!r}")
        if not _is_int(self.kernel) or self.kernel < 1 or self.kernel % 2 == 0:
            raise OplatError(f"Layer.kernel must be an odd positive integer (same padding), got {self.kernel!r}")
        if self.act not in ACTIVATIONS:
            raise OplatError(f"Layer.act must be one of {', '.join(ACTIVATIONS)}, got {self.act!r}")


@dataclass(frozen=True)
class Conv:
    """One conv as built in the graph: ``c_in`` → ``c_out`` channels, square ``kernel``,
    then ``act``. Differs from the :class:`Layer` list only in ``folded`` mode."""

    c_in: int
    c_out: int
    kernel: int
    act: str


@dataclass(frozen=True)
class ArchSpec:
    """A plain SR network.

    Attributes:
        scale: upscale factor s, one of :data:`SCALES`.
        in_h, in_w: LR input height and width, pixels.
        layers: the convs in order; the first takes the 3 RGB channels, the last must
            output ``3·scale²`` channels (a list is accepted and stored as a tuple).
        residual: one of :data:`RESIDUALS` (see the module docstring).
        clip: end with Clip to [0, 1].
    """

    scale: int
    in_h: int
    in_w: int
    layers: tuple[Layer, ...]
    residual: str = "anchor"
    clip: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.layers, list):
            object.__setattr__(self, "layers", tuple(self.layers))
        problem = self.problem()
        if problem:
            raise OplatError(f"ArchSpec: {problem}")

    def problem(self) -> str | None:
        """Why this spec is impossible, or None when it is fine."""
        if not _is_int(self.scale) or self.scale not in SCALES:
            return f"scale must be one of {', '.join(map(str, SCALES))}, got {self.scale!r}"
        for name in ("in_h", "in_w"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                return f"{name} must be a positive integer (pixels), got {value!r}"
        if not isinstance(self.layers, tuple) or not self.layers:
            return "layers must be a non-empty tuple of Layer"
        bad = [i for i, layer in enumerate(self.layers) if not isinstance(layer, Layer)]
        if bad:
            return f"layers[{bad[0]}] is a {type(self.layers[bad[0]]).__name__}, not a Layer"
        if self.layers[-1].c_out != self.c_out:
            return (
                f"the last layer must output 3·scale² = {self.c_out} channels for the ×{self.scale} "
                f"depth-to-space, got c_out={self.layers[-1].c_out}"
            )
        if self.residual not in RESIDUALS:
            return f"residual must be one of {', '.join(RESIDUALS)}, got {self.residual!r}"
        if not isinstance(self.clip, bool):
            return f"clip must be true or false, got {self.clip!r}"
        return None

    @property
    def c_out(self) -> int:
        """Channels of the last conv: 3·scale²."""
        return _C_IN * self.scale * self.scale

    @property
    def out_h(self) -> int:
        """Output height, pixels."""
        return self.scale * self.in_h

    @property
    def out_w(self) -> int:
        """Output width, pixels."""
        return self.scale * self.in_w

    def with_input(self, in_h: int, in_w: int) -> ArchSpec:
        """The same network on an ``in_h`` × ``in_w`` LR input."""
        return replace(self, in_h=in_h, in_w=in_w)


def convs(arch: ArchSpec) -> tuple[Conv, ...]:
    """The convs the built graph runs, in order (``folded`` adds the 3 carried channels
    to every conv but the last)."""
    carry = _C_IN if arch.residual == "folded" else 0
    out: list[Conv] = []
    c_in = _C_IN
    last = len(arch.layers) - 1
    for i, layer in enumerate(arch.layers):
        c_out = layer.c_out if i == last else layer.c_out + carry
        out.append(Conv(c_in, c_out, layer.kernel, layer.act))
        c_in = c_out
    return tuple(out)


#: ABPN (Du et al., "Anchor-based Plain Net for Mobile Image Super-Resolution", CVPRW 2021):
#: ×3 on a 360×640 input; 42,539 parameters (the published "42.54 K") and 9.76 G MACs.
ABPN = ArchSpec(
    scale=3,
    in_h=360,
    in_w=640,
    layers=(Layer(28), *[Layer(28)] * 4, Layer(27), Layer(27, act="none")),
    residual="anchor",
    clip=True,
)


# ---------------------------------------------------------------------- counting
def params(arch: ArchSpec) -> int:
    """Weights plus biases of every conv in the built graph (``folded``: including the
    fixed identity taps that carry the input)."""
    return sum(c.c_in * c.c_out * c.kernel * c.kernel + c.c_out for c in convs(arch))


def macs(arch: ArchSpec) -> int:
    """Multiply-accumulates of one inference: Σ in_h·in_w·c_in·c_out·k² over the convs."""
    pixels = arch.in_h * arch.in_w
    return sum(pixels * c.c_in * c.c_out * c.kernel * c.kernel for c in convs(arch))


def arch_ops(arch: ArchSpec, precision: str = "fp32") -> list[OpSpec]:
    """The one-op specs the network consists of, in graph order.

    A conv followed by ReLU is one ``conv+relu`` kernel, a linear conv is ``conv``; ``anchor``
    adds ``concat`` (arity s² of the 3-channel input) and ``add`` (3·s² channels); then
    ``depth_to_space`` (block s) and, with ``clip``, ``clip`` [0, 1] on the s·H × s·W output.
    """
    h, w, s = arch.in_h, arch.in_w, arch.scale
    ops: list[OpSpec] = []
    if arch.residual == "anchor":
        ops.append(OpSpec("concat", c=_C_IN, h=h, w=w, arity=s * s, precision=precision))
    for c in convs(arch):
        op = "conv+relu" if c.act == "relu" else "conv"
        ops.append(OpSpec(op, c=c.c_in, h=h, w=w, c_out=c.c_out, kernel=c.kernel, precision=precision))
    if arch.residual == "anchor":
        ops.append(OpSpec("add", c=arch.c_out, h=h, w=w, precision=precision))
    ops.append(OpSpec("depth_to_space", c=arch.c_out, h=h, w=w, block=s, precision=precision))
    if arch.clip:
        ops.append(OpSpec("clip", c=_C_IN, h=arch.out_h, w=arch.out_w, lo=0.0, hi=1.0, precision=precision))
    return ops


def describe(arch: ArchSpec) -> str:
    """One line, e.g. ``3→28, 28→28 ×4, 28→27, 27→27 linear; anchor; D2S×3; clip; 360×640``.

    Layers are listed as declared (``folded`` does not show its carried channels); ReLU is
    the default and not written, a kernel other than 3×3 is.
    """
    parts: list[str] = []
    c_in = _C_IN
    run: tuple[str, int] | None = None
    for layer in arch.layers:
        text = f"{c_in}→{layer.c_out}"
        if layer.kernel != 3:
            text += f" {layer.kernel}×{layer.kernel}"
        if layer.act == "none":
            text += " linear"
        if run and run[0] == text:
            run = (text, run[1] + 1)
        else:
            if run:
                parts.append(run[0] + (f" ×{run[1]}" if run[1] > 1 else ""))
            run = (text, 1)
        c_in = layer.c_out
    assert run is not None
    parts.append(run[0] + (f" ×{run[1]}" if run[1] > 1 else ""))
    tail = [arch.residual if arch.residual != "none" else "no residual", f"D2S×{arch.scale}"]
    if arch.clip:
        tail.append("clip")
    tail.append(f"{arch.in_h}×{arch.in_w}")
    return ", ".join(parts) + "; " + "; ".join(tail)


# ---------------------------------------------------------------------- building
def _logical_weights(arch: ArchSpec, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """He-init weights (c_out, c_in, k, k) and biases (c_out,) for the declared layers.

    Independent of the residual mode, so ``anchor``, ``folded`` and ``none`` built with one
    seed share their learned weights.
    """
    rng = np.random.default_rng(seed)
    out = []
    c_in = _C_IN
    last = len(arch.layers) - 1
    for i, layer in enumerate(arch.layers):
        k = layer.kernel
        std = np.sqrt(2.0 / (c_in * k * k)) * (_LAST_GAIN if i == last else 1.0)
        w = rng.standard_normal((layer.c_out, c_in, k, k)) * std
        b = rng.standard_normal(layer.c_out) * _BIAS_STD
        out.append((w.astype(np.float32), b.astype(np.float32)))
        c_in = layer.c_out
    return out


def _graph_weights(arch: ArchSpec, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The weights of the convs the graph runs; ``folded`` embeds the identity path."""
    logical = _logical_weights(arch, seed)
    if arch.residual != "folded":
        return logical
    out = []
    last = len(logical) - 1
    for i, ((w, b), conv) in enumerate(zip(logical, convs(arch), strict=True)):
        c_out_l, c_in_l, k, _ = w.shape
        centre = k // 2
        big = np.zeros((conv.c_out, conv.c_in, k, k), np.float32)
        big[:c_out_l, :c_in_l] = w
        bias = np.zeros(conv.c_out, np.float32)
        bias[:c_out_l] = b
        # Where the carried RGB sits in this conv's input: the input itself for the first
        # conv, the 3 extra channels after the features otherwise.
        carried_in = 0 if i == 0 else c_in_l
        if i < last:
            for j in range(_C_IN):
                big[c_out_l + j, carried_in + j, centre, centre] = 1.0
        else:
            for o in range(conv.c_out):
                big[o, carried_in + o % _C_IN, centre, centre] += 1.0
        out.append((big, bias))
    return out


def model_from_arch(arch: ArchSpec, *, seed: int = 0) -> onnx.ModelProto:
    """The FP32 ONNX model (opset 17, IR 9) of ``arch`` with deterministic weights.

    Input ``x``: float (1, 3, in_h, in_w), pixels in [0, 1]. Output ``y``: float
    (1, 3, scale·in_h, scale·in_w). Pure: the same ``arch`` and ``seed`` give the same bytes.
    """
    s = arch.scale
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    cur = "x"
    for i, ((w, b), conv) in enumerate(zip(_graph_weights(arch, seed), convs(arch), strict=True)):
        inits += [numpy_helper.from_array(w, f"conv{i}.weight"), numpy_helper.from_array(b, f"conv{i}.bias")]
        p = conv.kernel // 2
        out = f"conv{i}"
        nodes.append(
            helper.make_node(
                "Conv",
                [cur, f"conv{i}.weight", f"conv{i}.bias"],
                [out],
                name=f"conv{i}",
                kernel_shape=[conv.kernel, conv.kernel],
                pads=[p, p, p, p],
                strides=[1, 1],
                dilations=[1, 1],
                group=1,
            )
        )
        if conv.act == "relu":
            nodes.append(helper.make_node("Relu", [out], [f"relu{i}"], name=f"relu{i}"))
            out = f"relu{i}"
        cur = out
    if arch.residual == "anchor":
        nodes.insert(0, helper.make_node("Concat", ["x"] * (s * s), ["anchor"], name="anchor", axis=1))
        nodes.append(helper.make_node("Add", [cur, "anchor"], ["residual_sum"], name="add_anchor"))
        cur = "residual_sum"
    d2s_out = "d2s" if arch.clip else "y"
    nodes.append(helper.make_node("DepthToSpace", [cur], [d2s_out], name="depth_to_space", blocksize=s, mode="DCR"))
    if arch.clip:
        inits += [
            numpy_helper.from_array(np.array(0.0, np.float32), "clip.lo"),
            numpy_helper.from_array(np.array(1.0, np.float32), "clip.hi"),
        ]
        nodes.append(helper.make_node("Clip", [d2s_out, "clip.lo", "clip.hi"], ["y"], name="clip"))
    graph = helper.make_graph(
        nodes,
        "oplat_arch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, _C_IN, arch.in_h, arch.in_w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, _C_IN, arch.out_h, arch.out_w])],
        initializer=inits,
        doc_string=describe(arch),
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="oplat",
        ir_version=IR_VERSION,
    )
    return model


# ---------------------------------------------------------------------- INT8
def calibration_images(h: int, w: int, count: int = 8, *, seed: int = 0) -> list[np.ndarray]:
    """Deterministic natural-looking test images: float32 (1, 3, h, w) in [0, 1].

    Each is low-frequency colour noise (a coarse random grid upsampled bilinearly) plus a
    few anti-aliased straight edges (random half-planes with a colour step) and a little
    fine grain, so calibration sees both smooth areas and sharp transitions.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    images = []
    for _ in range(count):
        gh, gw = max(2, h // 12 + 2), max(2, w // 12 + 2)
        coarse = rng.random((_C_IN, gh, gw))
        img = _interp_matrix(h, gh) @ coarse @ _interp_matrix(w, gw).T  # (3, h, w)
        img = 0.25 + 0.5 * img
        for _ in range(int(rng.integers(2, 5))):
            angle = rng.uniform(0.0, np.pi)
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            dist = (yy - cy) * np.cos(angle) + (xx - cx) * np.sin(angle)  # pixels
            step = 0.5 * (1.0 + np.tanh(dist))  # ~1 px anti-aliased edge
            img = img + rng.uniform(-0.3, 0.3, (_C_IN, 1, 1)) * step
        img = img + rng.normal(0.0, 0.01, img.shape)
        images.append(np.clip(img, 0.0, 1.0).astype(np.float32)[None])
    return images


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation matrix, align-corners."""
    pos = np.linspace(0.0, n_in - 1.0, n_out)
    lo = np.clip(np.floor(pos).astype(int), 0, n_in - 2)
    frac = pos - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] = 1.0 - frac
    m[np.arange(n_out), lo + 1] = frac
    return m


class _Reader:
    """onnxruntime CalibrationDataReader over a list of arrays."""

    def __init__(self, name: str, arrays: list[np.ndarray]) -> None:
        self._name = name
        self._it: Iterator[np.ndarray] = iter(arrays)

    def get_next(self) -> dict[str, np.ndarray] | None:
        arr = next(self._it, None)
        return None if arr is None else {self._name: arr}


def _input_shape(model: onnx.ModelProto) -> tuple[str, tuple[int, ...]]:
    names = set(GraphIndex.of(model).inputs)
    inputs = [i for i in model.graph.input if i.name in names]
    if len(inputs) != 1:
        raise OplatError(f"quantize_qdq needs a model with one input, this one has {len(inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.HasField("dim_value") else 0 for d in dims)
    if len(shape) != 4 or shape[1] != _C_IN or 0 in shape:
        raise OplatError(
            f"quantize_qdq needs a static (1, 3, H, W) input, input {inputs[0].name!r} is {shape} "
            "(0 = symbolic); export the model with a fixed input size"
        )
    return inputs[0].name, shape


def _unit_range_tensors(model: onnx.ModelProto) -> list[str]:
    """Tensors whose real range is [0, 1] by construction.

    The graph output when a Clip to [0, 1] produces it; and when that Clip follows a
    DepthToSpace (which only moves values, so clipping commutes with it), the
    DepthToSpace's input too. Pinning both to [0, 1] gives the DepthToSpace one scale on
    either side, so it runs on uint8 and the Clip becomes the output's uint8 saturation.
    """
    index = GraphIndex.of(model)
    producer = index.producer
    out = index.outputs[0]
    clip = producer.get(out)
    if clip is None or clip.op_type != "Clip" or len(clip.input) != 3:
        return []
    lo, hi = index.const(clip.input[1]), index.const(clip.input[2])
    if lo is None or hi is None or float(lo) != 0.0 or float(hi) != 1.0:
        return []
    names = [out]
    d2s = producer.get(clip.input[0])
    if d2s is not None and d2s.op_type == "DepthToSpace" and index.uses(d2s.output[0]) == 1 and index.uses(d2s.input[0]) == 1:
        names.append(d2s.input[0])
    return names


def quantize_qdq(
    model: onnx.ModelProto,
    *,
    calibration: Iterable[np.ndarray] | None = None,
    seed: int = 0,
    check_fused: bool = True,
) -> onnx.ModelProto:
    """Static QDQ INT8 quantization: uint8 activations, int8 per-channel weights.

    Calibrates (min-max) on ``calibration`` — arrays of shape (1, 3, H, W) or (3, H, W),
    pixels in [0, 1] — or, when None, on 8 :func:`calibration_images` drawn with ``seed``.
    The input's range is pinned to [0, 1] (scale 1/255, zero point 0: the uint8 image), and
    so is the output's when a Clip to [0, 1] produces it. With ``check_fused``, checks that
    onnxruntime fuses every Conv into a QLinearConv and raises :class:`OplatError` if not.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name, shape = _input_shape(model)
    if calibration is None:
        arrays = calibration_images(shape[2], shape[3], seed=seed)
    else:
        arrays = []
        for i, arr in enumerate(calibration):
            a = np.asarray(arr, dtype=np.float32)
            if a.ndim == 3:
                a = a[None]
            if a.shape != shape:
                raise OplatError(
                    f"calibration array {i} has shape {np.shape(arr)}, the model's input {name!r} needs {shape} "
                    "(or without the batch axis)"
                )
            if a.size and (a.min() < 0.0 or a.max() > 1.0):
                raise OplatError(
                    f"calibration array {i} has values in [{a.min():g}, {a.max():g}]; scale pixels to [0, 1]"
                )
            arrays.append(a)
        if not arrays:
            raise OplatError("calibration is empty; give at least one (1, 3, H, W) array or None for generated images")
    with tempfile.TemporaryDirectory(prefix="oplat-qdq-") as tmp:
        src, pre, dst = (os.path.join(tmp, f) for f in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(model, src)
        # The recommended pre-processing: ONNX shape inference and onnxruntime's basic
        # (semantics-preserving) graph clean-up.
        quant_pre_process(src, pre, skip_symbolic_shape=True)  # shapes are static
        unit = [{"rmin": np.float32(0.0), "rmax": np.float32(1.0)}]
        overrides = {t: unit for t in [name, *_unit_range_tensors(onnx.load(pre))]}
        quantize_static(
            pre,
            dst,
            _Reader(name, arrays),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
            # onnxruntime's default op list leaves DepthToSpace in float; it only moves
            # values, so it can run on uint8 (ORT drops the Q/DQ pair around it).
            op_types_to_quantize=sorted({*QLinearOpsRegistry, *QDQRegistry, "DepthToSpace"}),
            extra_options={"TensorQuantOverrides": overrides},
        )
        qdq = onnx.load(dst)
    if check_fused:
        n_conv = sum(1 for n in model.graph.node if n.op_type == "Conv")
        counts = optimized_op_counts(qdq)
        if counts.get("QLinearConv", 0) != n_conv or counts.get("Conv", 0):
            raise OplatError(
                f"onnxruntime fused {counts.get('QLinearConv', 0)} of {n_conv} convs into QLinearConv "
                f"({counts.get('Conv', 0)} left in float); the QDQ pattern around them is broken — "
                "check the onnxruntime version (>= 1.18) and that no conv was excluded"
            )
    return qdq


def optimized_op_counts(model: onnx.ModelProto, *, level: str = "extended") -> dict[str, int]:
    """How many nodes of each op type onnxruntime's CPU graph optimizer leaves.

    ``level`` is ``basic``, ``extended`` (where QDQ groups become QLinear ops) or ``all``
    (adds layout changes). The optimized model is read back through
    ``SessionOptions.optimized_model_filepath``.
    """
    import onnxruntime as ort

    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if level not in levels:
        raise OplatError(f"optimization level must be one of {', '.join(levels)}, got {level!r}")
    with tempfile.TemporaryDirectory(prefix="oplat-opt-") as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        so = ort.SessionOptions()
        so.graph_optimization_level = levels[level]
        so.optimized_model_filepath = path
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        optimized = onnx.load(path)
    return dict(Counter(n.op_type for n in optimized.graph.node))
