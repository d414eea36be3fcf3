"""NodeSpec: a kernel of any ONNX network, by its canonical signature.

The built-in families (:class:`oplat.spec.OpSpec`: conv, add, concat, resize, relu, clip,
depth-to-space) cover the SR search space and have friendly labels and neighbour models.
Everything else a user's network runs — PReLU, LeakyReLU, MaxPool, a grouped, strided or
dilated conv, ConvTranspose, BatchNormalization, Gemm, Softmax, a cubic Resize, an
interior QuantizeLinear — is a NodeSpec: the group of ONNX nodes the device runs as one
kernel (a conv with the activation the runtime fuses into it; a QDQ group), identified
by

- the op types of the group, in order (``Conv``, ``LeakyRelu``);
- their attributes (canonical: sorted, strings decoded, defaults as written);
- the activation inputs' shapes and element types (for an INT8 group: the quantized types
  the runtime reads, ``uint8``/``int8``);
- the constant inputs' shapes and element types (weights: shape only; small parameter
  constants — scales, clip bounds, a multiplier, a target shape — with their values,
  since they change what runs);
- the precision (``fp32``, ``fp16``, ``int8``) and the batch (the first dim).

Its ``key`` (canonical JSON) is the table key. The same node in two models gives the same
key; another attribute, shape or type gives another. :func:`oplat.build.model_from_nodespec`
builds a one-kernel model of a NodeSpec, so op-set entries can name any ONNX op and
``predict --missing-opset`` can write the entries a network lacks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from oplat.errors import OplatError

__all__ = ["ELEM_NAMES", "NodeSpec", "PRECISIONS", "SMALL_CONST"]

#: Precisions a NodeSpec can have.
PRECISIONS = ("fp32", "fp16", "int8")
#: Constants with at most this many elements are keyed by value, larger ones by shape.
SMALL_CONST = 8
#: ONNX element types by the names a signature uses.
ELEM_NAMES = {
    "float": 1, "uint8": 2, "int8": 3, "uint16": 4, "int16": 5, "int32": 6, "int64": 7, "bool": 9,
    "float16": 10, "double": 11,
}
_ELEM_BY_NUMBER = {v: k for k, v in ELEM_NAMES.items()}
#: Element types an activation may have (a network with int64 activations is refused).
ACTIVATION_ELEMS = ("float", "float16", "uint8", "int8")


def elem_name(number: int) -> str:
    return _ELEM_BY_NUMBER.get(number, f"type{number}")


def canonical(value):
    """JSON-able, order-stable form of an attribute value."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, float):
        return float(np.float32(value))  # ONNX stores float attributes as float32
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(np.float32(value))
    return value


