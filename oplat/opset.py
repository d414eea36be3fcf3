"""Op sets: TOML files that declare what to measure, expanded into OpSpecs.

An op set is a name, a description, default precisions and sizes, and a list of
``[[entry]]`` tables. In an entry every field may be a value or a list of values; lists
expand as a grid (cartesian product). Fields:

- ``op`` (required): one of :data:`oplat.spec.OPS`.
- ``c`` (input channels), or ``channels`` (sets ``c`` and ``c_out`` equal, for convs).
- ``c_out``, ``kernel``, ``arity``, ``mode``, ``scale``, ``block``, ``lo``, ``hi``: op attributes.
- ``hw``: a list of ``[H, W]`` pairs (defaults to the set's ``hw``).
- ``precision``: defaults to the set's ``precisions``.

Built-in sets resolve by name (``sr-core``, ``quick``) from the package; a path works too.
Every problem names the file, the entry and the field.
"""

from __future__ import annotations

import itertools
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from oplat.data import builtin_files
from oplat.errors import OplatError
from oplat.paths import check_plain_name
from oplat.build import OPSET as OPSET_VERSION
from oplat.build import complete_nodespec
from oplat.nodespec import NodeSpec
from oplat.spec import OPS, OpSpec

__all__ = ["OpSet", "builtin_opsets", "entry_text", "load_opset", "opset_toml"]

_TOP_KEYS = {"name", "description", "precisions", "hw", "entry"}
_ENTRY_KEYS = {"op", "c", "channels", "c_out", "kernel", "arity", "mode", "scale", "block", "lo", "hi", "hw", "n", "precision"}
#: Fields of an entry naming any ONNX op (see the module docstring).
_GENERIC_KEYS = {"op", "inputs", "consts", "attrs", "slots", "precision", "outputs"}
#: Element type of a generic entry's activation inputs, by precision.
_INPUT_ELEM = {"fp32": "float", "fp16": "float16", "int8": "uint8"}


@dataclass(frozen=True)
class OpSet:
    name: str
    description: str
    specs: tuple[OpSpec, ...]
    source: str


def builtin_opsets() -> dict[str, Path]:
    """Built-in op set names -> their TOML files."""
    return builtin_files("opsets")


def _resolve(name_or_path: str) -> tuple[str, bytes]:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists() or "/" in name_or_path:
        try:
            return str(path), path.read_bytes()
        except OSError as exc:
            raise OplatError(f"cannot read op set {path} ({exc.strerror}); give a built-in name or an existing .toml path") from None
    builtins = builtin_opsets()
    if name_or_path not in builtins:
        raise OplatError(
            f"unknown op set {name_or_path!r}; built-in sets: {', '.join(builtins)} (or give a path to a .toml file)"
        )
    return f"{name_or_path} (built-in)", builtins[name_or_path].read_bytes()


def load_opset(name_or_path: str, *, precisions: list[str] | None = None) -> OpSet:
    """Load and validate an op set; ``precisions`` keeps only those precisions."""
    source, data = _resolve(name_or_path)
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise OplatError(f"{source}: malformed TOML: {exc}") from None
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise OplatError(f"{source}: unknown top-level key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_TOP_KEYS))}")
    name = doc.get("name") or Path(source.split(" ")[0]).stem
    check_plain_name(name, what="op set name", where=source)
    entries = doc.get("entry")
    if not isinstance(entries, list) or not entries:
        raise OplatError(f"{source}: no [[entry]] tables; an op set needs at least one entry")
    default_prec = _as_list(doc.get("precisions", ["fp32"]))
    default_hw = doc.get("hw")
    specs: list[OpSpec] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries, start=1):
        where = f"{source}: entry {index}" + (f" ({entry.get('op')})" if isinstance(entry, dict) and "op" in entry else "")
        expand = _expand_generic if isinstance(entry, dict) and _is_generic(entry.get("op")) else _expand
        for spec in expand(entry, where, default_prec, default_hw):
            if precisions is not None and spec.precision not in precisions:
                continue
            if spec.key not in seen:
                seen.add(spec.key)
                specs.append(spec)
    if precisions is not None and not specs:
        raise OplatError(f"{source}: no entries with precision {', '.join(precisions)}")
    return OpSet(name=name, description=str(doc.get("description", "")), specs=tuple(specs), source=source)


def _is_generic(op: object) -> bool:
    """An entry whose op is an ONNX op type (``PRelu``, ``Conv+LeakyRelu``), not a built-in family."""
    return isinstance(op, str) and op not in OPS and op[:1].isupper()


