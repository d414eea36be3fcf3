"""``oplat search``'s report (``report.md``) and Pareto front (``pareto.csv``), as text.

The search (:mod:`oplat.search.emit`) writes them; the per-kernel breakdown and how the
total was composed come from :mod:`oplat.report.prediction`.
"""

from __future__ import annotations

import csv
import io

from tabulate import tabulate

from oplat.arch import convs, describe, macs, params
from oplat.report.prediction import calibration_clause, kernel_basis_table
from oplat.search.config import SearchConfig
from oplat.search.pricing import PRECISIONS
from oplat.search.proxy import QUALITY_PROXY_FORMULA, QUALITY_PROXY_NAME, learned_macs_per_output_pixel, receptive_field_px
from oplat.search.result import Emission
from oplat.search.select import Candidate, Selection

__all__ = ["PARETO_COLUMNS", "pareto_csv", "search_report"]

PARETO_COLUMNS = ["trial", "predicted_ms", "quality_proxy", "params", "macs", "measured_share", "feasible", "arch"]
_FILES = (("fp32", "best.onnx"), ("int8", "best.int8.onnx"))


def _header(config: SearchConfig, selection: Selection, emission: Emission, storage_text: str) -> list[str]:
    space, arch, precision = config.space, emission.chosen.arch, config.precision
    return [
        f"# oplat search `{config.name}`",
        "",
        f"- search space: `{space.name}` (fingerprint {space.fingerprint}), ×{space.scale}, "
        f"{space.in_h}×{space.in_w} → {arch.out_h}×{arch.out_w}",
        f"- budget: **{config.budget_ms:g} ms {precision}** (the {precision} network is what the budget constrains)",
        f"- latency table: `{config.table_text}` (device {emission.device_text})",
        f"- study: `{storage_text}`, {len(selection.done)} completed trials, {selection.trials_feasible} of them feasible "
        f"({len(selection.feasible)} distinct networks)"
        f", sampler {'NSGA-II (latency ↓, quality ↑)' if config.pareto else 'TPE (multivariate, constrained)'}",
        "",
    ]


def _winner(chosen: Candidate) -> list[str]:
    arch = chosen.arch
    lines = [
        "## Winner",
        "",
        f"- architecture: `{describe(arch)}` (trial {chosen.number})",
        f"- parameters: {params(arch):,}",
        f"- MACs: {macs(arch):,} ({macs(arch) / 1e9:.4g} G) per {arch.in_h}×{arch.in_w} frame",
        f"- quality: **{QUALITY_PROXY_NAME}** Q = {chosen.quality:.3f} — a proxy, not a PSNR estimate: "
        f"{QUALITY_PROXY_FORMULA}. Here: {learned_macs_per_output_pixel(arch):.1f} learned MACs per output pixel, "
        f"receptive field {receptive_field_px(arch)} LR px. It ranks networks of this family by capacity; train and "
        "evaluate the winner on real images before trusting it.",
        "- weights: He-initialised placeholders (deterministic); both files are architectures to train, "
        "not trained models.",
        "",
        "| layer | conv | activation |",
        "|---|---|---|",
    ]
    for i, c in enumerate(convs(arch)):
        lines.append(f"| {i} | {c.kernel}×{c.kernel}, {c.c_in} → {c.c_out} | {'ReLU' if c.act == 'relu' else 'linear'} |")
    return lines


