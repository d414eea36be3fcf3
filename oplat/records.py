"""The records that cross module boundaries: frozen, validated, with ``to_json``/``from_json``.

A table row, its statistics, a runtime's per-node profile, a fusion verdict and the
composition file are written by one module and read by several (measure → table →
predict → validate → search → reports). Here each has one definition, one reader that
validates it and one writer, so no module looks a statistic up as ``row[f"{stat}_ms"]``.

Files stay byte-compatible: a :class:`Row` keeps the JSON object it was read from (or
built as) in :attr:`Row.data`, so re-writing a row writes the same line, fields oplat
does not interpret included. Schema (table rows, ``schema_version`` 1)::

    schema_version, key, spec{op, c, h, w, n, ...}, label, opset, device{fingerprint},
    macs, measured_at, status ("ok" | "unsupported" | "error"),
    ok rows:     median_ms, p10_ms, p90_ms, mean_ms, std_ms, runs, rounds, inner,
                 round_medians_ms, spread_pct, [timing_note], noisy, extra_rounds,
                 runs_per_round, samples_ms, [discarded_rounds_ms], policy{...},
                 [kernel_ms, layout_ms, kernels[{name, op_type, exec_type, median_ms,
                 layout}], profile_runs], [profile_error]
    failed rows: message, [command, output_tail]
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from oplat.errors import OplatError
from oplat.nodespec import NodeSpec
from oplat.spec import OpSpec


def spec_from_dict(data: dict) -> OpSpec | NodeSpec:
    """A row's spec: a built-in family kernel, or (``op = "onnx"``) any ONNX kernel."""
    return NodeSpec.from_dict(data) if data.get("op") == "onnx" else OpSpec.from_dict(data)

__all__ = [
    "COMPOSE_SCHEMA_VERSION",
    "SCHEMA_VERSION",
    "STATS",
    "STATUSES",
    "Composition",
    "CompositionFile",
    "FusionVerdict",
    "KernelProfile",
    "NetworkTiming",
    "Row",
    "Stats",
    "spec_from_dict",
]

#: Version of a table row's layout.
SCHEMA_VERSION = 1
#: Version of a ``<table>.compose.json`` file's layout (files written before it had one read as 1).
COMPOSE_SCHEMA_VERSION = 1
STATUSES = ("ok", "unsupported", "error")
#: Statistics a row can be read on (``median_ms`` is in every ok row, the others where
#: the device gave samples; a summary-only row falls back to its median).
STATS = ("median", "p10", "p90", "mean")

_REQUIRED = ("schema_version", "key", "spec", "status", "device")
#: Numeric fields checked where present, finite and >= 0.
_NUMBERS = ("median_ms", "p10_ms", "p90_ms", "mean_ms", "std_ms", "kernel_ms", "layout_ms", "spread_pct", "macs")
_DEVICE_STRINGS = ("name", "runtime", "runtime_version", "cpu", "cpu_isa")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite_nonneg(value: object) -> bool:
    return _is_number(value) and math.isfinite(value) and value >= 0


# ---------------------------------------------------------------------------- statistics
@dataclass(frozen=True)
class Stats:
    """Statistics of one entry's samples, all in ms. ``p10_ms`` … ``std_ms`` are None for a
    summary-only measurement (a device tool that prints a median and nothing else)."""

    median_ms: float
    p10_ms: float | None = None
    p90_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> Stats:
        """Median, p10, p90, mean and sample std of ``samples_ms``."""
        a = np.asarray(samples_ms, dtype=np.float64)
        return cls(
            median_ms=float(np.median(a)),
            p10_ms=float(np.percentile(a, 10)),
            p90_ms=float(np.percentile(a, 90)),
            mean_ms=float(a.mean()),
            std_ms=float(a.std(ddof=1)) if a.size > 1 else 0.0,
        )

    def of(self, stat: str) -> float:
        """The statistic ``stat`` (one of :data:`STATS`) in ms; the median where a
        summary-only measurement lacks it."""
        if stat not in STATS:
            raise OplatError(f"unknown statistic {stat!r}; use one of {', '.join(STATS)}")
        value = getattr(self, f"{stat}_ms")
        return self.median_ms if value is None else value

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_json(cls, data: dict) -> Stats:
        return cls(**{name: data.get(name) for name in ("median_ms", "p10_ms", "p90_ms", "mean_ms", "std_ms")})


