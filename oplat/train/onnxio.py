"""ONNX-side helpers of training (no torch): architectures in and out of files, the input
size of an emitted model, activation quantization parameters of a QDQ model.

An architecture is stored as the JSON of :class:`oplat.arch.ArchSpec` — the form
``oplat search`` writes into its ``best.onnx`` metadata (``oplat.arch``)::

    {"scale": 3, "in_h": 360, "in_w": 640, "residual": "anchor", "clip": true,
     "layers": [{"c_out": 28, "kernel": 3, "act": "relu"}, …, {"c_out": 27, "act": "none"}]}
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from oplat.arch import ABPN, ArchSpec, Layer
from oplat.errors import OplatError

__all__ = [
    "ARCH_KEY",
    "BUILTIN_ARCHS",
    "activation_qparams",
    "arch_from_json",
    "arch_to_json",
    "load_arch",
    "set_metadata",
    "with_free_hw",
    "with_input_hw",
]

#: The metadata key of the architecture (shared with ``oplat search``'s best.onnx).
ARCH_KEY = "oplat.arch"
#: Architectures ``oplat train`` knows by name.
BUILTIN_ARCHS = {"abpn": ABPN}


def arch_to_json(arch: ArchSpec) -> str:
    return json.dumps(asdict(arch), separators=(",", ":"))


def arch_from_json(data: object, *, where: str) -> ArchSpec:
    """An ArchSpec from its JSON object (a dict); one clear error naming ``where``."""
    if not isinstance(data, dict):
        raise OplatError(f"{where}: an architecture is a JSON object with scale, in_h, in_w, layers, residual, clip")
    known = {"scale", "in_h", "in_w", "layers", "residual", "clip"}
    extra = sorted(set(data) - known)
    if extra:
        raise OplatError(f"{where}: unknown architecture field(s) {', '.join(extra)}; known: {', '.join(sorted(known))}")
    missing = [k for k in ("scale", "in_h", "in_w", "layers") if k not in data]
    if missing:
        raise OplatError(f"{where}: the architecture lacks {', '.join(missing)}")
    raw_layers = data["layers"]
    if not isinstance(raw_layers, list) or not raw_layers:
        raise OplatError(f"{where}: layers must be a non-empty list of {{\"c_out\": N, \"kernel\": K, \"act\": relu|none}}")
    layers = []
    for i, raw in enumerate(raw_layers):
        if isinstance(raw, int) and not isinstance(raw, bool):
            raw = {"c_out": raw}
        if not isinstance(raw, dict) or set(raw) - {"c_out", "kernel", "act"}:
            raise OplatError(f"{where}: layers[{i}] must be {{\"c_out\": N, \"kernel\": K, \"act\": relu|none}}, got {raw!r}")
        try:
            layers.append(Layer(**raw))
        except TypeError as exc:
            raise OplatError(f"{where}: layers[{i}]: {exc}") from None
        except OplatError as exc:
            raise OplatError(f"{where}: layers[{i}]: {exc}") from None
    try:
        return ArchSpec(
            scale=data["scale"],
            in_h=data["in_h"],
            in_w=data["in_w"],
            layers=tuple(layers),
            residual=data.get("residual", "anchor"),
            clip=data.get("clip", True),
        )
    except OplatError as exc:
        raise OplatError(f"{where}: {exc}") from None


def load_arch(source: str) -> tuple[ArchSpec, str]:
    """(architecture, default run name) from a built-in name (``abpn``), an ``ARCH.json``
    or an ONNX file with ``oplat.arch`` metadata (``oplat search``'s best.onnx)."""
    if source.lower() in BUILTIN_ARCHS:
        return BUILTIN_ARCHS[source.lower()], source.lower()
    path = Path(source)
    if not path.is_file():
        raise OplatError(
            f"{source}: no such file; give an ARCH.json, a best.onnx written by `oplat search`, "
            f"or a built-in architecture ({', '.join(BUILTIN_ARCHS)})"
        )
    if path.suffix.lower() == ".onnx":
        from oplat.onnxgraph import load_onnx

        model = load_onnx(str(path))
        props = {p.key: p.value for p in model.metadata_props}
        if ARCH_KEY not in props:
            raise OplatError(
                f"{path}: this ONNX file has no {ARCH_KEY} metadata (only `oplat search` and `oplat train` "
                "write it); give the architecture as ARCH.json instead"
            )
        try:
            data = json.loads(props[ARCH_KEY])
        except json.JSONDecodeError as exc:
            raise OplatError(f"{path}: its {ARCH_KEY} metadata is not JSON ({exc})") from None
        stem = path.parent.name if path.stem in ("best", "best.int8") and path.parent.name else path.stem
        return arch_from_json(data, where=f"{path} ({ARCH_KEY})"), stem.split(".")[0]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise OplatError(f"{path}: cannot read it ({exc})") from None
    except json.JSONDecodeError as exc:
        raise OplatError(f"{path}: not JSON ({exc}); an architecture is an ArchSpec JSON object") from None
    return arch_from_json(data, where=str(path)), path.stem


def set_metadata(model: onnx.ModelProto, props: dict[str, str]) -> None:
    """Add or replace ``metadata_props`` entries."""
    existing = {p.key: p.value for p in model.metadata_props}
    existing.update(props)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, existing)


def _set_dims(value: onnx.ValueInfoProto, dims: list[int | str]) -> None:
    shape = value.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = d


def _resized(model: onnx.ModelProto, in_dims: list, out_dims: list) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if len(out.graph.input) != 1 or len(out.graph.output) != 1:
        raise OplatError("expected a network with one input and one output")
    _set_dims(out.graph.input[0], in_dims)
    _set_dims(out.graph.output[0], out_dims)
    del out.graph.value_info[:]  # shapes of the old size; ONNX Runtime infers them again
    return out


def with_input_hw(model: onnx.ModelProto, h: int, w: int, scale: int) -> onnx.ModelProto:
    """The same graph (nodes, weights, quantization parameters) declared for an
    ``h`` × ``w`` input: input (1, 3, h, w), output (1, 3, s·h, s·w)."""
    return _resized(model, [1, 3, h, w], [1, 3, scale * h, scale * w])


def with_free_hw(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph with free height and width, to run on whole images of any size."""
    return _resized(model, [1, 3, "H", "W"], [1, 3, "sH", "sW"])


def activation_qparams(qdq: onnx.ModelProto) -> dict[str, tuple[float, int]]:
    """{tensor: (scale, zero point)} of every QuantizeLinear of an activation in a QDQ
    model, keyed by the tensor's name in the FP32 graph (the scale initializer's name
    without ``_scale``: ORT names the output's quantizer ``y_scale`` even where it renamed
    the tensor before it)."""
    inits = {t.name: t for t in qdq.graph.initializer}
    out: dict[str, tuple[float, int]] = {}
    for node in qdq.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3:
            continue
        scale_name, zp_name = node.input[1], node.input[2]
        if scale_name not in inits or zp_name not in inits:
            continue
        scale = numpy_helper.to_array(inits[scale_name])
        zp = numpy_helper.to_array(inits[zp_name])
        if scale.size != 1:
            continue
        key = scale_name[: -len("_scale")] if scale_name.endswith("_scale") else node.input[0]
        out[key] = (float(np.float32(scale.reshape(()))), int(zp.reshape(())))
    return out