@dataclass(frozen=True)
class NodeSpec:
    """One kernel of any ONNX network (see the module docstring).

    Attributes:
        ops: op types of the group, in order; each op after the first reads the one
            before it as its first input.
        attrs: per op, its attributes as a JSON object (canonical form).
        inputs: the activation inputs of the first op (all activation inputs of a
            single-op kernel), each ``{"shape": [...], "elem": "float"}``.
        consts: constant inputs, each ``{"op": i, "slot": j, "shape": [...], "elem": ...}``
            plus ``"value"`` for small constants and ``"q": true`` for a quantized weight
            (read through a DequantizeLinear in an INT8 group).
        slots: per op, how many inputs it has (activation or constant; "" for an omitted
            optional input counts too), so the group can be rebuilt.
        precision: ``fp32``, ``fp16`` or ``int8`` (how the runtime runs it).
        outputs: the output shapes and element types (from shape inference).
    """

    ops: tuple[str, ...]
    attrs: tuple[dict, ...]
    inputs: tuple[dict, ...]
    consts: tuple[dict, ...] = ()
    slots: tuple[int, ...] = ()
    precision: str = "fp32"
    outputs: tuple[dict, ...] = ()
    #: ``nhwc``: the kernel as the runtime runs it inside an NHWC region of a network
    #: (its model takes and returns NHWC tensors); in the key only when not ``nchw``
    layout: str = "nchw"
    op: str = field(default="onnx", init=False)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise OplatError(f"unknown precision {self.precision!r}; known: {', '.join(PRECISIONS)}")
        if not self.ops:
            raise OplatError("a node kernel needs at least one op")
        if self.layout not in ("nchw", "nhwc"):
            raise OplatError(f"unknown layout {self.layout!r}; known: nchw, nhwc")
        if len(self.attrs) != len(self.ops) or (self.slots and len(self.slots) != len(self.ops)):
            raise OplatError("a node kernel needs one attribute object and one slot count per op")
        if any(c.get("empty") and set(c) - {"op", "slot", "empty"} for c in self.consts):
            # an omitted optional input (Resize's roi "") is its position only: an op-set
            # entry that gives it an elem or shape is the same kernel, with the same key
            canonical_consts = tuple({"op": c.get("op", 0), "slot": c["slot"], "empty": True} if c.get("empty") else c for c in self.consts)
            object.__setattr__(self, "consts", canonical_consts)

    # ------------------------------------------------------------------ identity
    def as_dict(self) -> dict:
        return {
            "op": "onnx",
            "ops": list(self.ops),
            "attrs": [dict(sorted(a.items())) for a in self.attrs],
            "inputs": [dict(sorted(i.items())) for i in self.inputs],
            "consts": [dict(sorted(c.items())) for c in self.consts],
            "slots": list(self.slots),
            "precision": self.precision,
            "outputs": [dict(sorted(o.items())) for o in self.outputs],
            **({"layout": self.layout} if self.layout != "nchw" else {}),
        }

    @cached_property
    def key(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict) -> NodeSpec:
        if data.get("op") != "onnx":
            raise OplatError("a node kernel's spec has op = 'onnx'")
        try:
            return cls(
                ops=tuple(str(o) for o in data["ops"]),
                attrs=tuple(dict(a) for a in data["attrs"]),
                inputs=tuple(dict(i) for i in data["inputs"]),
                consts=tuple(dict(c) for c in data.get("consts", [])),
                slots=tuple(int(s) for s in data.get("slots", [])),
                precision=str(data.get("precision", "fp32")),
                outputs=tuple(dict(o) for o in data.get("outputs", [])),
                layout=str(data.get("layout", "nchw")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise OplatError(f"malformed node kernel spec ({type(exc).__name__}: {exc})") from None

    @property
    def twins(self) -> tuple:
        return ()

    # ------------------------------------------------------------------ describing
    @property
    def n(self) -> int:
        shape = self.inputs[0]["shape"] if self.inputs else []
        return int(shape[0]) if shape else 1

    @property
    def kind(self) -> str:
        """``Conv+LeakyRelu``: the op types joined, for labels and per-type errors."""
        return "+".join(self.ops)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the conv-like ops (Conv, ConvTranspose, Gemm, MatMul); 0 otherwise."""
        total = 0
        for i, op in enumerate(self.ops):
            weight = next((c.get("shape") for c in self.consts if c["op"] == i and c["slot"] == 1 and not c.get("empty")), None)
            if weight is None or not self.inputs:
                continue
            x = self.inputs[0]["shape"] if i == 0 else None
            out = self.outputs[-1]["shape"] if self.outputs else None
            if op == "Conv" and out and len(weight) >= 3:
                total += int(np.prod(out)) * int(np.prod(weight[1:]))
            elif op == "ConvTranspose" and x and len(weight) >= 3:
                total += int(np.prod(x)) * int(np.prod(weight[1:]))
            elif op in ("Gemm", "MatMul") and out and len(weight) == 2:
                total += int(np.prod(out)) * int(weight[1] if self.attrs[i].get("transB") else weight[0])
        return total

    def label(self) -> str:
        """``Conv+LeakyRelu 16×360×640 (group 4, stride 2) int8``."""
        shape = self.inputs[0]["shape"] if self.inputs else self.outputs[0]["shape"] if self.outputs else []
        dims = "×".join(str(d) for d in shape[1:]) if len(shape) > 1 else "×".join(str(d) for d in shape)
        notes = []
        first = self.attrs[0]
        for name, word in (("group", "group"), ("strides", "stride"), ("dilations", "dilation"), ("kernel_shape", "k")):
            value = first.get(name)
            if value is None or value == 1 or (isinstance(value, list) and all(v == 1 for v in value)):
                continue
            notes.append(f"{word} {'×'.join(str(v) for v in value) if isinstance(value, list) else value}")
        if "mode" in first:
            notes.append(str(first["mode"]))
        for c in self.consts:
            if c["op"] == 0 and c["slot"] == 1 and self.ops[0] in ("Conv", "ConvTranspose"):
                notes.insert(0, f"→{c['shape'][0] if self.ops[0] == 'Conv' else c['shape'][1] * first.get('group', 1)}")
        batch = f"n{self.n} " if self.n != 1 else ""
        layout = " nhwc" if self.layout == "nhwc" else ""
        return f"{self.kind} {batch}{dims}{' (' + ', '.join(notes) + ')' if notes else ''} {self.precision}{layout}"

    @property
    def input_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(i["shape"]) for i in self.inputs]