# ---------------------------------------------------------------------------- profiles
@dataclass(frozen=True)
class KernelProfile:
    """Per-node times from the runtime's own profiler, medians over profiled runs (ms).

    ``compute_ms`` sums the op's own kernels; ``layout_ms`` sums layout conversions
    (reorders) the runtime put around them, which a lone-op model over-counts. ``nodes``
    holds ``{name, op_type, exec_type, median_ms, layout}`` per profiled node.
    """

    compute_ms: float
    layout_ms: float
    nodes: list[dict] = field(default_factory=list)
    runs: int = 0

    def to_json(self) -> dict:
        return {"compute_ms": self.compute_ms, "layout_ms": self.layout_ms, "nodes": self.nodes, "runs": self.runs}

    @classmethod
    def from_json(cls, data: dict) -> KernelProfile:
        return cls(float(data["compute_ms"]), float(data["layout_ms"]), list(data.get("nodes") or []), int(data.get("runs", 0)))


@dataclass(frozen=True)
class NetworkTiming:
    """A whole network timed end to end (:func:`oplat.measure.time_networks`).

    ``stats`` of its kept samples (ms), ``noisy`` when its round medians disagreed by more
    than the policy allows, ``spread_pct`` that disagreement, ``rounds`` the rounds kept,
    ``profile`` the runtime's per-node times (None when not asked for or not available)."""

    stats: Stats
    noisy: bool
    spread_pct: float
    rounds: int
    profile: KernelProfile | None = None


# ---------------------------------------------------------------------------- table rows
def _bad(where: str, what: str) -> OplatError:
    return OplatError(f"{where}: {what}; remove or repair that line")


