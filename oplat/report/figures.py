"""Figures for review pages: one function per figure, plain data in, ``matplotlib.figure.Figure`` out.

matplotlib is the optional extra ``report`` (``pip install 'oplat[report]'``) and is
imported only when a figure is made. Every figure is built with the object API on its
own Agg canvas: no pyplot, no global figure state, so the functions can be called from
anywhere (the search calls :func:`pareto_front` on its own data). :func:`png_bytes` and
:func:`svg_text` serialise a figure reproducibly (no dates, fixed ids).

- :func:`latency_vs_macs`: a table's latency against MACs, one colour per op family (log-log);
- :func:`ratio_heatmap`: op × shape heatmap of the ratio between two tables;
- :func:`predicted_vs_measured`: a validation report's networks against the identity, ±5 % / ±10 % bands;
- :func:`kernel_breakdown`: one network's per-kernel compute time, PREDICTED kernels hatched;
- :func:`pareto_front`: latency/quality trade-off with the budget line, infeasible points grey.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from oplat.errors import OplatError

__all__ = [
    "INSTALL_HINT", "LatencyPoint", "family_colour", "kernel_breakdown", "latency_vs_macs", "pareto_front", "png_bytes",
    "predicted_vs_measured", "ratio_heatmap", "require_matplotlib", "svg_text",
]

INSTALL_HINT = "review pages need matplotlib: pip install 'oplat[report]'"

#: Colours of the op families (tab10 order), the same in every figure.
_FAMILY_COLOURS = {
    "conv3x3": "#1f77b4", "conv1x1": "#ff7f0e", "conv+relu": "#2ca02c", "add": "#d62728", "concat": "#9467bd",
    "resize nearest": "#8c564b", "resize bilinear": "#e377c2", "relu": "#7f7f7f", "clip": "#bcbd22",
    "depth_to_space": "#17becf",
}
_EXTRA_COLOURS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")
_MARKERS = {"fp32": "o", "int8": "^"}
_GREY = "#b0b0b0"


def require_matplotlib() -> None:
    """Raise the one-line install hint (exit status 2) when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise OplatError(INSTALL_HINT) from None


def family_colour(name: str) -> str:
    """The colour of an op family (families oplat does not know get one of a few extra colours)."""
    if name in _FAMILY_COLOURS:
        return _FAMILY_COLOURS[name]
    return _EXTRA_COLOURS[sum(map(ord, name)) % len(_EXTRA_COLOURS)]


def _family_order(name: str) -> tuple:
    names = list(_FAMILY_COLOURS)
    return (names.index(name), "") if name in names else (len(names), name)


