"""OpSpec: one operator (or fused kernel) at one shape and precision.

An OpSpec is what a latency-table row measures. Its ``key`` (canonical JSON of the
fields that define the measurement) identifies the row, so ``measure`` can resume and
the predictor can look a kernel up.

Shapes are N, C, H, W (batch 1 unless stated); ``c`` is the input channel count of each
input, ``c_out`` the output channel count of a conv. Spatial sizes are pixels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from functools import cached_property

from oplat.errors import OplatError

__all__ = [
    "OPS",
    "PRECISIONS",
    "RESIZE_MODES",
    "OpSpec",
]

#: Operators and fused kernels oplat can build and time.
OPS = ("conv", "conv+relu", "add", "concat", "resize", "relu", "clip", "depth_to_space")
PRECISIONS = ("fp32", "fp16", "int8")
RESIZE_MODES = ("nearest", "bilinear")
#: ``nhwc``: the op as a runtime runs it inside an NHWC region of a network (ORT's INT8
#: graphs): its model takes and returns NHWC tensors (see :func:`oplat.onnxgraph.nhwc_context`).
LAYOUTS = ("nchw", "nhwc")

# Which attribute fields each op takes; every other attribute must stay None.
_OP_ATTRS: dict[str, frozenset[str]] = {
    "conv": frozenset({"c_out", "kernel"}),
    "conv+relu": frozenset({"c_out", "kernel"}),
    "add": frozenset(),
    "concat": frozenset({"arity"}),
    "resize": frozenset({"mode", "scale"}),
    "relu": frozenset(),
    "clip": frozenset({"lo", "hi"}),
    "depth_to_space": frozenset({"block"}),
}
_ATTRS = ("c_out", "kernel", "arity", "mode", "scale", "block", "lo", "hi")


@dataclass(frozen=True)
class OpSpec:
    """One operator at one shape and precision.

    Attributes:
        op: one of :data:`OPS`.
        c: channels of each input tensor.
        h, w: input height and width in pixels.
        n: batch size.
        c_out: output channels (conv).
        kernel: square kernel size (conv); padding keeps H×W ("same").
        arity: number of inputs (concat along channels).
        mode: resize interpolation, one of :data:`RESIZE_MODES`.
        scale: integer upscale factor (resize).
        block: block size (depth_to_space), needs ``c % block**2 == 0``.
        lo, hi: clip range (clip), in the tensor's real-valued units.
        precision: ``fp32``, ``fp16`` (half-precision tensors and weights) or ``int8``
            (QDQ: uint8 activations, int8 per-channel weights).
        layout: tensor layout of the model's inputs and outputs (``nhwc``: the op as it
            runs inside an NHWC region of a network).
    """

    op: str
    c: int
    h: int
    w: int
    n: int = 1
    c_out: int | None = None
    kernel: int | None = None
    arity: int | None = None
    mode: str | None = None
    scale: int | None = None
    block: int | None = None
    lo: float | None = None
    hi: float | None = None
    precision: str = "fp32"
    layout: str = "nchw"

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise OplatError(problem)

    # ------------------------------------------------------------------ validation
    def problem(self) -> str | None:
        """Return why this spec is impossible, or None when it is fine."""
        if self.op not in OPS:
            return f"unknown op {self.op!r}; known ops: {', '.join(OPS)}"
        if self.precision not in PRECISIONS:
            return f"unknown precision {self.precision!r}; known: {', '.join(PRECISIONS)}"
        if self.layout not in LAYOUTS:
            return f"unknown layout {self.layout!r}; known: {', '.join(LAYOUTS)}"
        for name in ("n", "c", "h", "w"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                return f"{name} must be a positive integer, got {value!r}"
        allowed = _OP_ATTRS[self.op]
        extra = [a for a in _ATTRS if getattr(self, a) is not None and a not in allowed]
        if extra:
            return f"op {self.op!r} takes no {', '.join(extra)} (it takes: {', '.join(sorted(allowed)) or 'no attributes'})"
        op = self.op
        if op in ("conv", "conv+relu"):
            if not _pos_int(self.c_out):
                return f"{op} needs c_out, a positive integer, got {self.c_out!r}"
            if not _pos_int(self.kernel) or self.kernel % 2 == 0:
                return f"{op} needs an odd positive kernel size, got {self.kernel!r}"
        elif op == "concat":
            if not _pos_int(self.arity) or self.arity < 2:
                return f"concat needs arity >= 2 (number of inputs), got {self.arity!r}"
        elif op == "resize":
            if self.mode not in RESIZE_MODES:
                return f"resize needs mode in {RESIZE_MODES}, got {self.mode!r}"
            if not _pos_int(self.scale) or self.scale < 2:
                return f"resize needs an integer scale >= 2, got {self.scale!r}"
        elif op == "depth_to_space":
            if not _pos_int(self.block) or self.block < 2:
                return f"depth_to_space needs an integer block >= 2, got {self.block!r}"
            if self.c % (self.block * self.block):
                return (
                    f"depth_to_space with block {self.block} needs channels divisible by "
                    f"{self.block * self.block}, got c={self.c}"
                )
        elif op == "clip":
            if self.lo is None or self.hi is None or not self.lo < self.hi:
                return f"clip needs lo < hi, got lo={self.lo!r} hi={self.hi!r}"
        return None

    # ------------------------------------------------------------------ identity
    @cached_property
    def key(self) -> str:
        """Canonical JSON of the defining fields (unset attributes left out). Computed once
        per spec: the predictor looks kernels up by key in the search's inner loop."""
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))

    @cached_property
    def twins(self) -> tuple[OpSpec, ...]:
        """Specs whose rows time the same kernel as this one (the one twin rule).

        In a QDQ network the ReLU after an INT8 conv is folded into the conv's uint8
        output range (quantizers drop it), so the int8 ``conv`` and ``conv+relu`` rows
        time the same QLinearConv and either prices the other."""
        if self.precision == "int8" and self.op in ("conv", "conv+relu"):
            return (replace(self, op="conv+relu" if self.op == "conv" else "conv"),)
        return ()

    def as_dict(self) -> dict:
        """The defining fields, unset attributes left out (all fields are scalars, so no
        recursive ``dataclasses.asdict`` copy is needed)."""
        out = {}
        for name in _FIELD_NAMES:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict) -> OpSpec:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise OplatError(f"unknown OpSpec field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**data)

    # ------------------------------------------------------------------ shapes and work
    @property
    def input_shapes(self) -> list[tuple[int, int, int, int]]:
        """Shapes (N, C, H, W) of every input."""
        count = self.arity if self.op == "concat" else 2 if self.op == "add" else 1
        return [(self.n, self.c, self.h, self.w)] * count

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        """Shape (N, C, H, W) of the output."""
        n, c, h, w = self.n, self.c, self.h, self.w
        if self.op in ("conv", "conv+relu"):
            return (n, self.c_out, h, w)
        if self.op == "concat":
            return (n, c * self.arity, h, w)
        if self.op == "resize":
            return (n, c, h * self.scale, w * self.scale)
        if self.op == "depth_to_space":
            b = self.block
            return (n, c // (b * b), h * b, w * b)
        return (n, c, h, w)

    @property
    def macs(self) -> int:
        """Multiply-accumulates (convs only; 0 for data-movement and element-wise ops)."""
        if self.op in ("conv", "conv+relu"):
            n, c_out, h, w = self.output_shape
            return n * c_out * h * w * self.c * self.kernel * self.kernel
        return 0

    @property
    def elements_moved(self) -> int:
        """Tensor elements read plus written (inputs and output, weights left out)."""
        read = sum(_numel(s) for s in self.input_shapes)
        return read + _numel(self.output_shape)

    def label(self) -> str:
        """Short human name, e.g. ``conv3x3 28→28 360×640 int8``."""
        if self.op in ("conv", "conv+relu"):
            name = f"{self.op.replace('conv', f'conv{self.kernel}x{self.kernel}')} {self.c}→{self.c_out}"
        elif self.op == "concat":
            name = f"concat {self.arity}×{self.c}"
        elif self.op == "resize":
            name = f"resize {self.mode} ×{self.scale} c{self.c}"
        elif self.op == "depth_to_space":
            name = f"depth_to_space ×{self.block} c{self.c}"
        else:
            name = f"{self.op} c{self.c}"
        batch = f"n{self.n} " if self.n != 1 else ""
        layout = " nhwc" if self.layout == "nhwc" else ""
        return f"{name} {batch}{self.h}×{self.w} {self.precision}{layout}"


def _pos_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _numel(shape: tuple[int, ...]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


#: OpSpec's fields in declaration order (``as_dict`` runs in the search's inner loop).
_FIELD_NAMES = tuple(f.name for f in fields(OpSpec))
