"""What a search emitted: :class:`Emission` (the report's input) and :class:`SearchResult`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    quality: Any = None  # psnr search: the emitted files' PSNRs (oplat.search.trained.WinnerQuality)


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
    report_html: Path | None = None  # the review page, when matplotlib is installed
    html_note: str = ""
    objective: str = "proxy"
    #: psnr search: PSNR-Y / SSIM-Y of the emitted files measured from disk on the validation
    #: images, {"bicubic"|"fp32"|"int8": {"psnr": dB, "ssim": …}}, "int8_drop_db", "steps"
    quality: dict | None = None
    trials_pruned: int = 0  # stopped by the pruner (psnr search); not in trials_total

    @property
    def trials_per_s(self) -> float:
        """Trials of this call per second of search (0 when none ran)."""
        return self.trials_run / self.elapsed_s if self.trials_run and self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [
            f"best: {self.description} (trial {self.trial_number})",
            f"  {self.params:,} params, {self.macs / 1e9:.3g} G MACs, "
            + (f"{QUALITY_PROXY_NAME} Q = {self.quality_proxy:.3f}" if self.quality is None else self._psnr_text()),
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
        pruned = f", {self.trials_pruned} more pruned" if self.trials_pruned else ""
        lines.append(
            f"  {self.trials_total} trials ({self.trials_feasible} feasible{pruned}, {self.trials_run} this run"
            + (f", {self._rate()}" if self.trials_run else "")
            + ")"
        )
        tfl = f", {self.best_tflite}" if self.best_tflite else ""
        page = f", {self.report_html}" if self.report_html else ""
        lines.append(f"  wrote {self.best_onnx}, {self.best_int8_onnx}{tfl}, {self.report}{page}, {self.pareto_csv}")
        for note in (self.tflite_note, self.html_note):
            if note:
                lines.append(f"  {note}")
        return "\n".join(lines)

    def _rate(self) -> str:
        rate = self.trials_per_s
        return f"{rate:.0f}/s" if rate >= 1 else f"{1 / rate:.3g} s/trial" if rate > 0 else "—"

    def _psnr_text(self) -> str:
        q = self.quality
        return (
            f"trained {q['steps']} steps: PSNR-Y FP32 {q['fp32']['psnr']:.2f} dB, INT8 {q['int8']['psnr']:.2f} dB "
            f"(drop {q['int8_drop_db']:.2f} dB; bicubic {q['bicubic']['psnr']:.2f} dB), measured from the files"
            + (" — below bicubic: train longer (--steps)" if q["fp32"]["psnr"] < q["bicubic"]["psnr"] else "")
        )
