"""Predict a network's latency from a latency table.

prediction = composition(Σ kernel compute, Σ in-network reorders, boundary elements)

- Each kernel (see :mod:`oplat.graph`) is looked up by its OpSpec key. The table's
  ``kernel_ms`` (the op's own kernels, from the runtime's profiler) is its compute time
  and ``layout_ms`` the reorders a lone op needed; rows without per-node times use
  ``median_ms`` as compute.
- A key the table lacks is **predicted** from the nearest measured rows of the same
  kernel type (same op, kernel size, precision, mode/scale/block/arity): their time per
  unit of work (MACs for convs, elements moved otherwise), weighted by closeness in
  (log C_in, log C_out, log H·W), times this kernel's work. Channels are the ones the
  runtime computes at where the predictor knows them (ORT FP32: NCHWc-padded, see
  :meth:`Predictor.channels`), and blocked and plain convs are separate families. The breakdown says so and
  names the rows it used. A kernel type with no row at all is an error naming what to
  add to the op set.
- The statistic (``stat``): ``median`` prices a kernel at the profiler's median kernel
  time; ``p10`` at the table row's p10 wall time times the kernel's share of the
  profiled run (kernel_ms / Σ profiled nodes). On a shared host, interference only adds
  time, so the p10 of rounds interleaved over a run is the steadier estimate of the
  undisturbed latency; ``oplat validate`` compares networks on the same statistic.
- **Reorders inside the network.** A lone op's layout reorders are not the network's: the
  runtime keeps its blocked layout between kernels that have blocked kernels and
  reorders only where a plain-layout op (PRelu, DepthToSpace, ConvTranspose, a concat of
  blocked and plain inputs, …) meets a blocked one, or at a graph output. On a table of
  ONNX Runtime (``cpu``), ORT's own optimized graph of the network says where
  (:func:`oplat.backends.ort.inner_reorders`), and each such reorder is priced from the
  kernel's own row: the ReorderInput / ReorderOutput share of its lone-op profile, which
  is the same tensor at the same shape. Other runtimes' in-network layout changes are
  not priced (``reorder_ms`` 0).
- The composition model maps the sums to the whole network's wall time: the graph
  boundary (layout or quantize/dequantize of the input and output, per million boundary
  elements) and the per-call overhead, plus, if the data ask for it, a scale on the
  priced sum (compute + in-network reorders). Which of
  these terms are used is chosen by leave-one-out error on a few networks measured end
  to end (``oplat calibrate``), so a handful of noisy networks cannot buy a wild fit;
  the model is stored next to the table (``<table>.compose.json``). Without it the total
  is the plain sum of compute and in-network reorder times and every output says
  "uncalibrated".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from oplat.backends.ort import nchwc_block, nchwc_channels, ran_nchwc
from oplat.errors import OplatError
from oplat.graph import Kernel, NetGraph, net_graph
from oplat.nodespec import NodeSpec
from oplat.opset import entry_text
from oplat.records import Composition, CompositionFile, FusionVerdict, Row
from oplat.spec import OpSpec
from oplat.table import read_table

__all__ = [
    "Composition",
    "DEFAULT_STAT",
    "KernelCost",
    "MissingKernels",
    "STATS",
    "Prediction",
    "Predictor",
    "compose_path",
    "fit_composition",
    "place_reorders",
]

#: Neighbours used for a kernel the table lacks.
_NEIGHBOURS = 3

#: Statistics a prediction can be made on (see the module docstring).
STATS = ("median", "p10")
DEFAULT_STAT = "p10"


def compose_path(table: str | Path) -> Path:
    """Where a table's composition model lives: next to it, ``<stem>.compose.json``."""
    table = Path(table)
    return table.with_name(table.stem + ".compose.json")


@dataclass(frozen=True)
class KernelCost:
    kernel: Kernel
    compute_ms: float
    layout_ms: float
    source: str  # "measured" or "predicted"
    basis: str  # the row(s) the figure comes from
    #: the lone-op row's ReorderInput / ReorderOutput share (ms; in ``layout_ms``)
    reorder_in_ms: float = 0.0
    reorder_out_ms: float = 0.0
    #: what of them the runtime runs inside this network (see the module docstring)
    reorder_ms: float = 0.0

    @property
    def label(self) -> str:
        return self.kernel.spec.label()