def _check_device(device: object, where: str) -> None:
    if not isinstance(device, dict):
        raise _bad(where, f"device must be an object (the fingerprint), got {type(device).__name__}")
    if not isinstance(device.get("name"), str) or not device["name"]:
        raise _bad(where, "device lacks its name")
    for name in _DEVICE_STRINGS[1:]:
        if name in device and not isinstance(device[name], str):
            raise _bad(where, f"device {name} must be a string, got {device[name]!r}")
    threads = device.get("threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise _bad(where, f"device threads must be a positive integer, got {threads!r}")
    if "options" in device and not isinstance(device["options"], dict):
        raise _bad(where, f"device options must be an object, got {device['options']!r}")


@dataclass(frozen=True)
class Row:
    """One latency-table line: an entry measured (``ok``) or not (``unsupported`` / ``error``).

    ``data`` is the JSON object as written; the typed fields are read from it once.
    """

    key: str
    spec: OpSpec | NodeSpec
    status: str
    device: dict
    stats: Stats | None = None
    message: str | None = None
    data: dict = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ reading
    @classmethod
    def from_json(cls, data: object, where: str = "row") -> Row:
        """Validate and read one row; every problem is an :class:`OplatError` naming
        ``where`` (``file:line``)."""
        if not isinstance(data, dict):
            raise OplatError(f"{where}: a table row must be a JSON object; remove or repair that line")
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise OplatError(f"{where}: row lacks {', '.join(missing)}; remove or repair that line")
        version = data["schema_version"]
        if version != SCHEMA_VERSION or isinstance(version, bool):
            raise OplatError(
                f"{where}: schema_version {version!r} is not {SCHEMA_VERSION}; "
                "re-measure with this oplat version or use the version that wrote it"
            )
        status = data["status"]
        if status not in STATUSES:
            raise OplatError(f"{where}: status {status!r} is not one of {', '.join(STATUSES)}")
        if not isinstance(data["key"], str) or not isinstance(data["spec"], dict):
            raise _bad(where, "key must be a string and spec an object")
        try:
            spec = spec_from_dict(data["spec"])
        except (OplatError, TypeError) as exc:
            raise OplatError(f"{where}: bad spec ({exc}); remove or repair that line") from None
        if spec.key != data["key"]:
            raise OplatError(f"{where}: key does not match spec; remove or repair that line")
        _check_device(data["device"], where)
        for name in _NUMBERS:
            if name in data and not _finite_nonneg(data[name]):
                raise _bad(where, f"{name} must be a finite number >= 0, got {data[name]!r}")
        stats = message = None
        if status == "ok":
            if "median_ms" not in data:
                raise _bad(where, "an ok row needs median_ms")
            samples = data.get("samples_ms")
            if samples is not None and (not isinstance(samples, list) or not all(_finite_nonneg(v) for v in samples)):
                raise _bad(where, "samples_ms must be a list of finite numbers >= 0")
            runs = data.get("runs")
            if runs is not None and (not isinstance(runs, int) or isinstance(runs, bool) or runs < 1):
                raise _bad(where, f"runs must be a positive integer, got {runs!r}")
            stats = Stats.from_json(data)
        else:
            message = data.get("message", "")
            if not isinstance(message, str):
                raise _bad(where, "message must be a string")
        return cls(key=data["key"], spec=spec, status=status, device=data["device"], stats=stats, message=message, data=data)

    def to_json(self) -> dict:
        """The row's JSON object, exactly as it is (or was) written."""
        return self.data

    # ------------------------------------------------------------------ building
    @staticmethod
    def _base(spec: OpSpec | NodeSpec, opset: str, fingerprint: dict) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "key": spec.key,
            "spec": spec.as_dict(),
            "label": spec.label(),
            "opset": opset,
            "device": fingerprint,
            "macs": spec.macs,
            "measured_at": _now(),
        }

    @classmethod
    def measured(cls, spec: OpSpec | NodeSpec, opset: str, fingerprint: dict, timing, policy, profile: KernelProfile | None,
                 profile_error: str | None = None) -> Row:
        """An ``ok`` row from a :class:`~oplat.timing.Timing` and the optional profile."""
        data = cls._base(spec, opset, fingerprint)
        data["status"] = "ok"
        data.update(timing.stats())
        data["noisy"] = timing.spread_pct > policy.agree_pct
        data["extra_rounds"] = timing.extra_rounds
        data["runs_per_round"] = timing.runs_per_round
        data["samples_ms"] = [round(s, 6) for s in timing.samples_ms]
        if timing.discarded_rounds_ms:
            data["discarded_rounds_ms"] = [[round(s, 6) for s in r] for r in timing.discarded_rounds_ms]
        data["policy"] = {"rounds": policy.rounds, "round_s": policy.round_s, "agree_pct": policy.agree_pct}
        if profile is not None:
            data["kernel_ms"] = profile.compute_ms
            data["layout_ms"] = profile.layout_ms
            data["kernels"] = profile.nodes
            data["profile_runs"] = profile.runs
        if profile_error:
            data["profile_error"] = profile_error
        return cls.from_json(data)

    @classmethod
    def failed(cls, spec: OpSpec | NodeSpec, opset: str, fingerprint: dict, status: str, exc: BaseException) -> Row:
        """An ``unsupported`` / ``error`` row; toolchain failures keep their command and output tail."""
        text = str(exc).strip().splitlines()
        data = cls._base(spec, opset, fingerprint)
        data["status"] = status
        data["message"] = f"{type(exc).__name__}: {text[0] if text else ''}"[:500]
        if getattr(exc, "argv", None):
            data["command"] = shlex.join(exc.argv)
        if getattr(exc, "output_tail", None):
            data["output_tail"] = exc.output_tail
        return cls.from_json(data)

    # ------------------------------------------------------------------ reading fields
    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def label(self) -> str:
        return self.data.get("label") or self.spec.label()

    @property
    def noisy(self) -> bool:
        return bool(self.data.get("noisy"))

    @property
    def spread_pct(self) -> float | None:
        return self.data.get("spread_pct")

    @property
    def runs(self) -> int | None:
        return self.data.get("runs")

    @property
    def measured_at(self) -> str | None:
        return self.data.get("measured_at")

    @property
    def kernel_ms(self) -> float | None:
        return self.data.get("kernel_ms")

    @property
    def layout_ms(self) -> float | None:
        return self.data.get("layout_ms")

    @property
    def kernels(self) -> list[dict]:
        """The profiled nodes ``{name, op_type, exec_type, median_ms, layout}`` (may be empty)."""
        return self.data.get("kernels") or []

    @property
    def samples_ms(self) -> list[float]:
        return self.data.get("samples_ms") or []

    def stat_ms(self, stat: str) -> float:
        """The wall-time statistic ``stat`` of an ok row, in ms."""
        if self.stats is None:
            raise OplatError(f"row {self.label} has status {self.status}: no timings")
        return self.stats.of(stat)


