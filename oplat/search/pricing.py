"""Pricing networks for the search: ArchSpec → kernels → predicted latency, cached.

INT8 without quantizing every trial
-----------------------------------
:func:`arch_net` builds the :class:`~oplat.graph.NetGraph` of a network straight from its
ArchSpec — the same kernels (and node names) that :func:`~oplat.graph.net_graph` reads from
:func:`~oplat.arch.model_from_arch` (FP32) or from its :func:`~oplat.arch.quantize_qdq`
graph (INT8: every conv an int8 ``conv`` — the quantizer folds ReLU into the uint8 output
range — and no Clip kernel, the [0, 1] clip being the output's uint8 saturation), in
microseconds instead of seconds.

:class:`Prices` caches one prediction per (network, precision); given a device it first
measures every kernel the table lacks (appending the rows to the table file) and reloads
the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import networkx as nx

from oplat.arch import ArchSpec, arch_ops, macs, model_from_arch, params, quantize_qdq
from oplat.devices import Device
from oplat.errors import OplatError
from oplat.graph import Kernel, NetGraph, net_graph
from oplat.predict import Predictor
from oplat.search.proxy import IMAGE_CHANNELS
from oplat.space import SearchSpace, arch_from_trial
from oplat.spec import OpSpec

__all__ = [
    "PRECISIONS",
    "FixedTrial",
    "Priced",
    "Prices",
    "arch_from_values",
    "arch_kernels",
    "arch_net",
    "fastest_network",
    "fastest_priced",
]

PRECISIONS = ("int8", "fp32")
#: Input size of the graph whose in-network layout changes the runtime is asked about.
_PLAN_PIXELS = 8


# ---------------------------------------------------------------------- kernels without ONNX
def arch_kernels(arch: ArchSpec, precision: str = "fp32") -> list[Kernel]:
    """The kernels :func:`oplat.graph.net_graph` reads from the network's ONNX graph.

    ``fp32``: the graph of :func:`~oplat.arch.model_from_arch`. ``int8``: the graph of
    :func:`~oplat.arch.quantize_qdq` of it — every conv a plain int8 ``conv`` (the quantizer
    drops each ReLU into its conv's uint8 output range) and no ``clip`` kernel. Node names
    are those of the ONNX graphs.
    """
    if precision not in PRECISIONS:
        raise OplatError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    int8 = precision == "int8"
    kernels: list[Kernel] = []
    conv_i = 0
    for spec in arch_ops(arch, precision):
        if spec.op in ("conv", "conv+relu"):
            if int8:
                spec = OpSpec("conv", spec.c, spec.h, spec.w, n=spec.n, c_out=spec.c_out, kernel=spec.kernel, precision="int8")
                nodes: tuple[str, ...] = (f"conv{conv_i}",)
            else:
                nodes = (f"conv{conv_i}", f"relu{conv_i}") if spec.op == "conv+relu" else (f"conv{conv_i}",)
            conv_i += 1
        elif spec.op == "concat":
            nodes = ("anchor",)
        elif spec.op == "add":
            nodes = ("add_anchor",)
        elif spec.op == "depth_to_space":
            nodes = ("depth_to_space",)
        elif spec.op == "clip":
            if int8:
                continue
            nodes = ("clip",)
        else:  # pragma: no cover - arch_ops emits only the ops above
            raise AssertionError(spec.op)
        kernels.append(Kernel(spec, nodes))
    return kernels


def arch_net(arch: ArchSpec, precision: str = "fp32") -> NetGraph:
    """A :class:`~oplat.graph.NetGraph` for the predictor, built from ``arch`` alone.

    Kernels, element counts, boundary nodes, params, MACs and precision are those
    :func:`~oplat.graph.net_graph` gives for the FP32 or QDQ INT8 ONNX graph; the node
    graph is left empty and ``peak_activation_bytes`` 0 (the predictor uses neither).
    """
    kernels = arch_kernels(arch, precision)
    return NetGraph(
        graph=nx.DiGraph(),
        kernels=kernels,
        input_elements=IMAGE_CHANNELS * arch.in_h * arch.in_w,
        output_elements=IMAGE_CHANNELS * arch.out_h * arch.out_w,
        boundary_nodes=["x_QuantizeLinear", "y_DequantizeLinear"] if precision == "int8" else [],
        params=params(arch),
        macs=macs(arch),
        precision=precision,
    )


# ---------------------------------------------------------------------- networks from parameters
class FixedTrial:
    """A trial that answers every ``suggest_*`` from a dict (a missing name: the lowest value or first choice)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def suggest_int(self, name: str, low: int, high: int) -> int:
        return int(self._values.get(name, low))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._values.get(name, choices[0])


def arch_from_values(space: SearchSpace, values: dict[str, Any]) -> ArchSpec:
    """The network of ``space`` that a trial with these parameters (e.g. a finished
    trial's ``params``) builds."""
    return arch_from_trial(FixedTrial(values), space)


# ---------------------------------------------------------------------- pricing
@dataclass(frozen=True)
class Priced:
    predicted_ms: float
    calibrated: bool
    measured_share: float


class Prices:
    """Cached predictions per (arch, precision); with a device, measures what the table lacks."""

    def __init__(self, predictor: Predictor, *, device: Device | None, table_path: Path | None, policy, opset: str):
        if device is not None and table_path is None:
            raise OplatError("measuring on the fly needs the table file to write to; give table_path (--table)")
        self.predictor = predictor
        self.device = device
        self.table_path = table_path
        self.policy = policy
        self.opset = opset
        self.measured_rows = 0
        self._cache: dict[tuple[ArchSpec, str], Priced] = {}
        self._plans: dict[tuple[ArchSpec, str], tuple] = {}  # see _named

    def _named(self, arch: ArchSpec, precision: str, net: NetGraph) -> tuple[NetGraph, Any]:
        """``net`` with the tensor names of its ONNX graph, and that graph at a tiny input
        size for the runtime to say where it changes layout inside it (the plan depends on
        the ops and channel counts, not on the pixels; an INT8 graph at full size takes
        seconds to quantize, at 8×8 a fifth of one). Cached per structure."""
        tiny = arch.with_input(_PLAN_PIXELS, _PLAN_PIXELS)
        key = (tiny, precision)
        if key not in self._plans:
            model = model_from_arch(tiny)
            model = quantize_qdq(model) if precision == "int8" else model
            self._plans[key] = (model, {k.nodes: k for k in net_graph(model).kernels})
        model, by_nodes = self._plans[key]
        kernels = [replace(k, inputs=by_nodes[k.nodes].inputs, outputs=by_nodes[k.nodes].outputs) if k.nodes in by_nodes else k
                   for k in net.kernels]
        return replace(net, kernels=kernels), model

    def _known(self, spec: OpSpec) -> bool:
        p = self.predictor
        if spec.key in p.rows or spec.key in p.failed:
            return True
        if spec.precision == "int8" and spec.op in ("conv", "conv+relu"):
            twin = OpSpec.from_dict({**spec.as_dict(), "op": "conv+relu" if spec.op == "conv" else "conv"})
            return twin.key in p.rows
        return False

    def ensure_measured(self, specs: Sequence[OpSpec]) -> None:
        """With a device: measure every spec the table lacks, then reload the table."""
        if self.device is None:
            return
        missing = list({s.key: s for s in specs if not self._known(s)}.values())
        if not missing:
            return
        from oplat.measure import measure_specs
        from oplat.table import read_table

        summary = measure_specs(missing, self.device, opset=self.opset, out=self.table_path, policy=self.policy, progress=False)
        self.measured_rows += summary.measured
        self.predictor = Predictor(
            read_table(self.table_path, quiet=True).rows,
            composition=self.predictor.composition,
            fusion=self.predictor.fusion,
            source=str(self.table_path),
            stat=self.predictor.stat,
        )
        self._cache.clear()  # neighbour-based figures may change with the new rows

    def price(self, arch: ArchSpec, precision: str, *, measure: bool = True) -> Priced:
        key = (arch, precision)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        net = arch_net(arch, precision)
        if measure:
            self.ensure_measured([k.spec for k in net.kernels])
        layout = None
        if self.predictor.prices_reorders:  # price the reorders ORT runs inside it, as `predict` does
            net, layout = self._named(arch, precision, net)
        pred = self.predictor.predict(net, layout_model=layout)
        priced = Priced(pred.total_ms, pred.calibrated, pred.measured_share)
        self._cache[key] = priced
        return priced


# ---------------------------------------------------------------------- the fastest network
def _depth_min_candidates(space: SearchSpace) -> list[ArchSpec]:
    """Every residual × every (uniform) width at the smallest depth."""
    out = []
    for residual in space.residuals:
        for width in space.channels:
            values: dict[str, Any] = {"depth": space.depth_min, "residual": residual, "width": width}
            values.update({f"width_{i}": width for i in range(space.depth_min + 1)})
            out.append(arch_from_values(space, values))
    return out


def fastest_network(
    space: SearchSpace, predictor: Predictor, *, precision: str = "int8"
) -> tuple[ArchSpec, float]:
    """The network of ``space`` with the lowest predicted latency and that latency, ms.

    Latency grows with depth, so only the smallest depth is searched, over every residual
    mode and every width (a table need not be monotone in width: channel padding).
    """
    prices = Prices(predictor, device=None, table_path=None, policy=None, opset="")
    return fastest_priced(space, prices, precision)


def fastest_priced(space: SearchSpace, prices: Prices, precision: str) -> tuple[ArchSpec, float]:
    """:func:`fastest_network` priced through ``prices`` (measuring what its table lacks)."""
    candidates = _depth_min_candidates(space)
    prices.ensure_measured([k.spec for a in candidates for k in arch_kernels(a, precision)])
    priced = [(prices.price(a, precision).predicted_ms, i, a) for i, a in enumerate(candidates)]
    ms, _, arch = min(priced)
    return arch, ms
