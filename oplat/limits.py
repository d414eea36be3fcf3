"""Size guards: refuse work that cannot fit before anything is built or run.

A one-op model of 1×3×20000×20000 would ask for 12.8 GB, a 100,000-input concat takes
minutes just to build; neither gives a useful row, and both can take the machine down.
Every command that builds or runs models (``measure``, ``export``, the agent) asks
:func:`check_spec` / :func:`check_model` first and gets one clear line back.

Estimates are of **activation memory**: the bytes of every input and output tensor of the
model (a runtime holds at least those), plus weights. They are a floor, not a ceiling:
a runtime may need a few times more for workspaces and layout copies, which is why the
default limit is a fraction of the machine's memory, not all of it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from oplat.errors import OplatError

__all__ = [
    "AGENT_MAX_MEM_BYTES",
    "DEFAULT_MEM_FRACTION",
    "MAX_GRAPH_NODES",
    "MAX_INPUTS",
    "Limits",
    "check_model",
    "check_spec",
    "machine_memory_bytes",
    "model_bytes",
    "parse_size_bytes",
    "spec_bytes",
]

#: Default ``--max-mem``: this share of the machine's physical memory.
DEFAULT_MEM_FRACTION = 0.25
#: The agent's default is also at most this many bytes: its requests come from the
#: network, and a 200-byte request must not be able to take gigabytes (the estimate is a
#: floor: a Relu estimated at 2 GiB took 3.2 GB). One-op SR models at 1080p need < 100 MiB.
AGENT_MAX_MEM_BYTES = 1 << 30
#: Most graph inputs a one-op model may have (a concat's arity); 100,000 takes minutes to build.
MAX_INPUTS = 4096
#: Most nodes a model sent to the agent or measured whole may have.
MAX_GRAPH_NODES = 100_000

_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
_SIZE_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
               "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}


def machine_memory_bytes() -> int:
    """Physical memory of this machine in bytes (0 when it cannot be read)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def parse_size_bytes(text: str) -> int:
    """``4GiB``, ``512M``, ``2g``, ``1000000`` (bytes) → bytes. Units are binary (1 G = 2**30)."""
    import re

    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise OplatError(f"size {text!r} is not a memory size; write e.g. 4GiB, 512MiB or 2G")
    value = float(match.group(1)) * _SIZE_UNITS[unit]
    if value < 1:
        raise OplatError(f"size {text!r} must be at least 1 byte")
    return int(value)


def _human(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


@dataclass(frozen=True)
class Limits:
    """What one run may ask of the machine.

    Attributes:
        max_mem_bytes: most estimated activation + weight memory of one model, in bytes.
        max_inputs: most graph inputs of one model.
        max_nodes: most nodes of one model.
    """

    max_mem_bytes: int
    max_inputs: int = MAX_INPUTS
    max_nodes: int = MAX_GRAPH_NODES

    @classmethod
    def default(cls) -> Limits:
        total = machine_memory_bytes()
        return cls(max_mem_bytes=int(total * DEFAULT_MEM_FRACTION) if total else 4 * 2**30)

    @classmethod
    def for_agent(cls) -> Limits:
        """The agent's default: :meth:`default`, capped at :data:`AGENT_MAX_MEM_BYTES`."""
        return cls(max_mem_bytes=min(cls.default().max_mem_bytes, AGENT_MAX_MEM_BYTES))

    @classmethod
    def from_text(cls, max_mem: str | None) -> Limits:
        """``--max-mem`` as typed (None: the default share of this machine's memory)."""
        return cls.default() if max_mem is None else cls(max_mem_bytes=parse_size_bytes(max_mem))


def spec_bytes(spec) -> int:
    """Estimated bytes of one OpSpec's one-op model: inputs, output and weights.

    ``int8`` models keep a float copy of the input and output at their boundary (the
    QDQ form takes and returns float tensors), so they count at 4 bytes too.
    """
    if spec.op == "onnx":  # any ONNX kernel: its inputs, constants and outputs, at 4 bytes
        shapes = [i["shape"] for i in spec.inputs] + [c.get("shape", []) for c in spec.consts if not c.get("empty")]
        shapes += [o["shape"] for o in spec.outputs]
        return 4 * sum(_prod(s) for s in shapes)
    numel = 0
    for shape in spec.input_shapes:
        numel += _prod(shape)
    numel += _prod(spec.output_shape)
    weights = 0
    if spec.op in ("conv", "conv+relu"):
        weights = spec.c * spec.c_out * spec.kernel * spec.kernel
    return 4 * (numel + weights)


def check_spec(spec, limits: Limits, *, where: str = "") -> None:
    """Raise :class:`OplatError` when ``spec``'s model would break ``limits``."""
    prefix = f"{where}: " if where else ""
    inputs = len(spec.input_shapes)
    if inputs > limits.max_inputs:
        raise OplatError(
            f"{prefix}{spec.label()} has {inputs} inputs, over the limit of {limits.max_inputs}; "
            "use a smaller arity"
        )
    need = spec_bytes(spec)
    if need > limits.max_mem_bytes:
        raise OplatError(
            f"{prefix}{spec.label()} needs about {_human(need)} of tensors, over the limit of "
            f"{_human(limits.max_mem_bytes)}; use a smaller shape or raise --max-mem"
        )


def model_bytes(model) -> int:
    """Estimated bytes of an ONNX model's tensors: every graph input, output and
    intermediate value with a static shape (after shape inference), plus initializers.

    Tensors whose shape is unknown count as zero: the estimate is a floor."""
    import onnx
    from onnx import shape_inference

    try:
        inferred = shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
    except Exception:  # shape inference is best effort; the declared shapes still count
        inferred = model
    graph = inferred.graph
    total = 0
    seen: set[str] = set()
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        if value.name in seen:
            continue
        seen.add(value.name)
        t = value.type.tensor_type
        if not t.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in t.shape.dim]
        if any(d <= 0 for d in dims):
            continue
        try:
            size = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).itemsize
        except Exception:
            size = 4
        total += _prod(dims) * size
    for init in graph.initializer:
        if init.name in seen:
            continue
        try:
            size = onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
        except Exception:
            size = 4
        total += _prod(init.dims) * size
    return total


def check_model(model, limits: Limits, *, what: str = "the model") -> None:
    """Raise :class:`OplatError` when an ONNX model would break ``limits``."""
    graph = model.graph
    if len(graph.node) > limits.max_nodes:
        raise OplatError(f"{what} has {len(graph.node)} nodes, over the limit of {limits.max_nodes}")
    if len(graph.input) > limits.max_inputs:
        raise OplatError(f"{what} has {len(graph.input)} inputs, over the limit of {limits.max_inputs}")
    need = model_bytes(model)
    if need > limits.max_mem_bytes:
        raise OplatError(
            f"{what} needs about {_human(need)} of tensors, over the limit of {_human(limits.max_mem_bytes)}; "
            "use smaller shapes or raise the memory limit"
        )


def _prod(dims) -> int:
    out = 1
    for d in dims:
        out *= int(d)
    return out