def latest_by_key(rows: Iterable[Row]) -> dict[str, Row]:
    """Map key -> the last row written for it."""
    out: dict[str, Row] = {}
    for row in rows:
        out[row.key] = row
    return out


# ---------------------------------------------------------------------------- fusion
#: Below this remaining share, B counts as fused into A.
FUSED_BELOW = 0.5


@dataclass(frozen=True)
class FusionVerdict:
    """Whether B runs as its own kernel after A on a device (see :mod:`oplat.fusion`).

    ``a_ms``, ``b_ms``, ``ab_ms``: the p10 kernel times of A, B and A→B. ``b_kernels``:
    B's kernels found in A→B's profile (None: the device has no profiler, the verdict
    comes from the timings)."""

    pair: str  # "conv+add"
    precision: str
    a_ms: float
    b_ms: float
    ab_ms: float
    shape: str
    b_kernels: tuple[str, ...] | None = None

    @property
    def b_share(self) -> float:
        """Share of B's lone-op time that remains after A (0: fused, 1: runs in full)."""
        if self.b_kernels is not None:
            return 1.0 if self.b_kernels else 0.0
        return max(0.0, (self.ab_ms - self.a_ms) / self.b_ms) if self.b_ms > 0 else 1.0

    @property
    def fused(self) -> bool:
        return self.b_share < FUSED_BELOW

    def to_json(self) -> dict:
        data = {**self.__dict__, "b_share": round(self.b_share, 4), "fused": self.fused}
        if self.b_kernels is not None:
            data["b_kernels"] = list(self.b_kernels)
        return data

    @classmethod
    def from_json(cls, data: dict) -> FusionVerdict:
        kernels = data.get("b_kernels")
        return cls(
            pair=str(data["pair"]),
            precision=str(data["precision"]),
            a_ms=float(data["a_ms"]),
            b_ms=float(data["b_ms"]),
            ab_ms=float(data["ab_ms"]),
            shape=str(data.get("shape", "")),
            b_kernels=None if kernels is None else tuple(kernels),
        )


