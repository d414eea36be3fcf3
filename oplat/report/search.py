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

__all__ = ["PARETO_COLUMNS", "PARETO_PSNR_COLUMNS", "pareto_csv", "search_page", "search_report"]

PARETO_COLUMNS = ["trial", "predicted_ms", "quality_proxy", "params", "macs", "measured_share", "feasible", "arch"]
#: pareto.csv of a psnr search: the PSNRs are the trials' own (short training, measured
#: from their ONNX files on the validation images).
PARETO_PSNR_COLUMNS = [
    "trial", "predicted_ms", "fp32_psnr_db", "int8_psnr_db", "int8_drop_db", "train_steps", "quality_proxy", "params",
    "macs", "measured_share", "feasible", "arch",
]
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
        + (f", {selection.pruned} more stopped by the pruner" if selection.pruned else "")
        + f", sampler {'NSGA-II (latency ↓, quality ↑)' if config.pareto else 'TPE (multivariate, constrained)'}",
        f"- objective: {_objective_text(config)}",
        "",
    ]


def _objective_text(config: SearchConfig) -> str:
    objective = config.objective
    if objective is None:
        return f"the capacity proxy ({QUALITY_PROXY_NAME}: {QUALITY_PROXY_FORMULA}; no training)"
    return (
        f"**measured {config.precision.upper()} PSNR-Y** of each feasible trial after {objective.trial_steps} training "
        f"steps (batch {objective.batch} × {objective.patch}×{objective.patch} LR patches, lr {objective.lr:g}, seed "
        f"{objective.seed}), its ONNX files run in ONNX Runtime (exact int8) on the validation images; pruner: "
        f"{objective.pruner_text(pareto=config.pareto)}; infeasible trials are not trained"
    )


def _proxy_quality(chosen: Candidate) -> list[str]:
    arch = chosen.arch
    return [
        f"- quality: **{QUALITY_PROXY_NAME}** Q = {chosen.quality:.3f} — a proxy, not a PSNR estimate: "
        f"{QUALITY_PROXY_FORMULA}. Here: {learned_macs_per_output_pixel(arch):.1f} learned MACs per output pixel, "
        f"receptive field {receptive_field_px(arch)} LR px. It ranks networks of this family by capacity; train and "
        "evaluate the winner on real images before trusting it.",
        "- weights: He-initialised placeholders (deterministic); both files are architectures to train, "
        "not trained models.",
    ]


def quality_rows(quality) -> list[list[str]]:
    """Rows (network, file, PSNR-Y, SSIM-Y, vs FP32) of a psnr search's emitted files."""
    r = quality.results
    rows = [["bicubic (baseline)", "—", f"{r['bicubic'].psnr:.2f}", f"{r['bicubic'].ssim:.4f}", ""]]
    rows.append(["FP32", "best.onnx", f"{r['fp32'].psnr:.2f}", f"{r['fp32'].ssim:.4f}",
                 f"{r['fp32'].psnr - r['bicubic'].psnr:+.2f} dB vs bicubic"])
    rows.append(["INT8 PTQ (QDQ)", "best.int8.onnx", f"{r['int8'].psnr:.2f}", f"{r['int8'].ssim:.4f}",
                 f"drop {quality.int8_drop_db:.2f} dB"])
    return rows


QUALITY_HEADERS = ["network", "file", "PSNR-Y dB", "SSIM-Y", "note"]


def _psnr_quality(config: SearchConfig, chosen: Candidate, quality) -> list[str]:
    sc = chosen.scores
    trial = (
        f"in its {int(sc.get('train_steps', 0))}-step trial: FP32 {sc['fp32_psnr']:.2f} dB, INT8 {sc['int8_psnr']:.2f} dB "
        f"(drop {sc['int8_drop_db']:.2f} dB)" if "int8_psnr" in sc else "no trial scores recorded"
    )
    resumed = f"; resumed from {quality.resumed_from}" if quality.resumed_from else ""
    return [
        f"- ranked by: {config.precision.upper()} PSNR-Y {chosen.quality:.2f} dB {trial}",
        f"- weights: **trained** {quality.steps} steps on {quality.data_text}, {quality.device_text}"
        + (f", {quality.seconds_per_step:.3f} s/step" if quality.seconds_per_step else "")
        + f" (run folder `{quality.folder}`{resumed})",
        "- quality of the emitted files, measured from disk (whole validation images, Y of BT.601, border of ×scale "
        "pixels cropped, outputs rounded to 8 bits; ONNX Runtime, exact int8):",
        "",
        tabulate(quality_rows(quality), headers=QUALITY_HEADERS, tablefmt="github"),
        "",
        "For a quantization-aware fine-tune: `oplat train best.onnx --qat`.",
    ]


