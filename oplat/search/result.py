"""What a search emitted: :class:`Emission` (the report's input) and :class:`SearchResult`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from oplat.arch import ArchSpec
from oplat.predict import Prediction
from oplat.search.proxy import QUALITY_PROXY_NAME
from oplat.search.select import Candidate

__all__ = ["Emission", "SearchResult"]


@dataclass(frozen=True, kw_only=True)
class Emission:
    """The emitted network and what is known about it.

    ``preds``: per precision, the emitted ONNX graph's prediction (or None and why not);
    ``measured``: per precision, ``time_network`` statistics (None without a device);
    ``over_budget``: whether the emitted network *measured* over the budget (None without
    a device); ``substituted``: why a lower-ranked candidate was emitted, or "";
    ``tried``: the candidates measured, in quality order, with their statistics.
    """

    chosen: Candidate
    preds: dict[str, tuple[Prediction | None, str]]
    measured: dict[str, dict | None]
    over_budget: bool | None
    substituted: str
    tried: list[tuple[Candidate, dict]]
    device_text: str
    tflite_note: str = ""


@dataclass(frozen=True, kw_only=True)
class SearchResult:
    """What :func:`~oplat.search.run_search` found and wrote. Latencies in ms.

    ``predicted_fp32_ms`` / ``predicted_int8_ms``: the emitted files' predictions (None
    when the table cannot price that precision); ``measured_fp32`` / ``measured_int8``:
    ``time_network`` statistics (``median_ms``, ``p10_ms``, ``p90_ms``, …) when a device was
    given; ``over_budget``: whether the emitted network *measured* over the budget (None
    without a device).
    """

    name: str
    out_dir: Path
    best_onnx: Path
    best_int8_onnx: Path
    report: Path
    pareto_csv: Path
    storage: str
    journal: Path | None
    arch: ArchSpec
    description: str
    trial_number: int
    quality_proxy: float
    params: int
    macs: int
    budget_ms: float
    precision: str
    predicted_ms: float
    predicted_fp32_ms: float | None
    predicted_int8_ms: float | None
    calibrated: bool
    measured_share: float
    measured_fp32: dict | None
    measured_int8: dict | None
    over_budget: bool | None
    substituted: str  # why a lower-ranked candidate was emitted, or ""
    trials_total: int
    trials_feasible: int
    trials_run: int
    elapsed_s: float
    measured_rows: int = 0
    best_tflite: Path | None = None  # INT8 .tflite (NHWC), when LiteRT is installed
    tflite_note: str = ""

    @property
    def trials_per_s(self) -> float:
        """Trials of this call per second of search (0 when none ran)."""
        return self.trials_run / self.elapsed_s if self.trials_run and self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [
            f"best: {self.description} (trial {self.trial_number})",
            f"  {self.params:,} params, {self.macs / 1e9:.3g} G MACs, {QUALITY_PROXY_NAME} Q = {self.quality_proxy:.3f}",
            f"  predicted {self.precision}: {self.predicted_ms:.4g} ms (budget {self.budget_ms:g} ms)"
            + ("" if self.calibrated else " — uncalibrated"),
        ]
        measured = self.measured_int8 if self.precision == "int8" else self.measured_fp32
        if measured:
            lines.append(
                f"  measured {self.precision}: {measured['median_ms']:.4g} ms "
                f"(p10 {measured['p10_ms']:.4g}, p90 {measured['p90_ms']:.4g})"
                + (" — OVER BUDGET" if self.over_budget else "")
            )
        if self.substituted:
            lines.append(f"  {self.substituted}")
        lines.append(
            f"  {self.trials_total} trials ({self.trials_feasible} feasible, {self.trials_run} this run"
            + (f", {self.trials_per_s:.0f}/s" if self.trials_run else "")
            + ")"
        )
        tfl = f", {self.best_tflite}" if self.best_tflite else ""
        lines.append(f"  wrote {self.best_onnx}, {self.best_int8_onnx}{tfl}, {self.report}, {self.pareto_csv}")
        if self.tflite_note:
            lines.append(f"  {self.tflite_note}")
        return "\n".join(lines)