@dataclass(frozen=True)
class Prediction:
    total_ms: float
    kernels: list[KernelCost]
    compute_ms: float
    layout_ms: float
    boundary_melem: float
    calibrated: bool
    composition: Composition
    net: NetGraph = field(repr=False)
    stat: str = DEFAULT_STAT
    reorder_ms: float = 0.0  # Σ in-network reorders (KernelCost.reorder_ms)
    #: how in-network reorders were found: "" (not this runtime's concern), or a sentence
    reorder_note: str = ""

    @property
    def fps(self) -> float:
        """Throughput: the network's batch of images per second at the predicted latency."""
        return self.net.batch * 1000.0 / self.total_ms if self.total_ms > 0 else 0.0

    @property
    def features(self) -> dict[str, float]:
        return {"compute_ms": self.compute_ms, "reorder_ms": self.reorder_ms, "layout_ms": self.layout_ms,
                "boundary_melem": self.boundary_melem}

    @property
    def measured_share(self) -> float:
        """Share of kernels whose figure is a table row (not a prediction)."""
        return sum(k.source == "measured" for k in self.kernels) / max(1, len(self.kernels))


def _family(spec: OpSpec, regime: str | None = None, int8_align: int = 4) -> tuple:
    """Rows of one family can stand in for each other (scaled by work). Convs are split
    by output-channel alignment: runtimes run odd channel counts 2–3× slower per MAC
    (ORT INT8 27- vs 28-channel), so an aligned conv is never priced from odd rows; and
    narrow tails (1–4 outputs) are their own family: ORT FP32 times a 64→1 conv like a
    64→4 one (64.5 vs 64.3 ms here), 2.6× the per-MAC rate of 64→12 predicts.
    ``regime``: how the runtime runs the conv where the predictor knows it (ORT FP32:
    ``nchwc``, blocked at padded channels, or ``plain`` im2col + SGEMM; see
    :meth:`Predictor.channels`): a blocked conv's output alignment is its padding, so
    alignment no longer splits it. ``int8_align``: the alignment of INT8 convs, which
    the table's own rows decide (:meth:`Predictor._int8_alignment`)."""
    align = int8_align if spec.precision == "int8" else 4
    aligned = (spec.c_out % align == 0) if spec.c_out and regime != "nchwc" else None
    return (spec.op, spec.kernel, spec.precision, spec.mode, spec.scale, spec.block,
            spec.arity if spec.op == "concat" else None, aligned, spec.layout, _is_narrow(spec), regime)


def _is_narrow(spec: OpSpec) -> bool:
    """A conv with 1–:data:`_NARROW` outputs: a narrow tail, its own family."""
    return bool(spec.c_out) and spec.c_out <= _NARROW


#: Channel tiles a runtime may pad a convolution's channels to (vector lanes, blocked
#: layouts: XNNPACK's and ORT's NCHWc blocks); 1 is no padding.
_TILES = (1, 4, 8, 16, 32)
#: A family's tile other than 1 is taken only when it lowers the family's leave-one-out
#: error (median |log| of estimate / row) to this share of the untiled error or less.
_TILE_GAIN = 0.8
#: Fewest rows of a family for a tile to be inferred from them.
_TILE_MIN_ROWS = 6
#: The INT8 alignment of 8 is taken only where its leave-one-out error is this share of
#: the alignment of 4's or less (on uniform rows the two differ by rounding alone).
_ALIGN_GAIN = 0.95
#: Output channels up to which a conv is a narrow tail (its own family, see _family).
_NARROW = 4
#: Rows with fewer channels on a side than this do not vote on a family's tile: padding
#: 1 or 2 input channels is not what a tile models, and their errors would pick it.
_TILE_MIN_CHANNELS = 3


def _nchwc_candidate(spec: OpSpec) -> bool:
    """A conv ORT's NCHWc layout transformer may take: FP32, NCHW, batch as given."""
    return spec.op in ("conv", "conv+relu") and spec.precision == "fp32" and spec.layout == "nchw" and bool(spec.c_out)