def _winner(config: SearchConfig, chosen: Candidate, quality) -> list[str]:
    arch = chosen.arch
    lines = [
        "## Winner",
        "",
        f"- architecture: `{describe(arch)}` (trial {chosen.number})",
        f"- parameters: {params(arch):,}",
        f"- MACs: {macs(arch):,} ({macs(arch) / 1e9:.4g} G) per {arch.in_h}×{arch.in_w} frame",
        *(_proxy_quality(chosen) if quality is None else _psnr_quality(config, chosen, quality)),
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


MEASURED_HEADERS = ["file", "precision", "median ms", "p10 ms", "p90 ms", "noisy"]


def _measured_rows(emission: Emission) -> list[list[str]]:
    """One row (:data:`MEASURED_HEADERS`) per emitted file measured on the device."""
    return [
        [file, prec, f"{m['median_ms']:.4g}", f"{m['p10_ms']:.4g}", f"{m['p90_ms']:.4g}", "yes" if m.get("noisy") else "no"]
        for prec, file in _FILES if (m := emission.measured.get(prec))
    ]


def _budget_verdict(budget_ms: float, precision: str, emission: Emission) -> str:
    if emission.over_budget:
        return f"OVER BUDGET: the emitted network measured over the {budget_ms:g} ms {precision} budget."
    return f"Within budget: measured {precision} median ≤ {budget_ms:g} ms."


def _measured(budget_ms: float, precision: str, emission: Emission) -> list[str]:
    lines = ["## Measured latency", ""]
    measured = emission.measured
    if not any(measured.values()):
        return lines + ["Not measured (no device given).", ""]
    lines += [tabulate(_measured_rows(emission), headers=MEASURED_HEADERS, tablefmt="github"), ""]
    lines += [_budget_verdict(budget_ms, precision, emission), ""]
    if emission.substituted:
        lines += [emission.substituted, ""]
    if len(emission.tried) > 1 or emission.substituted:
        trained = emission.quality is not None
        lines += [
            "Candidates measured (quality order" + ("; before training, with placeholder weights: the same graphs — "
                                                   "the table above measured the trained files" if trained else "") + "):",
            "",
        ]
        lines.append(
            tabulate(
                [[c.number, describe(c.arch), f"{c.quality:.3f}", f"{c.predicted_ms:.4g}", f"{m['median_ms']:.4g}"] for c, m in emission.tried],
                headers=["trial", "network", "PSNR dB" if trained else "Q", "predicted ms", f"measured {precision} ms"],
                tablefmt="github",
            )
        )
        lines.append("")
    return lines


def _files(tflite_note: str, trained: bool) -> list[str]:
    front = ("the trials' own FP32 / INT8 PSNR and drop after their short training" if trained
             else "the capacity proxy")
    return [
        "## Files",
        "",
        "- `best.onnx`: FP32, opset 17; `best.int8.onnx`: QDQ (uint8 activations, int8 per-channel weights"
        + ("; min-max calibrated on training patches)." if trained else ")."),
        f"- {tflite_note}" if tflite_note else "",
        f"- `pareto.csv`: the latency / quality front of all completed trials (predicted latency, {front}).",
        "- oplat metadata (`oplat.*`) is in each file's `metadata_props`.",
        "",
    ]


def search_report(config: SearchConfig, selection: Selection, emission: Emission, *, storage_text: str) -> str:
    """``report.md``: the search, the winner, its predicted (per kernel) and measured
    latency, the emitted files."""
    lines = _header(config, selection, emission, storage_text)
    lines += _winner(config, emission.chosen, emission.quality)
    lines += _predicted(config.precision, emission)
    lines += _measured(config.budget_ms, config.precision, emission)
    lines += _files(emission.tflite_note, emission.quality is not None)
    return "\n".join(lines)


def pareto_csv(front: list[Candidate], budget_ms: float, *, psnr: bool = False) -> str:
    """``pareto.csv``: one row per front network (:data:`PARETO_COLUMNS`; a psnr search's:
    :data:`PARETO_PSNR_COLUMNS`), CRLF line ends."""
    out = io.StringIO(newline="")
    w = csv.writer(out)
    w.writerow(PARETO_PSNR_COLUMNS if psnr else PARETO_COLUMNS)
    for c in front:
        sc = c.scores
        scores = [f"{sc[k]:.4f}" if k in sc else "" for k in ("fp32_psnr", "int8_psnr", "int8_drop_db")]
        quality = [*scores, str(int(sc["train_steps"])) if "train_steps" in sc else "",
                   f"{sc['quality_proxy']:.6f}" if "quality_proxy" in sc else ""] if psnr else [f"{c.quality:.6f}"]
        w.writerow([
            c.number,
            f"{c.predicted_ms:.6g}",
            *quality,
            params(c.arch),
            macs(c.arch),
            f"{c.measured_share:.3f}",
            "yes" if c.predicted_ms <= budget_ms else "no",
            describe(c.arch),
        ])
    return out.getvalue()


# ---------------------------------------------------------------------- the review page
def _front_points(config: SearchConfig, selection: Selection) -> list[dict]:
    """Every completed trial that has a quality, for the Pareto figure."""
    front = {c.number for c in selection.front}
    return [
        {"latency_ms": c.predicted_ms, "quality": c.quality, "feasible": c.predicted_ms <= config.budget_ms,
         "on_front": c.number in front and c.predicted_ms <= config.budget_ms,
         "label": f"#{c.number}" if c.number in front else ""}
        for c in selection.done
        if c.quality > float("-inf")
    ]


def _front_table(config: SearchConfig, selection: Selection) -> str:
    from oplat.report.html import html_table

    psnr = config.objective is not None
    rows = []
    for c in selection.front:
        sc = c.scores
        quality = ([f"{sc[k]:.2f}" if k in sc else "—" for k in ("fp32_psnr", "int8_psnr", "int8_drop_db")] if psnr
                   else [f"{c.quality:.3f}"])
        rows.append([str(c.number), describe(c.arch), f"{c.predicted_ms:.4g}", *quality, f"{params(c.arch):,}",
                     "yes" if c.predicted_ms <= config.budget_ms else "no"])
    quality_headers = ["FP32 PSNR dB", "INT8 PSNR dB", "INT8 drop dB"] if psnr else ["Q (proxy)"]
    headers = ["trial", "network", "predicted ms", *quality_headers, "params", "feasible"]
    align = ["right", "left", "right", *["right"] * len(quality_headers), "right", "left"]
    return html_table(headers, rows, align=align)


def _measured_html(config: SearchConfig, emission: Emission) -> str:
    from oplat.report.html import html_table, paragraphs

    if not any(emission.measured.values()):
        return paragraphs(["Not measured (no device given): every latency on this page is PREDICTED."], cls="note")
    verdict = _budget_verdict(config.budget_ms, config.precision, emission)
    notes = [f"measured end to end on {emission.device_text}", verdict] + ([emission.substituted] if emission.substituted else [])
    return paragraphs(notes, cls="note") + html_table(
        MEASURED_HEADERS, _measured_rows(emission), align=["left", "left", "right", "right", "right", "left"],
    )


def search_page(config: SearchConfig, selection: Selection, emission: Emission, *, storage_text: str):
    """The review page of a search (``report.html``): provenance, the latency / quality
    front with the budget (infeasible trials grey), the emitted network's per-kernel
    breakdown, its measured latency and (psnr search) quality, and the front as a table."""
    from oplat.report import figures
    from oplat.report.html import ReviewPage, add_prediction, html_table
    from oplat.search.study import quality_label

    figures.require_matplotlib()
    chosen = emission.chosen
    title = f"oplat search {config.name}: {config.budget_ms:g} ms {config.precision} on {emission.device_text}"
    page = ReviewPage(title, intro=[
        f"search space {config.space.name} (fingerprint {config.space.fingerprint}), study {storage_text}, "
        f"{len(selection.done)} completed trials ({selection.trials_feasible} feasible)",
        f"objective: {_objective_text(config)}".replace("**", ""),
        f"winner: trial {chosen.number}, {describe(chosen.arch)}",
        "latencies on the x axis are PREDICTED from the table (measured figures are in the tables below)",
    ])
    page.add_figure(
        "pareto", f"{quality_label(config)} vs predicted {config.precision} latency",
        figures.pareto_front(_front_points(config, selection), budget_ms=config.budget_ms,
                             quality_label=quality_label(config), title=f"search {config.name}"),
        "grey: over the budget" + ("" if config.objective is None else "; only trained trials have a PSNR (infeasible "
                                                                        "and pruned ones are not shown)"),
    )
    pred = emission.preds[config.precision][0]
    if pred is not None:
        file = "best.int8.onnx" if config.precision == "int8" else "best.onnx"
        add_prediction(page, pred, model=file, table=config.table_text, device=config.predictor.device,
                       measured_between=config.predictor.measured_between)
    page.add_section("Measured latency", _measured_html(config, emission))
    if emission.quality is not None:
        page.add_section("Quality of the emitted files (measured from disk)",
                         html_table(QUALITY_HEADERS, quality_rows(emission.quality),
                                    align=["left", "left", "right", "right", "left"]))
    page.add_section("Pareto front", _front_table(config, selection))
    return page
