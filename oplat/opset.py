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
import tomllib
from dataclasses import dataclass
from pathlib import Path

from oplat.data import builtin_files
from oplat.errors import OplatError
from oplat.paths import check_plain_name
from oplat.spec import OpSpec

__all__ = ["OpSet", "load_opset", "builtin_opsets"]

_TOP_KEYS = {"name", "description", "precisions", "hw", "entry"}
_ENTRY_KEYS = {"op", "c", "channels", "c_out", "kernel", "arity", "mode", "scale", "block", "lo", "hi", "hw", "precision"}


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
        for spec in _expand(entry, where, default_prec, default_hw):
            if precisions is not None and spec.precision not in precisions:
                continue
            if spec.key not in seen:
                seen.add(spec.key)
                specs.append(spec)
    if precisions is not None and not specs:
        raise OplatError(f"{source}: no entries with precision {', '.join(precisions)}")
    return OpSet(name=name, description=str(doc.get("description", "")), specs=tuple(specs), source=source)


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