# ---------------------------------------------------------------------------- composition
@dataclass(frozen=True)
class Composition:
    """total_ms = compute·Σcompute + reorder·Σreorder + layout·Σlayout + boundary·(in+out
    Melements) + const_ms.

    ``reorder`` weighs the layout reorders the runtime runs *inside* the network
    (:attr:`KernelCost.reorder_ms <oplat.predict.KernelCost>`): 1 in the plain sum and
    equal to ``compute`` in a fit (the scale applies to the priced sum). Files fitted
    before those reorders were priced have none: their compute scale absorbed them, so
    they read as 0.
    """

    compute: float = 1.0
    reorder: float = 1.0
    layout: float = 0.0
    boundary_per_melem_ms: float = 0.0
    const_ms: float = 0.0
    networks: int = 0  # how many networks it was fitted on (0: not fitted)
    fit_mape_pct: float | None = None
    loo_mape_pct: float | None = None  # leave-one-out error of the chosen model

    def total(self, f: dict[str, float]) -> float:
        return (
            self.compute * f["compute_ms"]
            + self.reorder * f.get("reorder_ms", 0.0)
            + self.layout * f["layout_ms"]
            + self.boundary_per_melem_ms * f["boundary_melem"]
            + self.const_ms
        )

    def to_json(self) -> dict:
        return dict(self.__dict__)

    # the name the composition file and older callers use
    as_dict = to_json

    @classmethod
    def from_json(cls, data: dict) -> Composition:
        return cls(**{"reorder": 0.0, **data})  # files from before in-network reorders: none (see above)


@dataclass(frozen=True)
class CompositionFile:
    """``<table>.compose.json``: how kernel times compose into networks on one device.

    Attributes:
        stat: the statistic the fits were made on (``p10`` or ``median``).
        composition: precision -> fitted :class:`Composition`.
        fusion: precision -> pair (``conv+relu``) -> :class:`FusionVerdict`.
        networks: precision -> the calibration networks (architecture, features, measured ms).
        space: the search space the networks were sampled from.
        device: the table's fingerprint.
        fitted_at: when it was last written (UTC, ISO 8601).
    """

    stat: str = "p10"
    composition: dict[str, Composition] = field(default_factory=dict)
    fusion: dict[str, dict[str, FusionVerdict]] = field(default_factory=dict)
    networks: dict[str, list[dict]] = field(default_factory=dict)
    space: str = ""
    device: dict = field(default_factory=dict)
    fitted_at: str = ""
    schema_version: int = COMPOSE_SCHEMA_VERSION

    def to_json(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "composition": {p: c.to_json() for p, c in self.composition.items()},
            "networks": self.networks,
            "fusion": {p: {k: v.to_json() for k, v in pairs.items()} for p, pairs in self.fusion.items()},
            "stat": self.stat,
            "space": self.space,
            "device": self.device,
            "fitted_at": self.fitted_at,
        }

    @classmethod
    def from_json(cls, data: object) -> CompositionFile:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        version = data.get("schema_version", COMPOSE_SCHEMA_VERSION)  # files before versions: 1
        if version != COMPOSE_SCHEMA_VERSION:
            raise ValueError(f"schema_version {version!r} is not {COMPOSE_SCHEMA_VERSION}")
        return cls(
            stat=data.get("stat", "median"),  # the first files were fitted on medians and said nothing
            composition={p: Composition.from_json(c) for p, c in data.get("composition", {}).items()},
            fusion={p: {k: FusionVerdict.from_json(v) for k, v in pairs.items()} for p, pairs in data.get("fusion", {}).items()},
            networks=dict(data.get("networks", {})),
            space=str(data.get("space", "")),
            device=dict(data.get("device", {})),
            fitted_at=str(data.get("fitted_at", "")),
        )

    @classmethod
    def read(cls, path: str | Path) -> CompositionFile | None:
        """The file at ``path`` (None when there is none); an unreadable one is an error."""
        path = Path(path)
        if not path.exists():
            return None
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise OplatError(f"{path}: unreadable composition model ({exc}); delete it and run `oplat calibrate` again") from None

    def write(self, path: str | Path) -> None:
        path = Path(path)
        try:
            path.write_text(json.dumps(self.to_json(), indent=1))
        except OSError as exc:
            raise OplatError(f"cannot write {path} ({exc.strerror})") from None
