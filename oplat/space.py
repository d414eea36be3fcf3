"""SearchSpace: which plain SR networks a search may try, read from ``search/*.toml``.

Every network in a space has the same shape as ABPN::

    head    conv k×k 3 → w₀, ReLU
    hidden  depth × (conv k×k w_{i-1} → w_i, ReLU)     depth_min ≤ depth ≤ depth_max
    tail    one conv k×k → 3·scale² per entry of ``tail`` (its activation)
    then    residual (anchor / folded / none), depth-to-space ×scale, optional Clip [0, 1]

The widths w₀ … w_depth come from ``channels``; ``widths = "uniform"`` uses one width for
all of them, ``"per-layer"`` chooses each. ABPN is depth 4, width 28,
tail ``["relu", "none"]``, anchor, clip.

A space file holds these keys (the same names as the :class:`SearchSpace` fields)::

    name = "abpn"                      # optional; defaults to the file name
    description = "…"                  # optional
    scale = 3                          # 2, 3 or 4
    in_h = 360                         # LR input height, pixels
    in_w = 640                         # LR input width, pixels
    depth_min = 2                      # hidden layers after the head, inclusive range
    depth_max = 8
    channels = [8, 16, 24, 28, 32]     # width choices, each a multiple of channel_align
    channel_align = 4                  # the device's preferred channel multiple
    widths = "uniform"                 # or "per-layer" (optional, default "uniform")
    kernel = 3                         # optional, odd
    activation = "relu"                # optional; relu is the only one
    tail = ["relu", "none"]            # optional
    residuals = ["anchor", "folded"]   # optional, default ["anchor"]
    clip = true                        # optional

Optuna parameters (:func:`arch_from_trial`): ``depth`` (int), ``width`` (uniform) or
``width_0`` … ``width_<depth>`` (per-layer), ``residual``. A parameter with only one
possible value is not suggested, so a fixed trial need not give it.
"""

from __future__ import annotations

import hashlib
import json
import random
import tomllib
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from oplat.arch import ACTIVATIONS, RESIDUALS, SCALES, ArchSpec, Layer
from oplat.data import builtin_dir
from oplat.errors import OplatError

__all__ = [
    "SEARCH_ACTIVATIONS",
    "WIDTH_MODES",
    "SearchSpace",
    "Trial",
    "arch_from_trial",
    "builtin_spaces",
    "load_space",
    "sample_arch",
    "space_from_dict",
    "trial_params",
]

WIDTH_MODES = ("uniform", "per-layer")
#: Activations the searched (head and hidden) layers may use.
SEARCH_ACTIVATIONS = ("relu",)


class Trial(Protocol):
    """The part of ``optuna.trial.Trial`` (and ``FixedTrial``) that :func:`arch_from_trial` uses."""

    def suggest_int(self, name: str, low: int, high: int) -> int: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