def _figure(width: float, height: float):
    """A new Figure on its own Agg canvas (no pyplot)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig, *, dpi: int = 130) -> bytes:
    """The figure as PNG (no timestamp in the metadata)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def svg_text(fig) -> str:
    """The figure as SVG text, reproducible: no date, ids from a fixed salt, text as paths."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "oplat", "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


# ---------------------------------------------------------------------------- (1) latency vs MACs
@dataclass(frozen=True)
class LatencyPoint:
    """One table row for :func:`latency_vs_macs`: its op family, precision, MACs (0 for
    ops without), latency in ms at the statistic shown, and tensor elements moved."""

    family: str
    precision: str
    macs: float
    ms: float
    elements: float = 0.0


def latency_vs_macs(points: Sequence[LatencyPoint], *, title: str = "", stat: str = "p10"):
    """Latency against MACs, log-log, one colour per op family (marker per precision).

    Ops without MACs (add, concat, resize, …) go in a second panel against the tensor
    elements they move, so every row of the table is on the figure."""
    with_macs = [p for p in points if p.macs and p.ms > 0]
    without = [p for p in points if not p.macs and p.elements and p.ms > 0]
    panels = [(with_macs, "MACs", "macs")] + ([(without, "elements moved (inputs + output)", "elements")] if without else [])
    fig = _figure(6.0 * len(panels) + 0.6, 5.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (data, xlabel, attr) in zip(axes, panels):
        families = sorted(dict.fromkeys(p.family for p in data), key=_family_order)
        for fam in families:
            for precision in dict.fromkeys(p.precision for p in data if p.family == fam):
                sel = [p for p in data if p.family == fam and p.precision == precision]
                ax.scatter(
                    [getattr(p, attr) for p in sel], [p.ms for p in sel], s=18, alpha=0.8, color=family_colour(fam),
                    marker=_MARKERS.get(precision, "s"), label=f"{fam} {precision}", edgecolors="none",
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"latency, {stat} [ms]")
        ax.grid(True, which="major", alpha=0.3)
        ax.set_title("ops with MACs" if attr == "macs" else "ops without MACs", fontsize=10)
        if data:
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False, ncol=4)
        else:
            ax.text(0.5, 0.5, "no rows", transform=ax.transAxes, ha="center", va="center", color=_GREY)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


# ---------------------------------------------------------------------------- (2) ratio heatmap
def ratio_heatmap(
    cells: Sequence[tuple[str, str, float]],
    *,
    rows: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
    a_label: str = "a",
    b_label: str = "b",
    title: str = "",
    row_breaks: Sequence[int] = (),
):
    """Heatmap of ``b/a`` ratios: ``cells`` are ``(op, shape, ratio)``; ``rows`` and
    ``columns`` give the order (default: first appearance), ``row_breaks`` the row indices
    where a new group (op family) starts, drawn as lines. Red: b slower than a (> 1),
    blue: faster, on a log scale centred on 1; grey: the key is in only one table."""
    require_matplotlib()
    import numpy as np
    from matplotlib.colors import LogNorm

    rows = list(rows) if rows is not None else list(dict.fromkeys(c[0] for c in cells))
    columns = list(columns) if columns is not None else list(dict.fromkeys(c[1] for c in cells))
    r_index, c_index = {r: i for i, r in enumerate(rows)}, {c: i for i, c in enumerate(columns)}
    grid = np.full((max(1, len(rows)), max(1, len(columns))), np.nan)
    for op, shape, ratio in cells:
        if ratio and ratio > 0 and math.isfinite(ratio):
            grid[r_index[op], c_index[shape]] = ratio
    finite = grid[np.isfinite(grid)]
    # The colour scale spans the 95th percentile of |log ratio| (outliers saturate), so a
    # few 10× cells do not wash the rest out.
    span = float(np.exp(np.percentile(np.abs(np.log(finite)), 95))) if finite.size else 2.0
    span = min(max(span, 1.25), 16.0)
    cell = 0.2 if len(rows) * len(columns) > 400 else 0.32
    fig = _figure(max(5.0, 2.6 + cell * len(columns)), max(3.0, 1.8 + cell * len(rows)))
    ax = fig.add_subplot()
    from matplotlib import colormaps

    cmap = colormaps["RdBu_r"].with_extremes(bad="#eeeeee")
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=LogNorm(vmin=1 / span, vmax=span), aspect="auto",
                      interpolation="nearest")
    ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=6)
    ax.set_yticks(range(len(rows)), rows, fontsize=6)
    ax.set_xlabel("input shape")
    ax.set_ylabel("op, precision")
    ax.tick_params(length=0)
    if len(rows) * len(columns) <= 900:
        for (i, j), value in np.ndenumerate(grid):
            if math.isfinite(value):
                strong = abs(math.log(value)) > 0.6 * math.log(span)
                ax.text(j, i, f"{value:.2f}" if value < 10 else f"{value:.0f}", ha="center", va="center",
                        fontsize=4.5 if cell < 0.3 else 6, color="white" if strong else "black")
    for boundary in row_breaks or ():
        ax.axhline(boundary - 0.5, color="#777777", linewidth=0.6)
    bar = fig.colorbar(image, ax=ax, shrink=0.6, pad=0.01, extend="both")
    ticks = [t for t in (1 / 8, 1 / 4, 1 / 3, 1 / 2, 2 / 3, 1, 1.5, 2, 3, 4, 8, 16) if 1 / span <= t <= span]
    bar.set_ticks(ticks, labels=[f"{t:.2g}" for t in ticks])
    bar.minorticks_off()
    bar.set_label(f"{b_label} / {a_label}  (> 1: {b_label} slower)")
    ax.set_title(title or f"{b_label} / {a_label}, keys in both tables", fontsize=10)
    return fig


# ---------------------------------------------------------------------------- (3) predicted vs measured
def predicted_vs_measured(series: Sequence[tuple[str, Sequence[tuple[float, float]]]], *, title: str = "",
                          stat: str = "p10"):
    """Predicted against measured latency of whole networks, log-log: ``series`` are
    ``(label, [(predicted_ms, measured_ms), …])``; the identity line and the ±5 % / ±10 %
    bands around it; each label says its share within ±5 % and ±10 %."""
    require_matplotlib()
    import numpy as np

    fig = _figure(6.4, 5.4)
    ax = fig.add_subplot()
    values = [v for _, pts in series for pair in pts for v in pair if v > 0]
    lo, hi = (min(values) / 1.15, max(values) * 1.15) if values else (1.0, 10.0)
    x = np.geomspace(lo, hi, 50)
    ax.fill_between(x, x * 0.90, x * 1.10, color="#dddddd", label="±10 %", linewidth=0)
    ax.fill_between(x, x * 0.95, x * 1.05, color="#bbbbbb", label="±5 %", linewidth=0)
    ax.plot(x, x, color="black", linewidth=0.8, label="predicted = measured")
    markers = ["o", "^", "s", "D", "v", "P"]
    for i, (label, pts) in enumerate(series):
        pts = [(p, m) for p, m in pts if p > 0 and m > 0]
        if not pts:
            continue
        errors = [abs(p - m) / m * 100 for p, m in pts]
        w5 = 100 * sum(e <= 5 for e in errors) / len(errors)
        w10 = 100 * sum(e <= 10 for e in errors) / len(errors)
        ax.scatter([m for _, m in pts], [p for p, _ in pts], s=22, marker=markers[i % len(markers)], alpha=0.85,
                   label=f"{label}: {len(pts)} networks, {w5:.0f}% within ±5%, {w10:.0f}% within ±10%",
                   zorder=3, edgecolors="white", linewidths=0.4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    from matplotlib.ticker import FuncFormatter

    for axis in (ax.xaxis, ax.yaxis):  # plain numbers: 100, 200, 500 (not 2×10²)
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    ax.tick_params(which="minor", labelsize=7)
    ax.set_xlabel(f"measured, {stat} [ms]")
    ax.set_ylabel(f"predicted, {stat} [ms]")
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    ax.set_title(title or "predicted vs measured networks", fontsize=10)
    return fig


# ---------------------------------------------------------------------------- (4) kernel breakdown
def kernel_breakdown(kernels: Sequence[tuple[str, float, bool]], *, title: str = "", total_ms: float | None = None,
                     stat: str = "p10"):
    """One network's per-kernel compute time: ``kernels`` are ``(label, compute_ms,
    predicted)`` in network order (top to bottom). Kernels priced from neighbouring rows
    (``predicted`` true) are hatched and labelled PREDICTED."""
    fig = _figure(8.0, max(2.4, 1.2 + 0.28 * len(kernels)))
    ax = fig.add_subplot()
    labels = [f"{i + 1}. {label}" for i, (label, _, _) in enumerate(kernels)]
    values = [ms for _, ms, _ in kernels]
    for i, (label, ms, predicted) in enumerate(kernels):
        ax.barh(i, ms, color="#f2c14e" if predicted else "#4c78a8", hatch="///" if predicted else None,
                edgecolor="#7a5c00" if predicted else "#2b4a6b", linewidth=0.6)
        ax.text(ms, i, f" {ms:.2f} ms" + ("  PREDICTED" if predicted else ""), va="center", fontsize=7,
                color="#7a5c00" if predicted else "black")
    ax.set_yticks(range(len(kernels)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"compute, {stat} [ms]")
    ax.set_xlim(0, (max(values) if values else 1.0) * 1.35)
    ax.grid(True, axis="x", alpha=0.3)
    from matplotlib.patches import Patch

    handles = [Patch(facecolor="#4c78a8", edgecolor="#2b4a6b", label="measured (table row)")]
    if any(p for _, _, p in kernels):
        handles.append(Patch(facecolor="#f2c14e", edgecolor="#7a5c00", hatch="///", label="PREDICTED from neighbouring rows"))
    ax.legend(handles=handles, fontsize=7, loc="lower right", frameon=False)
    total = f"; total {total_ms:.2f} ms" if total_ms is not None else ""
    ax.set_title((title or "per-kernel breakdown") + f" (sum {sum(values):.2f} ms{total})", fontsize=10)
    return fig


# ---------------------------------------------------------------------------- (5) Pareto front
def pareto_front(points: Sequence[Mapping], *, budget_ms: float | None = None, quality_label: str = "quality",
                 title: str = ""):
    """Latency/quality trade-off of a search.

    Args:
        points: one mapping per candidate with ``latency_ms`` (float, > 0), ``quality``
            (float, higher is better, e.g. the capacity proxy), ``feasible`` (bool: meets
            the budget and every other constraint) and ``on_front`` (bool: not dominated
            among the feasible ones); an optional ``label`` (str) is written next to
            front points.
        budget_ms: the latency budget, drawn as a vertical line (None: none).
        quality_label: the y axis' name.
        title: the figure's title.

    Returns:
        A ``matplotlib.figure.Figure``: infeasible points grey, feasible ones blue, the
        front orange and joined as a staircase in latency order, the budget dashed.
    """
    fig = _figure(6.8, 4.8)
    ax = fig.add_subplot()
    pts = [p for p in points if float(p["latency_ms"]) > 0]
    infeasible = [p for p in pts if not p["feasible"]]
    feasible = [p for p in pts if p["feasible"] and not p["on_front"]]
    front = sorted((p for p in pts if p["feasible"] and p["on_front"]), key=lambda p: float(p["latency_ms"]))
    if infeasible:
        ax.scatter([p["latency_ms"] for p in infeasible], [p["quality"] for p in infeasible], s=12, color=_GREY,
                   alpha=0.6, label=f"infeasible ({len(infeasible)})", edgecolors="none")
    if feasible:
        ax.scatter([p["latency_ms"] for p in feasible], [p["quality"] for p in feasible], s=14, color="#4c78a8",
                   alpha=0.7, label=f"feasible ({len(feasible)})", edgecolors="none")
    if front:
        ax.step([p["latency_ms"] for p in front], [p["quality"] for p in front], where="post", color="#e45756",
                linewidth=1.0, alpha=0.8)
        ax.scatter([p["latency_ms"] for p in front], [p["quality"] for p in front], s=30, color="#e45756",
                   label=f"Pareto front ({len(front)})", zorder=3, edgecolors="white", linewidths=0.5)
        for p in front:
            if p.get("label"):
                ax.annotate(str(p["label"]), (p["latency_ms"], p["quality"]), fontsize=6, xytext=(4, -8),
                            textcoords="offset points")
    if budget_ms is not None:
        ax.axvline(budget_ms, color="black", linestyle="--", linewidth=1.0, label=f"budget {budget_ms:g} ms")
        right = max([float(p["latency_ms"]) for p in pts] + [budget_ms]) * 1.05
        ax.axvspan(budget_ms, right, color="#f0f0f0", zorder=0)
        ax.set_xlim(right=right)
    ax.set_xlabel("latency [ms]")
    ax.set_ylabel(quality_label)
    ax.grid(True, alpha=0.3)
    if pts:
        ax.legend(fontsize=7, loc="lower right", frameon=False)
    else:
        ax.text(0.5, 0.5, "no trials", transform=ax.transAxes, ha="center", va="center", color=_GREY)
    ax.set_title(title or "latency / quality trade-off", fontsize=10)
    return fig
