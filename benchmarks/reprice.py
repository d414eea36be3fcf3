"""Re-price the networks of saved ``oplat validate`` reports with the current predictor.

A predictor change is judged on the evidence the reports already hold: the networks'
end-to-end times (their statistic, taken on the table's host in the table's window,
next to the re-timed table rows of the report's drift line) and their profiled kernel
shares stay as they were; only the prediction is made again, from the same table. Prints
per report the share within ±5 / ±10 %, the mean error and the error by kernel type, as
the report had them and as the current code makes them. Nothing is measured and no
report is rewritten: a committed report keeps the predictions it was made with.

In-network reorders (ONNX Runtime) are planned from this host's runtime, and its NCHWc
layout depends on the CPU (AVX-512 blocks 16 channels, AVX2 8), so by default they are
kept as the report has them (planned on the table's host); ``--replan`` plans them here
too (right only on the table's host).

    python benchmarks/reprice.py results/validate/cpu/abpn-offgrid-fp32.json results/validate/cpu/abpn-offgrid-int8.json
    python benchmarks/reprice.py results/validate/litert/abpn-int8.json --table results/litert/sr-core.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from tabulate import tabulate

from oplat.arch import ArchSpec, Layer
from oplat.attribution import kernel_type
from oplat.predict import Predictor
from oplat.validate import ValidationReport, network_model


def _table_of(report: Path) -> Path:
    """results/validate/<device>/X.json -> results/<device>/sr-core.jsonl"""
    return report.parents[2] / report.parent.name / "sr-core.jsonl"


def _arch(data: dict) -> ArchSpec:
    return ArchSpec(**{**data, "layers": tuple(Layer(**layer) for layer in data["layers"])})


def reprice(report: ValidationReport, predictor: Predictor, *, replan: bool = False) -> ValidationReport:
    """``report`` with every network's prediction made again by ``predictor``."""
    results = []
    for r in report.results:
        pred = predictor.predict(network_model(_arch(r.arch_spec), report.precision))
        features = dict(pred.features)
        if not replan:
            features.update(reorder_ms=r.features.get("reorder_ms", 0.0), layout_ms=r.features["layout_ms"])
        comp = pred.composition
        total = comp.total(features)
        by_kernel = {t: [0.0, measured] for t, (_, measured) in r.by_kernel.items()}
        for k in pred.kernels:
            by_kernel.setdefault(kernel_type(k.kernel.spec, report.precision), [0.0, 0.0])[0] += comp.compute * k.compute_ms
        by_kernel.setdefault("(boundary)", [0.0, 0.0])[0] = total - comp.compute * pred.compute_ms
        results.append(replace(r, predicted_ms=total, features=features, measured_share=pred.measured_share,
                               by_kernel={t: tuple(v) for t, v in by_kernel.items()},
                               extrapolated=any("EXTRAPOLATED" in k.basis for k in pred.kernels)))
    return replace(report, results=results)


def _summary(name: str, report: ValidationReport) -> list:
    errors = report.errors_pct
    return [name, f"{report.share_within(5):.0f} %", f"{report.share_within(10):.0f} %", f"{report.mape_pct:.1f} %",
            f"{errors.min():+.1f} … {errors.max():+.1f} %"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="+", type=Path, help="saved validate reports (.json)")
    ap.add_argument("--table", type=Path, help="the table the reports were made with (default: results/<device>/sr-core.jsonl)")
    ap.add_argument("--replan", action="store_true", help="plan in-network reorders on this host too")
    args = ap.parse_args(argv)
    for path in args.reports:
        table = args.table or _table_of(path)
        before = ValidationReport.from_dict(json.loads(path.read_text()))
        if not all(r.arch_spec for r in before.results):
            print(f"{path}: its networks carry no arch_spec to rebuild them from", file=sys.stderr)
            return 1
        after = reprice(before, Predictor.from_table(table, stat=before.stat), replan=args.replan)
        print(f"## {path} ({len(before.results)} {before.precision} networks, table {table}, statistic {before.stat})\n")
        print(tabulate([_summary("as reported", before), _summary("re-priced now", after)],
                       headers=["Predictions", "within ±5 %", "within ±10 %", "mean |error|", "range"], tablefmt="github"))
        old, new = before.kernel_errors(), after.kernel_errors()
        rows = [[t, f"{m:.1f}", f"{old[t][2]:+.1f} %" if t in old else "", f"{e:+.1f} %"] for t, (_, m, e) in new.items() if m]
        print()
        print(tabulate(rows, headers=["Kernel type", "measured [ms]", "error as reported", "error now"], tablefmt="github"))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