@dataclass(frozen=True)
class SearchSpace:
    """A family of plain SR networks (see the module docstring for the shape).

    Attributes:
        name: what studies and result folders are called.
        scale: upscale factor, one of 2, 3, 4.
        in_h, in_w: LR input height and width, pixels.
        depth_min, depth_max: inclusive range of hidden c→c conv+ReLU layers after the head.
        channels: width choices (output channels of head and hidden layers), ascending.
        channel_align: every choice is a multiple of this (the device's channel multiple).
        widths: ``uniform`` (one width for all) or ``per-layer``.
        kernel: square kernel size of every conv, odd.
        activation: activation of head and hidden layers (``relu``).
        tail: activation of each tail conv (each outputs 3·scale² channels).
        residuals: residual modes to choose from (see :mod:`oplat.arch`).
        clip: end every network with Clip to [0, 1].
        description: free text.
        source: where it was loaded from (not part of the identity).
    """

    name: str
    scale: int
    in_h: int
    in_w: int
    depth_min: int
    depth_max: int
    channels: tuple[int, ...]
    channel_align: int
    widths: str = "uniform"
    kernel: int = 3
    activation: str = "relu"
    tail: tuple[str, ...] = ("relu", "none")
    residuals: tuple[str, ...] = ("anchor",)
    clip: bool = True
    description: str = ""
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for name in ("channels", "tail", "residuals"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        problem = self.problem()
        if problem:
            where = self.source or f"search space {self.name!r}"
            raise OplatError(f"{where}: {problem}")

    def problem(self) -> str | None:
        """Why this space is invalid, as ``field 'x': problem; fix``, or None."""
        if not isinstance(self.name, str) or not self.name.strip():
            return "field 'name': must be a non-empty string"
        if not isinstance(self.description, str):
            return "field 'description': must be a string"
        if not _is_int(self.scale) or self.scale not in SCALES:
            return f"field 'scale': must be one of {', '.join(map(str, SCALES))}, got {self.scale!r}"
        for name in ("in_h", "in_w", "channel_align"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                return f"field '{name}': must be a positive integer, got {value!r}"
        for name in ("depth_min", "depth_max"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                return f"field '{name}': must be an integer >= 0, got {value!r}"
        if self.depth_min > self.depth_max:
            return (
                f"fields 'depth_min'/'depth_max': range is inverted ({self.depth_min} > {self.depth_max}); "
                "depth_min must be <= depth_max"
            )
        ch = self.channels
        if not isinstance(ch, tuple) or not ch:
            return "field 'channels': must be a non-empty list of positive integers"
        bad = [c for c in ch if not _is_int(c) or c < 1]
        if bad:
            return f"field 'channels': {bad[0]!r} is not a positive integer"
        if list(ch) != sorted(set(ch)):
            return f"field 'channels': list each width once, in ascending order, got {list(ch)}"
        unaligned = [c for c in ch if c % self.channel_align]
        if unaligned:
            return (
                f"field 'channels': {', '.join(map(str, unaligned))} "
                f"{'is not a multiple' if len(unaligned) == 1 else 'are not multiples'} of channel_align = "
                f"{self.channel_align}; use multiples of {self.channel_align} or lower channel_align"
            )
        if self.widths not in WIDTH_MODES:
            return f"field 'widths': must be one of {', '.join(WIDTH_MODES)}, got {self.widths!r}"
        if not _is_int(self.kernel) or self.kernel < 1 or self.kernel % 2 == 0:
            return f"field 'kernel': must be an odd positive integer, got {self.kernel!r}"
        if self.activation not in SEARCH_ACTIVATIONS:
            return f"field 'activation': must be one of {', '.join(SEARCH_ACTIVATIONS)}, got {self.activation!r}"
        if not isinstance(self.tail, tuple) or not self.tail:
            return 'field \'tail\': must be a non-empty list of activations, e.g. ["relu", "none"]'
        bad = [a for a in self.tail if a not in ACTIVATIONS]
        if bad:
            return f"field 'tail': {bad[0]!r} is not an activation; use {' or '.join(map(repr, ACTIVATIONS))}"
        if not isinstance(self.residuals, tuple) or not self.residuals:
            return f"field 'residuals': must be a non-empty list drawn from {', '.join(RESIDUALS)}"
        bad = [r for r in self.residuals if r not in RESIDUALS]
        if bad:
            return f"field 'residuals': unknown mode {bad[0]!r}; known: {', '.join(RESIDUALS)}"
        if len(set(self.residuals)) != len(self.residuals):
            return f"field 'residuals': list each mode once, got {list(self.residuals)}"
        if not isinstance(self.clip, bool):
            return f"field 'clip': must be true or false, got {self.clip!r}"
        return None

    @property
    def fingerprint(self) -> str:
        """Stable hash (16 hex digits) of what the space searches.

        Name, description and source are left out: renaming or re-describing a space keeps
        its studies valid, while any change to the networks it can produce changes this.
        """
        data = {k: v for k, v in asdict(self).items() if k not in ("name", "description", "source")}
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def as_toml_dict(self) -> dict[str, Any]:
        """The fields as a space file writes them (tuples as lists, no ``source``)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if k != "source"}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---------------------------------------------------------------------- loading
_FIELDS = tuple(f.name for f in fields(SearchSpace) if f.name != "source")
_REQUIRED = tuple(f.name for f in fields(SearchSpace) if f.name not in ("source", "name") and f.default is MISSING)


def _builtin_dir() -> Path:
    """The built-in search-space folder (``search/``, shipped as ``oplat/search_spaces``)."""
    return builtin_dir("search")


def builtin_spaces() -> tuple[str, ...]:
    """Names of the search spaces that ship with oplat."""
    folder = _builtin_dir()
    if not folder.is_dir():
        return ()
    return tuple(sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml")))


def load_space(path_or_name: str | Path) -> SearchSpace:
    """Read and validate a search space: a built-in name (``abpn``) or a path to a .toml.

    A :class:`~pathlib.Path`, or a string that ends in ``.toml`` or holds a path separator,
    is a path; any other string is a built-in name. Every problem raises
    :class:`OplatError` naming the file and the field.
    """
    text, label, stem = _read(path_or_name)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise OplatError(f"{label}: malformed TOML: {e}") from None
    return space_from_dict(data, source=label, default_name=stem)


def space_from_dict(data: dict[str, Any], *, source: str = "<dict>", default_name: str = "") -> SearchSpace:
    """Validate a parsed space file (see the module docstring for the keys)."""
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise OplatError(
            f"{source}: unknown field(s) {', '.join(map(repr, unknown))}; known fields: {', '.join(_FIELDS)}"
        )
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise OplatError(f"{source}: missing field(s) {', '.join(map(repr, missing))}")
    values = dict(data)
    values.setdefault("name", default_name)
    for key in ("channels", "tail", "residuals"):
        if key in values:
            if not isinstance(values[key], list):
                raise OplatError(f"{source}: field '{key}': must be a list, got {values[key]!r}")
            values[key] = tuple(values[key])
    return SearchSpace(**values, source=source)


def _read(path_or_name: str | Path) -> tuple[str, str, str]:
    """(text, label for messages, file stem)."""
    if isinstance(path_or_name, Path) or path_or_name.endswith(".toml") or "/" in path_or_name or "\\" in path_or_name:
        path = Path(path_or_name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise OplatError(f"{path}: no such search-space file; built-in spaces: {_builtin_list()}") from None
        except OSError as e:
            raise OplatError(f"{path}: cannot read: {e.strerror or e}") from None
        label, stem = str(path), path.stem
    else:
        entry = _builtin_dir().joinpath(f"{path_or_name}.toml")
        if not entry.is_file():
            raise OplatError(
                f"unknown search space {path_or_name!r}; built-in: {_builtin_list()}; or give a path to a .toml file"
            )
        data = entry.read_bytes()
        label, stem = f"{path_or_name}.toml (built-in)", path_or_name
    try:
        return data.decode("utf-8"), label, stem
    except UnicodeDecodeError as e:
        raise OplatError(f"{label}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None


def _builtin_list() -> str:
    return ", ".join(builtin_spaces()) or "(none)"


# ---------------------------------------------------------------------- trials
def arch_from_trial(trial: Trial, space: SearchSpace) -> ArchSpec:
    """The network an Optuna trial picks from ``space``; uses only ``trial.suggest_*``."""
    depth = _int(trial, "depth", space.depth_min, space.depth_max)
    if space.widths == "uniform":
        widths = [_cat(trial, "width", space.channels)] * (depth + 1)
    else:
        widths = [_cat(trial, f"width_{i}", space.channels) for i in range(depth + 1)]
    residual = _cat(trial, "residual", space.residuals)
    c_last = 3 * space.scale * space.scale
    layers = [Layer(w, space.kernel, space.activation) for w in widths]
    layers += [Layer(c_last, space.kernel, act) for act in space.tail]
    return ArchSpec(space.scale, space.in_h, space.in_w, tuple(layers), residual, space.clip)


def _int(trial: Trial, name: str, low: int, high: int) -> int:
    return low if low == high else int(trial.suggest_int(name, low, high))


def _cat(trial: Trial, name: str, choices: tuple) -> Any:
    return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, choices)


def trial_params(space: SearchSpace, arch: ArchSpec) -> dict[str, Any]:
    """The Optuna parameters that make :func:`arch_from_trial` return ``arch``.

    For ``optuna.trial.FixedTrial`` or ``study.enqueue_trial`` (seeding a search with a known
    network). Raises :class:`OplatError` saying why when ``space`` cannot express ``arch``.
    """
    where = f"search space {space.name!r} cannot express this network"
    for name, want in (("scale", space.scale), ("in_h", space.in_h), ("in_w", space.in_w), ("clip", space.clip)):
        if getattr(arch, name) != want:
            raise OplatError(f"{where}: its {name} is {getattr(arch, name)!r}, the space's is {want!r}")
    if arch.residual not in space.residuals:
        raise OplatError(f"{where}: residual {arch.residual!r} is not in residuals {list(space.residuals)}")
    n_tail = len(space.tail)
    body, tail = arch.layers[:-n_tail], arch.layers[-n_tail:]
    depth = len(body) - 1
    if not space.depth_min <= depth <= space.depth_max:
        raise OplatError(f"{where}: it has depth {depth} (after the head), the space allows {space.depth_min}…{space.depth_max}")
    want_tail = tuple(Layer(3 * space.scale**2, space.kernel, a) for a in space.tail)
    if tuple(tail) != want_tail:
        raise OplatError(f"{where}: its tail is {list(tail)}, the space's is {list(want_tail)}")
    for i, layer in enumerate(body):
        if layer.kernel != space.kernel or layer.act != space.activation:
            raise OplatError(f"{where}: layer {i} is {layer}, the space uses kernel {space.kernel}, {space.activation}")
        if layer.c_out not in space.channels:
            raise OplatError(f"{where}: layer {i} width {layer.c_out} is not in channels {list(space.channels)}")
    params: dict[str, Any] = {}
    if space.depth_min != space.depth_max:
        params["depth"] = depth
    widths = [layer.c_out for layer in body]
    if space.widths == "uniform":
        if len(set(widths)) != 1:
            raise OplatError(f"{where}: its widths {widths} differ and the space's widths are uniform")
        if len(space.channels) > 1:
            params["width"] = widths[0]
    elif len(space.channels) > 1:
        params.update({f"width_{i}": w for i, w in enumerate(widths)})
    if len(space.residuals) > 1:
        params["residual"] = arch.residual
    return params


class _RandomTrial:
    """A stand-in trial that draws every parameter uniformly from ``rng``."""

    def __init__(self, rng: np.random.Generator | random.Random) -> None:
        self._rng = rng

    def suggest_int(self, name: str, low: int, high: int) -> int:
        if isinstance(self._rng, random.Random):
            return self._rng.randint(low, high)
        return int(self._rng.integers(low, high + 1))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        if isinstance(self._rng, random.Random):
            return self._rng.choice(list(choices))
        return choices[int(self._rng.integers(len(choices)))]


def sample_arch(space: SearchSpace, rng: np.random.Generator | random.Random | int) -> ArchSpec:
    """A random network from ``space``: every parameter uniform (an int seeds a new generator)."""
    if _is_int(rng):
        rng = np.random.default_rng(rng)
    return arch_from_trial(_RandomTrial(rng), space)