def _expand_generic(entry: dict, where: str, default_prec: list, default_hw: object) -> list:
    """A generic entry → NodeSpecs (one per precision), checked against ONNX's op schemas
    and shape inference."""
    import onnx

    unknown = sorted(set(entry) - _GENERIC_KEYS)
    if unknown:
        raise OplatError(f"{where}: unknown field(s) {', '.join(unknown)} for an ONNX op entry; allowed: {', '.join(sorted(_GENERIC_KEYS))}")
    ops = tuple(entry["op"].split("+"))
    for op in ops:
        try:
            onnx.defs.get_schema(op, max_inclusive_version=OPSET_VERSION)
        except Exception:
            raise OplatError(f"{where}: field op: {op!r} is not an ONNX operator (see onnx's operator list)") from None
    attrs = entry.get("attrs", {})
    attrs = attrs if isinstance(attrs, list) else [attrs] + [{}] * (len(ops) - 1)
    if len(attrs) != len(ops) or not all(isinstance(a, dict) for a in attrs):
        raise OplatError(f"{where}: field attrs must be a table (or one table per op of {'+'.join(ops)})")
    for op, a in zip(ops, attrs):
        known = set(onnx.defs.get_schema(op, max_inclusive_version=OPSET_VERSION).attributes)
        bad = sorted(set(a) - known)
        if bad:
            raise OplatError(f"{where}: field attrs: {op} has no attribute {', '.join(bad)} (it has: {', '.join(sorted(known)) or 'none'})")
    inputs = entry.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(
        isinstance(shape, list) and shape and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape) for shape in inputs
    ):
        raise OplatError(f"{where}: field inputs must be a list of shapes of positive integers, e.g. [[1, 16, 360, 640]]")
    consts = entry.get("consts", [])
    if not isinstance(consts, list) or not all(isinstance(c, dict) and "slot" in c for c in consts):
        raise OplatError(f"{where}: field consts must be a list of tables with slot and shape (or value), e.g. [{{slot = 1, shape = [16, 1, 1]}}]")
    out = []
    for precision in _as_list(entry.get("precision", default_prec)):
        if precision not in _INPUT_ELEM:
            raise OplatError(f"{where}: field precision: {precision!r}; an ONNX op entry takes {', '.join(_INPUT_ELEM)}")
        const_specs = []
        for c in consts:
            c = {"op": 0, **c}
            if "value" in c and "shape" not in c:
                c["shape"] = [len(_as_list(c["value"]))]
            c.setdefault("elem", "float16" if precision == "fp16" and not c.get("q") else "float")
            const_specs.append(c)
        slots = entry.get("slots") or [max([len(inputs)] * (i == 0) + [c["slot"] + 1 for c in const_specs if c["op"] == i] + [1]) for i in range(len(ops))]
        try:
            spec = NodeSpec(
                ops=ops, attrs=tuple(attrs),
                inputs=tuple({"shape": list(shape), "elem": _INPUT_ELEM[precision]} for shape in inputs),
                consts=tuple(const_specs), slots=tuple(slots), precision=precision,
            )
            spec = complete_nodespec(spec)
        except OplatError as exc:
            raise OplatError(f"{where}: {exc}") from None
        out.append(spec)
    return out


def _as_list(value: object) -> list:
    return value if isinstance(value, list) else [value]


def _check_hw(value: object, where: str) -> list[tuple[int, int]]:
    if value is None:
        raise OplatError(f"{where}: no hw; set hw = [[H, W], ...] in the entry or at the top of the file")
    pairs = value if isinstance(value, list) and value and isinstance(value[0], list) else [value]
    out = []
    for pair in pairs:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair)
        ):
            raise OplatError(f"{where}: hw must be [H, W] pairs of positive integers, got {pair!r}")
        out.append((pair[0], pair[1]))
    return out


def _expand(entry: object, where: str, default_prec: list, default_hw: object) -> list[OpSpec]:
    if not isinstance(entry, dict):
        raise OplatError(f"{where}: must be a table")
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise OplatError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_ENTRY_KEYS))}")
    if "op" not in entry:
        raise OplatError(f"{where}: missing field 'op'")
    if "channels" in entry and ("c" in entry or "c_out" in entry):
        raise OplatError(f"{where}: give either channels (c = c_out) or c / c_out, not both")
    fields = {k: _as_list(v) for k, v in entry.items() if k not in ("hw", "channels")}
    empty = sorted(k for k, v in fields.items() if not v) + (["channels"] if entry.get("channels") == [] else [])
    if empty:
        raise OplatError(f"{where}: field {empty[0]} is an empty list; give at least one value (lists expand as a grid)")
    fields.setdefault("precision", default_prec)
    if "channels" in entry:
        fields["c"] = _as_list(entry["channels"])
    if "c" not in fields:
        raise OplatError(f"{where}: missing field 'c' (input channels) or 'channels'")
    hws = _check_hw(entry.get("hw", default_hw), where)
    names = list(fields)
    specs = []
    for combo in itertools.product(*(fields[n] for n in names)):
        values = dict(zip(names, combo))
        if "channels" in entry:
            values["c_out"] = values["c"]
        for h, w in hws:
            try:
                specs.append(OpSpec(h=h, w=w, **values))
            except OplatError as exc:
                raise OplatError(f"{where}: {exc}") from None
            except TypeError as exc:
                raise OplatError(f"{where}: {exc}") from None
    return specs


# ---------------------------------------------------------------------- writing
def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if not isinstance(value, float) or value == value and abs(value) != float("inf") else (
            "nan" if value != value else ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _entry_fields(spec) -> dict:
    if isinstance(spec, NodeSpec):
        fields = {"op": spec.kind, "inputs": [i["shape"] for i in spec.inputs]}
        if spec.consts:
            fields["consts"] = list(spec.consts)
        if any(spec.attrs):
            fields["attrs"] = list(spec.attrs) if len(spec.attrs) > 1 else spec.attrs[0]
        fields["slots"] = list(spec.slots)
        fields["precision"] = spec.precision
        return fields
    fields = {k: v for k, v in spec.as_dict().items() if k not in ("h", "w", "layout")}
    fields["hw"] = [[spec.h, spec.w]]
    return fields


def entry_text(spec) -> str:
    """The op-set entry that measures ``spec``, on one line (``op = "conv", c = 3, …``):
    the same fields :func:`opset_toml` writes, for messages that say what to add."""
    return ", ".join(f"{k} = {_toml_value(v)}" for k, v in _entry_fields(spec).items())


def opset_toml(name: str, specs, *, description: str = "") -> str:
    """An op-set file that measures exactly ``specs`` (``predict --missing-opset``)."""
    lines = [f"name = {_toml_value(name)}", f"description = {_toml_value(description)}", ""]
    for spec in specs:
        lines.append(f"# {spec.label()}")
        lines.append("[[entry]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in _entry_fields(spec).items()]
        lines.append("")
    return "\n".join(lines)