def _predicted(precision: str, emission: Emission) -> list[str]:
    lines = ["", "## Predicted latency", ""]
    rows = []
    for prec, file in _FILES:
        pred, why = emission.preds[prec]
        if pred is None:
            rows.append([file, prec, "—", "—", "—", f"not predictable: {why}"])
        else:
            rows.append([file, prec, f"{pred.total_ms:.4g}", "yes" if pred.calibrated else "no (sum of kernels)", f"{100 * pred.measured_share:.0f}%", ""])
    lines.append(tabulate(rows, headers=["file", "precision", "predicted ms", "calibrated", "kernels measured", "note"], tablefmt="github"))
    lines.append("")
    for prec in (precision, *[p for p in PRECISIONS if p != precision]):
        pred, _ = emission.preds[prec]
        if pred is None:
            continue
        file = "best.int8.onnx" if prec == "int8" else "best.onnx"
        lines += [
            f"### Per-kernel breakdown, `{file}` ({prec})",
            "",
            f"Total {pred.total_ms:.4g} ms — {calibration_clause(pred)}. `measured`: the table has this exact kernel; "
            "`predicted`: scaled from the nearest measured rows named in *basis*.",
            "",
            kernel_basis_table(pred),
            "",
        ]
    return lines


def _measured(budget_ms: float, precision: str, emission: Emission) -> list[str]:
    lines = ["## Measured latency", ""]
    measured = emission.measured
    if not any(measured.values()):
        return lines + ["Not measured (no device given).", ""]
    rows = []
    for prec, file in _FILES:
        m = measured.get(prec)
        if m:
            rows.append([file, prec, f"{m['median_ms']:.4g}", f"{m['p10_ms']:.4g}", f"{m['p90_ms']:.4g}", "yes" if m.get("noisy") else "no"])
    lines += [tabulate(rows, headers=["file", "precision", "median ms", "p10 ms", "p90 ms", "noisy"], tablefmt="github"), ""]
    if emission.over_budget:
        lines += [f"OVER BUDGET: the emitted network measured over the {budget_ms:g} ms {precision} budget.", ""]
    else:
        lines += [f"Within budget: measured {precision} median ≤ {budget_ms:g} ms.", ""]
    if emission.substituted:
        lines += [emission.substituted, ""]
    if len(emission.tried) > 1 or emission.substituted:
        lines += ["Candidates measured (quality order):", ""]
        lines.append(
            tabulate(
                [[c.number, describe(c.arch), f"{c.quality:.3f}", f"{c.predicted_ms:.4g}", f"{m['median_ms']:.4g}"] for c, m in emission.tried],
                headers=["trial", "network", "Q", "predicted ms", f"measured {precision} ms"],
                tablefmt="github",
            )
        )
        lines.append("")
    return lines


def _files(tflite_note: str) -> list[str]:
    return [
        "## Files",
        "",
        "- `best.onnx`: FP32, opset 17; `best.int8.onnx`: QDQ (uint8 activations, int8 per-channel weights).",
        f"- {tflite_note}" if tflite_note else "",
        "- `pareto.csv`: the latency / quality front of all completed trials (predicted latency, the capacity proxy).",
        "- oplat metadata (`oplat.*`) is in each file's `metadata_props`.",
        "",
    ]


def search_report(config: SearchConfig, selection: Selection, emission: Emission, *, storage_text: str) -> str:
    """``report.md``: the search, the winner, its predicted (per kernel) and measured
    latency, the emitted files."""
    lines = _header(config, selection, emission, storage_text)
    lines += _winner(emission.chosen)
    lines += _predicted(config.precision, emission)
    lines += _measured(config.budget_ms, config.precision, emission)
    lines += _files(emission.tflite_note)
    return "\n".join(lines)


def pareto_csv(front: list[Candidate], budget_ms: float) -> str:
    """``pareto.csv``: one row per front network (:data:`PARETO_COLUMNS`), CRLF line ends."""
    out = io.StringIO(newline="")
    w = csv.writer(out)
    w.writerow(PARETO_COLUMNS)
    for c in front:
        w.writerow([
            c.number,
            f"{c.predicted_ms:.6g}",
            f"{c.quality:.6f}",
            params(c.arch),
            macs(c.arch),
            f"{c.measured_share:.3f}",
            "yes" if c.predicted_ms <= budget_ms else "no",
            describe(c.arch),
        ])
    return out.getvalue()
