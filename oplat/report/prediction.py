"""A network's predicted latency: the total, how it was composed, the per-kernel breakdown.

``predict`` prints it, ``search`` puts it in its report; both take it from here. In the
terminal (:func:`prediction_text`) a kernel priced from neighbouring rows says
``PREDICTED from …`` and a total without a fitted composition says ``UNCALIBRATED``; the
search report keeps the layout its ``report.md`` has always had (:func:`kernel_basis_table`:
source and basis in columns of their own; :func:`calibration_clause`: ``uncalibrated: …``).
"""

from __future__ import annotations

from tabulate import tabulate

from oplat.predict import Prediction
from oplat.report.provenance import provenance_line

__all__ = [
    "BREAKDOWN_HEADERS", "breakdown_rows", "calibration_clause", "composition_text", "kernel_basis_table", "network_summary",
    "predict_report", "prediction_json", "prediction_text", "sums_line",
]

BREAKDOWN_HEADERS = ["Kernel", "ONNX nodes", "Compute [ms]", "In-network reorder [ms]", "Lone-op layout [ms]", "Share [%]", "Source"]


def breakdown_rows(pred: Prediction) -> list[list[str]]:
    """One row per kernel: label, ONNX nodes, compute, in-network reorder and lone-op
    layout ms, share of the priced sum, source."""
    total = (pred.compute_ms + pred.reorder_ms) or 1.0
    rows = []
    for cost in pred.kernels:
        source = "measured" if cost.source == "measured" else f"PREDICTED {cost.basis}"
        rows.append(
            [
                cost.label,
                "+".join(cost.kernel.nodes),
                f"{cost.compute_ms:.3f}",
                f"{cost.reorder_ms:.3f}",
                f"{cost.layout_ms:.3f}",
                f"{100 * (cost.compute_ms + cost.reorder_ms) / total:.1f}",
                source + (f"; {cost.kernel.note}" if cost.kernel.note else ""),
            ]
        )
    return rows


def composition_text(pred: Prediction) -> str:
    """How the total was made from the kernel sum (the fitted composition, or UNCALIBRATED)."""
    if pred.calibrated:
        c = pred.composition
        return (
            f"calibrated on {c.networks} measured networks (fit error {c.fit_mape_pct:.1f}%): "
            f"{c.compute:.3f}×compute + {c.reorder:.3f}×in-network reorders + {c.boundary_per_melem_ms:.3f} ms/Melem boundary "
            f"+ {c.const_ms:.3f} ms"
            + ("; fitted before in-network reorders were priced: its compute scale absorbs them, "
               "`oplat calibrate` refits" if c.reorder == 0 and pred.reorder_ms > 0 else "")
        )
    return ("UNCALIBRATED: plain sum of per-kernel compute times and in-network reorders "
            "(run `oplat calibrate` to fit the composition)")


def calibration_clause(pred: Prediction) -> str:
    """How the total was made, as a clause for running text (``oplat search``'s report):
    the fitted composition and its fit error, or ``uncalibrated`` and what to run."""
    if pred.calibrated:
        c = pred.composition
        mape = f", fit error {c.fit_mape_pct:.1f}% MAPE" if c.fit_mape_pct is not None else ""
        return f"calibrated (composition model fitted on {c.networks} measured networks{mape})"
    return "uncalibrated: the total is the plain sum of kernel compute times and in-network reorders (run `oplat calibrate`)"


def kernel_basis_table(pred: Prediction) -> str:
    """The per-kernel breakdown as a GitHub table with the source (``measured`` /
    ``predicted``) and its basis in columns of their own, and a **sum** row
    (``oplat search``'s report; :func:`breakdown_rows` is the terminal's)."""
    rows = [
        [i, k.label, ", ".join(k.kernel.nodes), f"{k.compute_ms:.4g}", f"{k.reorder_ms:.4g}", f"{k.layout_ms:.4g}", k.source, k.basis]
        for i, k in enumerate(pred.kernels)
    ]
    rows.append(["", "**sum**", "", f"{pred.compute_ms:.4g}", f"{pred.reorder_ms:.4g}", f"{pred.layout_ms:.4g}", "", pred.reorder_note])
    headers = ["#", "kernel", "nodes", "compute ms", "in-network reorder ms", "lone-op layout ms", "source", "basis"]
    return tabulate(rows, headers=headers, tablefmt="github")


def prediction_text(pred: Prediction, *, fmt: str = "github") -> str:
    """The predicted total, the composition used, and the per-kernel breakdown table."""
    lines = [
        f"predicted latency ({pred.stat}): {pred.total_ms:.2f} ms, {pred.fps:.1f} fps at batch {pred.net.batch}  ({composition_text(pred)})",
        sums_line(pred),
        "",
        tabulate(breakdown_rows(pred), headers=BREAKDOWN_HEADERS, tablefmt=fmt, disable_numparse=True),
    ]
    return "\n".join(lines)


def sums_line(pred: Prediction) -> str:
    """The sums the total was composed from, how the in-network reorders were found, and
    how many kernels are measured."""
    measured = sum(k.source == "measured" for k in pred.kernels)
    reorders = f"; {pred.reorder_note}" if pred.reorder_note else ""
    return (
        f"sum of kernel compute {pred.compute_ms:.2f} ms + in-network reorders {pred.reorder_ms:.2f} ms{reorders} "
        f"(lone-op reorders {pred.layout_ms:.2f} ms, not part of a network), "
        + (
            f"all {len(pred.kernels)} kernels measured"
            if measured == len(pred.kernels)
            else f"{measured}/{len(pred.kernels)} kernels measured, the rest PREDICTED"
        )
    )


def network_summary(pred: Prediction) -> str:
    net = pred.net
    return (
        f"params {net.params:,}  MACs {net.macs / 1e9:.2f} G  peak activation memory "
        f"{net.peak_activation_bytes / 2**20:.1f} MiB (graph liveness)"
    )


def predict_report(pred: Prediction, *, model: str, table: str, device: dict, measured_between=None,
                   fmt: str = "simple") -> str:
    """``oplat predict``'s text: what was predicted on which table (with its provenance),
    the network's size, then :func:`prediction_text`."""
    return "\n".join(
        [
            f"{model} on {device.get('name', '?')} (table {table}), {pred.net.precision}",
            provenance_line(device, measured_between=measured_between, stat=pred.stat),
            network_summary(pred),
            prediction_text(pred, fmt=fmt),
        ]
    )


def prediction_json(pred: Prediction, *, model: str, table: str, device: dict, measured_between=None) -> dict:
    """``oplat predict --format json``: every figure of the text, as numbers."""
    net = pred.net
    return {
        "model": model,
        "table": table,
        "device": device.get("name"),
        "table_measured_between": list(measured_between) if measured_between else None,
        "predicted_ms": pred.total_ms,
        "batch": net.batch,
        "fps": pred.fps,
        "stat": pred.stat,
        "calibrated": pred.calibrated,
        "compute_ms": pred.compute_ms,
        "reorder_ms": pred.reorder_ms,
        "reorder_note": pred.reorder_note,
        "layout_ms": pred.layout_ms,
        "params": net.params,
        "macs": net.macs,
        "peak_activation_bytes": net.peak_activation_bytes,
        "kernels": [
            {
                "kernel": c.label,
                "nodes": list(c.kernel.nodes),
                "compute_ms": c.compute_ms,
                "reorder_ms": c.reorder_ms,
                "layout_ms": c.layout_ms,
                "source": c.source,
                "basis": c.basis,
            }
            for c in pred.kernels
        ],
    }