def _padded(c: int, tile: int) -> int:
    return -(-c // tile) * tile


def _work(spec: OpSpec, tile: int = 1, channels: tuple[int, int] | None = None) -> float:
    """The work a row's time is scaled by: MACs (elements moved for data ops); with a
    channel ``tile``, a conv's MACs at its output channels padded to it (a 36-channel conv
    on 16-lane vectors does the work of a 48-channel one); ``channels``: the (input,
    output) channels the runtime computes the conv at (:meth:`Predictor.channels`)."""
    work = float(spec.macs or spec.elements_moved)
    if spec.macs and spec.op in ("conv", "conv+relu"):
        c_in, c_out = channels or (spec.c, spec.c_out)
        work *= (c_in / spec.c) * (_padded(c_out, tile) / spec.c_out)
    return work


def _position(spec: OpSpec, channels: tuple[int, int] | None = None) -> np.ndarray:
    """Where a spec sits among its family: log2 of channels in and out (``channels``: as
    the runtime computes them), of the side of the image, and of the batch (one unit = a
    factor of 2)."""
    c_in, c_out = channels or (spec.c, spec.c_out or spec.c)
    return np.array([math.log2(c_in), math.log2(c_out), 0.5 * math.log2(spec.h * spec.w), math.log2(spec.n)])


#: A neighbour estimate from rows further than this (in _position units: factors of 2)
#: is flagged with its distance; beyond _REFUSE_DISTANCE it is refused with the entry to add.
_FLAG_DISTANCE = 1.0
_REFUSE_DISTANCE = 2.0


class MissingKernels(OplatError):
    """Kernels of a network the table cannot price, all of them (``missing``: (kernel, why))."""

    def __init__(self, source: str, missing: list[tuple[Kernel, str]]):
        self.missing = missing
        distinct: dict[str, list] = {}
        for kernel, why in missing:
            distinct.setdefault(kernel.spec.key, [kernel.spec, why, []])[2].append("+".join(kernel.nodes))
        self.specs = [spec for spec, _, _ in distinct.values()]
        listing = "; ".join(f"{spec.label()} at {', '.join(nodes)}: {why}" for spec, why, nodes in distinct.values())
        super().__init__(
            f"the table {source} cannot price {len(missing)} kernel{'s' if len(missing) != 1 else ''} "
            f"({len(distinct)} distinct) of this network: {listing}. Measure them all at once with "
            "`oplat measure --model NET.onnx --out TABLE`, or write the op-set entries with "
            "`oplat predict NET.onnx --table TABLE --missing-opset FILE.toml`"
        )


class _Missing(OplatError):
    """One kernel the table cannot price (``predict`` collects them into MissingKernels)."""

    def __init__(self, why: str):
        super().__init__(f"the table cannot price this kernel: {why}")
        self.why = why


class Predictor:
    """Prices kernels and networks from one latency table (and its composition model)."""

    def __init__(
        self,
        rows: Sequence[Row | dict],
        *,
        composition: dict[str, Composition] | None = None,
        fusion: dict[str, dict[str, FusionVerdict]] | None = None,
        source: str = "",
        stat: str = DEFAULT_STAT,
        measured_between: tuple[str, str] | None = None,
    ):
        if stat not in STATS:
            raise OplatError(f"unknown statistic {stat!r}; use one of {', '.join(STATS)}")
        rows = [r if isinstance(r, Row) else Row.from_json(r) for r in rows]
        self.stat = stat
        self.source = source
        self.fusion = fusion or {}  # precision -> pair ("conv+add") -> verdict (see oplat.fusion)
        self.rows = {r.key: r for r in rows if r.ok}
        self.failed = {r.key: r for r in rows if not r.ok}
        self.composition = composition or {}
        self.device = next((r.device for r in rows), {})
        #: (first, last) time the table's rows were measured, for provenance lines.
        self.measured_between = measured_between
        self._tiles: dict[tuple, int] = {}  # conv family keys -> their inferred channel tile (see _tile)
        self._nchwc = self._nchwc_block()
        self._int8_align = self._int8_alignment()  # groups the rows both ways to choose
        self._families: dict[tuple, list[tuple[OpSpec, Row]]] = self._grouped()

    @classmethod
    def from_table(cls, path: str | Path, stat: str | None = None) -> Predictor:
        """The table's predictor; ``stat`` defaults to the one its composition was fitted on."""
        table = read_table(path)
        if not table.rows:
            raise OplatError(f"{path}: the table is empty; run `oplat measure` first")
        comp, fusion, fitted_stat = {}, {}, DEFAULT_STAT
        stored = CompositionFile.read(compose_path(path))
        if stored is not None:
            fitted_stat, comp, fusion = stored.stat, dict(stored.composition), dict(stored.fusion)
            if stat is not None and stat != fitted_stat:
                comp = {}  # fitted on another statistic: it does not apply
        return cls(
            table.rows, composition=comp, fusion=fusion, source=str(path), stat=stat or fitted_stat,
            measured_between=table.measured_between,
        )

    # ------------------------------------------------------------------ runtime shapes
    def _nchwc_block(self) -> int | None:
        """ORT's NCHWc block for this table's FP32 convs, when the rule of
        :func:`oplat.backends.ort.nchwc_channels` says of every profiled FP32 conv row what
        its profile shows (blocked or plain); None otherwise (another runtime or version,
        optimizations off, no such rows): the predictor then scales by plain MACs."""
        if self.device.get("runtime") != "onnxruntime":
            return None
        block = nchwc_block(str(self.device.get("cpu_isa", "")))
        checked = 0
        for row in self.rows.values() if block else ():
            spec = row.spec
            if not (isinstance(spec, OpSpec) and _nchwc_candidate(spec)):
                continue
            ran = ran_nchwc(row.kernels)
            if ran is None:
                continue
            if ran != (nchwc_channels(spec.c, spec.c_out, block) is not None):
                return None
            checked += 1
        return block if checked else None

    def channels(self, spec: OpSpec) -> tuple[tuple[int, int], str | None]:
        """((input, output) channels the runtime computes ``spec`` at, its regime): on an
        ORT table whose FP32 conv rows follow the NCHWc rule, ``nchwc`` at the padded
        channels ORT's layout transformer gives it, or ``plain``; else the spec's own
        channels and None."""
        plain = (spec.c, spec.c_out or spec.c)
        if not (self._nchwc and _nchwc_candidate(spec)):
            return plain, None
        blocked = nchwc_channels(spec.c, spec.c_out, self._nchwc)
        return (blocked, "nchwc") if blocked else (plain, "plain")

    def family(self, spec: OpSpec) -> tuple:
        """The family key of ``spec`` in this table (see :func:`_family`)."""
        return _family(spec, self.channels(spec)[1], self._int8_align)

    def _twin_keys(self, spec: OpSpec) -> tuple:
        """The family keys of ``spec`` and its twins (INT8 conv and conv+relu time the same
        kernel: their rows are one family), in one order whichever twin asks (the tile and
        the neighbours' ties depend on it)."""
        return tuple(sorted({self.family(s) for s in (spec, *spec.twins)}, key=repr))

    def _members(self, keys: tuple) -> list[tuple[OpSpec, Row]]:
        """The rows of the families ``keys`` (a family and its twins')."""
        return [entry for key in keys for entry in self._families.get(key, [])]

    def _grouped(self) -> dict[tuple, list[tuple[OpSpec, Row]]]:
        families: dict[tuple, list[tuple[OpSpec, Row]]] = {}
        for row in self.rows.values():
            if isinstance(row.spec, OpSpec):  # node kernels are priced by exact signature only
                families.setdefault(self.family(row.spec), []).append((row.spec, row))
        return families

    def _int8_alignment(self) -> int:
        """The output-channel alignment that splits INT8 conv families: 8 where it prices
        the table's own INT8 conv rows better than 4 when each is left out (median |log|
        error of the neighbour estimates), else 4. ORT's QLinearConv on AVX2 without VNNI
        runs 28→28 1.6× slower per MAC than 32→32 (widths ≡ 4 mod 8 price like odd ones:
        8 wins, 0.029 vs 0.034 on the AMD EPYC cpu table); with VNNI they run at the
        aligned rate (4 wins, 0.047 vs 0.063 on the Intel Xeon one). 8 must win by
        :data:`_ALIGN_GAIN`: rows that tell the two apart no better than rounding keep 4."""
        errors = {}
        for align in (4, 8):
            self._int8_align, self._tiles = align, {}
            self._families = self._grouped()
            twins = {self._twin_keys(spec) for family in self._families.values() for spec, _ in family
                     if spec.op in ("conv", "conv+relu") and spec.precision == "int8"}
            found = []
            for keys in twins:
                family = self._members(keys)
                if len(family) >= 3:
                    found += self._loo_errors(family, self._tile(keys))
            errors[align] = float(np.median(found)) if found else math.inf
        self._tiles = {}
        return 8 if errors[8] < _ALIGN_GAIN * errors[4] - 1e-9 else 4

    # ------------------------------------------------------------------ kernels
    def _times(self, row: Row) -> tuple[float, float]:
        """(compute ms, lone-op layout ms) of a row under the predictor's statistic."""
        kernel, layout = row.kernel_ms, float(row.layout_ms or 0.0)
        if self.stat == "median":
            if kernel is not None:
                return float(kernel), layout
            return float(row.stats.median_ms), 0.0
        wall = float(row.stat_ms(self.stat))  # a summary-only row (no samples) gives its median
        profiled = sum(n["median_ms"] for n in row.kernels) or ((kernel or 0.0) + layout)
        if kernel is None or profiled <= 0:
            return wall, 0.0
        return wall * float(kernel) / profiled, wall * layout / profiled

    def _reorder_parts(self, row: Row) -> tuple[float, float]:
        """(ms of the layout nodes before the op's first kernel, ms of those after it) of a
        lone-op row's profile (ORT: ReorderInput / ReorderOutput around a blocked FP32
        conv, the Transposes around an NHWC QLinearConv), scaled like :meth:`_times`;
        (0, 0) where the runtime ran the op without them."""
        nodes = row.kernels or []
        first = next((i for i, n in enumerate(nodes) if not n.get("layout")), None)
        if first is None:
            return 0.0, 0.0
        parts = [sum(float(n["median_ms"]) for n in part if n.get("layout")) for part in (nodes[:first], nodes[first:])]
        if not any(parts) or self.stat == "median":
            return parts[0], parts[1]
        profiled = sum(float(n["median_ms"]) for n in nodes)
        scale = float(row.stat_ms(self.stat)) / profiled if profiled > 0 else 0.0
        return parts[0] * scale, parts[1] * scale

    @property
    def prices_reorders(self) -> bool:
        """Whether this table's runtime says where it reorders inside a network (ORT)."""
        return self.device.get("runtime") == "onnxruntime"

    def _exact(self, spec: OpSpec) -> tuple[Row, str] | None:
        for candidate in (spec, *spec.twins):
            row = self.rows.get(candidate.key)
            if row is not None:
                return row, candidate.key
        return None

    def kernel_cost(self, kernel: Kernel) -> KernelCost:
        """The kernel's cost from the table (or predicted), after measured fusion rules."""
        cost = self._lone_cost(kernel)
        spec = kernel.spec
        for producer in set(kernel.after):
            verdict = self.fusion.get(spec.precision, {}).get(f"{producer.split('+')[0]}+{spec.op}")
            if verdict and verdict.fused:
                share = float(verdict.b_share)
                return KernelCost(
                    kernel,
                    cost.compute_ms * share,
                    cost.layout_ms * share,
                    cost.source,
                    f"{cost.basis}; fused into the preceding {producer} (measured: {100 * share:.0f}% of its lone cost remains)",
                    cost.reorder_in_ms * share,
                    cost.reorder_out_ms * share,
                )
        return cost

    def _lone_cost(self, kernel: Kernel) -> KernelCost:
        spec = kernel.spec
        found = self._exact(spec)
        if found:
            compute, layout = self._times(found[0])
            parts = self._reorder_parts(found[0])
            return KernelCost(kernel, compute, layout, "measured", found[0].label, *parts)
        if isinstance(spec, NodeSpec):  # any other op: priced by its exact signature only
            failed = self.failed.get(spec.key)
            raise _Missing(f"its row says {failed.status}: {failed.message}" if failed else "no row of this exact kernel")
        keys = self._twin_keys(spec)
        family = self._members(keys)
        if not family:
            failed = [r for r in self.failed.values() if isinstance(r.spec, OpSpec) and self.family(r.spec) == self.family(spec)]
            why = f" (its rows say {failed[0].status}: {failed[0].message})" if failed else ""
            raise _Missing(
                f"no {spec.precision} {_family_name(spec)} rows{why}; add an [[entry]] with "
                f"{entry_text(spec)} to the op set"
            )
        tile = self._tile(keys)
        (compute, layout), order, nearest = self._neighbours(family, spec, tile)
        if nearest > _REFUSE_DISTANCE:
            closest = family[order[0]][1].label
            raise _Missing(
                f"the nearest measured row ({closest}) is {2 ** nearest:.1f}× away, too far to extrapolate; "
                f"add an [[entry]] with {entry_text(spec)} to the op set"
            )
        basis = "from " + ", ".join(family[i][1].label for i in order)
        if tile > 1:
            basis += f" (channels padded to {tile}s)"
        if nearest > _FLAG_DISTANCE:
            basis += f" (EXTRAPOLATED: the nearest row is {2 ** nearest:.1f}× away)"
        return KernelCost(kernel, compute, layout, "predicted", basis, *self._neighbour_reorders(family, order, spec))

    def _neighbour_reorders(self, family: list, order: list[int], spec: OpSpec) -> tuple[float, float]:
        """Reorder parts of ``spec`` from the rows it was priced from, per element of the
        tensor reordered (a reorder moves the tensor; its MACs do not matter)."""
        rates = []
        for i in order:
            other, row = family[i]
            rin, rout = self._reorder_parts(row)
            rates.append((rin / max(1, math.prod(other.input_shapes[0])), rout / max(1, math.prod(other.output_shape))))
        rin, rout = np.mean(rates, axis=0) if rates else (0.0, 0.0)
        return float(rin) * math.prod(spec.input_shapes[0]), float(rout) * math.prod(spec.output_shape)

    def _neighbours(self, family: list, spec: OpSpec, tile: int, skip: int | None = None):
        """((compute ms, layout ms) of ``spec`` scaled from its nearest rows in ``family``
        by work at channel ``tile``, the indices of those rows, the nearest distance);
        ``skip``: a row left out (leave-one-out), with its twins (the INT8 conv and
        conv+relu of one shape time the same kernel)."""
        here = _position(spec, self.channels(spec)[0])
        dists = np.array([np.linalg.norm(_position(s, self.channels(s)[0]) - here) for s, _ in family])
        if skip is not None:
            left_out = {s.key for s in (family[skip][0], *family[skip][0].twins)}
            dists[[i for i, (s, _) in enumerate(family) if s.key in left_out]] = np.inf
        order = np.argsort(dists)[:_NEIGHBOURS]
        weights = 1.0 / (dists[order] + 0.05)
        per_work = np.array([np.array(self._times(family[i][1])) / self._work(family[i][0], tile) for i in order])
        times = weights @ per_work / weights.sum() * self._work(spec, tile)
        return (float(times[0]), float(times[1])), [int(i) for i in order], float(dists[order[0]])

    def _work(self, spec: OpSpec, tile: int) -> float:
        return _work(spec, tile, self.channels(spec)[0])

    def _tile(self, keys: tuple) -> int:
        """The channel tile of a conv family (its ``keys``: the family and its twins'),
        inferred from its own rows: the tile whose leave-one-out neighbour estimates are
        closest to the rows (1 unless it clearly beats no padding; see :data:`_TILE_GAIN`)."""
        if keys in self._tiles:
            return self._tiles[keys]
        family = self._members(keys)
        tile = 1
        if keys[0][0] in ("conv", "conv+relu") and len(family) >= _TILE_MIN_ROWS:
            errors = {t: self._loo_error(family, t) for t in _TILES}
            best = min(errors, key=lambda t: (errors[t], t))
            if errors[best] <= _TILE_GAIN * errors[1]:
                tile = best
        self._tiles[keys] = tile
        return tile

    def _loo_error(self, family: list, tile: int) -> float:
        """Median |log(estimate / row)| of each row of ``family`` priced from the others."""
        errors = self._loo_errors(family, tile)
        return float(np.median(errors)) if errors else math.inf

    def _loo_errors(self, family: list, tile: int) -> list[float]:
        """|log(estimate / row)| of each row of ``family`` priced from the others."""
        errors = []
        for i, (spec, row) in enumerate(family):
            if min(spec.c, spec.c_out or spec.c) < _TILE_MIN_CHANNELS:
                continue
            (compute, _), _, nearest = self._neighbours(family, spec, tile, skip=i)
            actual = self._times(row)[0]
            if nearest <= _FLAG_DISTANCE and compute > 0 and actual > 0:
                errors.append(abs(math.log(compute / actual)))
        return errors

    # ------------------------------------------------------------------ networks
    def predict(self, model_or_net, *, layout_model=None) -> Prediction:
        """Predict an ONNX model, or an already read NetGraph: its in-network reorders are
        then read from ``layout_model`` (a graph with the same nodes and tensor names, at
        any input size), or not priced and the prediction says so."""
        net = model_or_net if isinstance(model_or_net, NetGraph) else net_graph(model_or_net)
        plan, note = self._layout_plan(layout_model if model_or_net is net else model_or_net)
        nhwc = plan.nhwc if plan is not None else frozenset()
        costs, missing = [], []
        for kernel in net.kernels:
            try:
                in_nhwc = bool(nhwc.intersection(kernel.nodes))
                costs.append(self._nhwc_cost(kernel) if in_nhwc else self.kernel_cost(kernel))
            except _Missing as exc:
                missing.append((kernel, exc.why))
        if missing:
            raise MissingKernels(self.source or "(in memory)", missing)
        if plan is not None:
            costs, note = self._charge_reorders(plan, costs)
        compute = sum(c.compute_ms for c in costs)
        reorder = sum(c.reorder_ms for c in costs)
        layout = sum(c.layout_ms for c in costs)
        boundary = (net.input_elements + net.output_elements) / 1e6
        comp = self.composition.get(net.precision)
        f = {"compute_ms": compute, "reorder_ms": reorder, "layout_ms": layout, "boundary_melem": boundary}
        total = comp.total(f) if comp else compute + reorder
        return Prediction(
            total_ms=total,
            kernels=costs,
            compute_ms=compute,
            layout_ms=layout,
            boundary_melem=boundary,
            calibrated=comp is not None,
            composition=comp or Composition(),
            net=net,
            stat=self.stat,
            reorder_ms=reorder,
            reorder_note=note,
        )

    def _layout_plan(self, model):
        """(where the runtime changes layout inside ``model``, or None; why not, if not)."""
        if not self.prices_reorders:
            return None, ""
        if model is None:
            return None, "in-network reorders not priced (no ONNX model to read them from)"
        from oplat.backends.ort import inner_reorders

        try:
            return inner_reorders(model, self.device.get("options")), ""
        except Exception as exc:  # ORT refuses the model: price what the table has
            return None, f"in-network reorders not priced (ONNX Runtime could not optimize the network: {str(exc).splitlines()[0][:160]})"

    def _nhwc_cost(self, kernel: Kernel) -> KernelCost:
        """A kernel the runtime runs on NHWC data inside the network (alone it would run
        NCHW): its ``nhwc`` row (``measure --model`` cuts it between Transposes the runtime
        cancels); without one, its NCHW row, and the basis says so. The layout changes at
        its edge keep the NCHW row's shares (the same tensors)."""
        nhwc = replace(kernel.spec, layout="nhwc")
        found = self._exact(nhwc)
        if found is None:
            cost = self.kernel_cost(kernel)
            return replace(cost, basis=f"{cost.basis}; runs in NHWC inside the network, priced from its NCHW row "
                                       "(`measure --model` on cpu adds an NHWC row where ORT runs the kernel so alone)")
        cost = self.kernel_cost(replace(kernel, spec=nhwc))
        try:
            plain = self._lone_cost(kernel)
        except _Missing:
            return cost
        return replace(cost, reorder_in_ms=plain.reorder_in_ms, reorder_out_ms=plain.reorder_out_ms)

    def _charge_reorders(self, plan, costs: list[KernelCost]) -> tuple[list[KernelCost], str]:
        """``costs`` with the layout changes of ``plan`` charged to the kernels whose rows
        show them, and a sentence saying how they were found."""
        charged, unpriced = place_reorders(plan.outputs, plan.inputs, costs)
        unpriced += plan.inner
        costs = [replace(c, reorder_ms=ms) if ms else c for c, ms in zip(costs, charged)]
        note = f"{plan.count} in-network reorders / transposes from ONNX Runtime's optimized graph, {sum(charged):.2f} ms"
        if unpriced:
            note += f" ({unpriced} not priced: no kernel row shows them)"
        return costs, note


def place_reorders(outputs, inputs: dict[str, int], costs: Sequence[KernelCost]) -> tuple[list[float], int]:
    """(ms charged to each kernel of ``costs``, how many reorders no row prices).

    A ReorderOutput writing tensor T is charged to the kernel producing T at its lone
    row's ReorderOutput share (or, if that kernel has none, e.g. an Add the runtime fused
    into the blocked conv before it, to that conv's); a ReorderInput reading T to a
    kernel reading T whose row shows a ReorderInput, once per ReorderInput node."""
    producer = {t: i for i, c in enumerate(costs) for t in c.kernel.outputs}
    charged = [0.0] * len(costs)
    unpriced = 0
    for tensor in sorted(outputs):
        i = producer.get(tensor)
        if i is not None and costs[i].reorder_out_ms <= 0:
            ups = [producer[t] for t in costs[i].kernel.inputs if t in producer and costs[producer[t]].reorder_out_ms > 0]
            i = ups[0] if ups else None
        if i is None:
            unpriced += 1
            continue
        charged[i] += costs[i].reorder_out_ms
    for tensor, count in sorted(inputs.items()):
        takers = [i for i, c in enumerate(costs) if tensor in c.kernel.inputs and c.reorder_in_ms > 0][:count]
        for i in takers:
            charged[i] += costs[i].reorder_in_ms
        unpriced += count - len(takers)
    return charged, unpriced


def _family_name(spec: OpSpec) -> str:
    if spec.op in ("conv", "conv+relu"):
        narrow = f" with {_NARROW} or fewer outputs" if _is_narrow(spec) else ""
        return f"{spec.op} {spec.kernel}x{spec.kernel}{narrow}"
    if spec.op == "resize":
        return f"resize {spec.mode} ×{spec.scale}"
    if spec.op == "depth_to_space":
        return f"depth_to_space ×{spec.block}"
    if spec.op == "concat":
        return f"concat of {spec.arity}"
    return spec.op


# ---------------------------------------------------------------------- composition fit
#: Candidate models: (compute scale fitted?, boundary term?, constant?). The plain sum
#: (compute×1) is the prior; a term is kept only if it lowers the leave-one-out error.
_CANDIDATES = [(False, False, False), (False, False, True), (False, True, False), (False, True, True),
               (True, False, False), (True, False, True), (True, True, False), (True, True, True)]
#: A richer model must beat a simpler one by at least this much leave-one-out MAPE
#: (points), and by more than one standard error of the best model's leave-one-out
#: error (the one-standard-error rule): on a handful of noisy networks a smaller gain is
#: noise, and a term bought with it (a boundary term that every network has alike, so
#: it is only a constant) mispredicts the networks it was not fitted on.
_MIN_GAIN_PCT = 0.5


def _solve(x: np.ndarray, y: np.ndarray, fixed: np.ndarray) -> np.ndarray | None:
    """Weighted (1/y) least squares of y - fixed on x; None if a coefficient is negative."""
    if x.shape[1] == 0:
        return np.zeros(0)
    w = 1.0 / y
    coef, *_ = np.linalg.lstsq(x * w[:, None], (y - fixed) * w, rcond=None)
    return None if np.any(coef < 0) else coef


def _design(samples, scale: bool, boundary: bool, const: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    cols, names = [], []
    # the priced sum: compute and the reorders the runtime runs inside the network
    compute = np.array([f["compute_ms"] + f.get("reorder_ms", 0.0) for f, _ in samples])
    if scale:
        cols.append(compute)
        names.append("compute")
    if boundary:
        cols.append(np.array([f["boundary_melem"] for f, _ in samples]))
        names.append("boundary")
    if const:
        cols.append(np.ones(len(samples)))
        names.append("const")
    x = np.column_stack(cols) if cols else np.zeros((len(samples), 0))
    fixed = np.zeros(len(samples)) if scale else compute
    return x, fixed, names


def fit_composition(samples: Sequence[tuple[dict[str, float], float]]) -> Composition:
    """Fit total_ms from feature sums on networks measured end to end.

    Each candidate model (plain sum; + boundary; + constant; with or without a fitted
    compute scale) is fitted by relative least squares with non-negative coefficients
    and scored by its leave-one-out mean absolute % error; the simplest model within one
    standard error (at least :data:`_MIN_GAIN_PCT`) of the best wins, with a boundary
    term preferred to a constant of the same rank. ``samples``: (features, measured_ms).
    """
    if len(samples) < 3:
        raise OplatError(f"a composition fit needs at least 3 measured networks, got {len(samples)}")
    y = np.array([m for _, m in samples], dtype=np.float64)
    scored = []
    for scale, boundary, const in _CANDIDATES:
        x, fixed, names = _design(samples, scale, boundary, const)
        if x.shape[1] >= len(samples) - 1:
            continue
        errs = []
        for i in range(len(samples)):
            keep = np.arange(len(samples)) != i
            coef = _solve(x[keep], y[keep], fixed[keep])
            if coef is None:
                break
            errs.append(abs(float(x[i] @ coef + fixed[i] - y[i])) / y[i])
        else:
            coef = _solve(x, y, fixed)
            if coef is not None:
                errs_pct = 100 * np.array(errs)
                se = float(np.std(errs_pct, ddof=1) / np.sqrt(len(errs_pct)))
                scored.append((float(np.mean(errs_pct)), x.shape[1], names, coef, x @ coef + fixed, se))
    if not scored:
        raise OplatError("composition fit failed: no non-negative fit; measure more (and more varied) networks")
    best = min(scored, key=lambda s: s[0])
    margin = max(_MIN_GAIN_PCT, best[5])
    # Among the simplest models within the margin, a term that scales with the image (the
    # boundary) before a per-call constant: networks measured at one input size cannot
    # tell the two apart (same leave-one-out error), and a per-call constant carries the
    # one size's shortfall unchanged to every other size.
    loo, _, names, coef, fitted, _ = min((s for s in scored if s[0] <= best[0] + margin),
                                         key=lambda s: (s[1], "const" in s[2], s[0]))
    values = dict(zip(names, (float(c) for c in coef)))
    return Composition(
        compute=values.get("compute", 1.0),
        reorder=values.get("compute", 1.0),
        layout=0.0,
        boundary_per_melem_ms=values.get("boundary", 0.0),
        const_ms=values.get("const", 0.0),
        networks=len(samples),
        fit_mape_pct=float(100 * np.mean(np.abs(fitted - y) / y)),
        loo_mape_pct=loo,
    )
