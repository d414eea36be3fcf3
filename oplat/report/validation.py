"""``oplat validate``'s report: predicted vs measured networks, as Markdown and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tabulate import tabulate

from oplat.errors import OplatError
from oplat.measure import DRIFT_PCT
from oplat.validate import ValidationReport

__all__ = ["report_markdown", "save_report"]


def report_markdown(report: ValidationReport, *, device: str, space: str, table: str, seed: int,
                    provenance: str | None = None) -> str:
    """The validation report as Markdown: provenance, summary, worst cases, error by kernel type."""
    n = len(report.results)
    lines = [
        f"## {device} {report.precision}: {n} random {space} networks, table {table}"
        + ("" if report.calibrated else " (UNCALIBRATED predictions)"),
        "",
    ]
    if provenance:
        lines += [provenance, ""]
    lines += [
        f"statistic: {report.stat} of the wall time (prediction and measurement alike); "
        f"networks sampled with seed {seed}, none of them used for calibration",
        "",
        f"within ±5%: {report.share_within(5):.0f}%   within ±10%: {report.share_within(10):.0f}%   "
        f"mean |error|: {report.mape_pct:.1f}%",
        "",
    ]
    if report.drift:
        ratios = np.array(report.drift)
        lines += [
            f"table drift: {len(ratios)} re-timings of the table's rows, interleaved with the networks, ran at "
            f"{np.median(ratios):.2f}× their table p10 (median; {ratios.min():.2f}–{ratios.max():.2f}×)"
            + (f". DRIFT: more than {DRIFT_PCT:.0f} % off, the machine no longer runs as in the table's window, and the "
               "errors above include that; re-measure the table (`oplat measure --out NEW`), then validate again"
               if report.drifted else ""),
            "",
        ]
    if report.off_grid:
        lines += [
            f"OFF THE GRID: input size and widths the op set does not hold, every conv priced by the neighbour model; "
            f"{report.extrapolated} of {n} priced networks used an estimate flagged EXTRAPOLATED; "
            f"{len(report.refused)} refused (a kernel too far from every measured row), not measured:",
            "",
        ]
        lines += [f"- {r['arch']}: {r['reason']}" for r in report.refused[:10]] + ([""] if report.refused else [])
    lines += [
        "worst cases:",
        tabulate(
            [[r.arch, f"{r.predicted_ms:.2f}", f"{r.measured_ms:.2f}", f"{r.error_pct:+.1f}", f"{100 * r.measured_share:.0f}"]
             for r in report.worst(5)],
            headers=["Network", "Predicted [ms]", "Measured [ms]", "Error [%]", "Kernels from table [%]"],
            tablefmt="github",
        ),
    ]
    kerr = report.kernel_errors()
    if any(m for _, m, _ in kerr.values()):
        lines += [
            "",
            f"error by kernel type, summed over the networks (measured: each network's {report.stat} wall time split "
            "by the runtime's per-node profile of it; (boundary) is the composition's boundary + constant term vs the "
            "profiled reorders and unattributed nodes):",
            tabulate(
                [[op, f"{p:.1f}", f"{m:.1f}", f"{e:+.1f}" if m else "not in the profile (fused)"]
                 for op, (p, m, e) in sorted(kerr.items())],
                headers=["Kernel type", "Predicted [ms]", "Measured [ms]", "Error [%]"],
                tablefmt="github",
            ),
        ]
    return "\n".join(lines)


def save_report(report: ValidationReport, text: str, out_dir: str | Path, stem: str) -> Path:
    """Write ``<out_dir>/<stem>.md`` (the Markdown) and ``.json`` (the report's data, from
    which the Markdown can be rendered again); returns the path without suffix."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / stem
        path.with_suffix(".md").write_text(text + "\n")
        path.with_suffix(".json").write_text(json.dumps(report.as_dict(), indent=1))
    except OSError as exc:
        raise OplatError(f"cannot write the validation report under {out_dir} ({exc.strerror})") from None
    return path
