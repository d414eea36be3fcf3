"""What one search is asked to do: :class:`SearchConfig`, read by every step of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oplat.devices import Device
from oplat.predict import Predictor
from oplat.search.trained import PsnrObjective
from oplat.space import SearchSpace

__all__ = ["MeasureFn", "SearchConfig"]

#: ``measure(model, device, policy) -> stats``: times one emitted ONNX model on the device
#: (``median_ms``, ``p10_ms``, ``p90_ms``, … and ``noisy``; see :func:`oplat.search.measure_model`).
MeasureFn = Callable[[Any, Device, Any], dict]


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """One search (``oplat search``): what to search, against which budget, where to keep it.

    Attributes:
        space: the networks to try.
        predictor: prices kernels (``Predictor.from_table(table_path)``).
        budget_ms: latency budget in milliseconds (see :func:`oplat.units.parse_duration_ms`).
        name: the study name (and, by convention, the folder ``results/search/<name>``).
        out_dir: where ``best.onnx``, ``best.int8.onnx``, ``report.md``, ``pareto.csv`` and
            (by default) ``study.journal`` go.
        precision: which network the budget constrains, ``int8`` (the QDQ network that
            ships; default) or ``fp32``.
        trials: the total number of completed trials the study should have, over all the
            workers that share it; a resumed study runs only the missing ones.
        storage: None for ``<out_dir>/study.journal`` (one worker); an Optuna storage URL
            (``postgresql://…``: psycopg 3, the ``postgres`` extra; ``sqlite:///…``); or
            another journal file path (in an existing folder; an existing file there must be
            an Optuna journal). Several workers may share a URL or a journal path.
        seed: sampler seed (and the seed of the emitted placeholder weights; None → 0 there).
        pareto: two objectives (latency ↓, quality ↑) with NSGA-II instead of TPE; the budget
            still constrains and the emitted network is the best feasible one.
        device: when given, kernels the table lacks are measured on it as trials need them
            (appended to ``table_path``, so later searches find them), and the emitted
            networks are measured end to end; if the winner measures over budget, up to
            :data:`~oplat.search.MEASURE_CANDIDATES` feasible candidates are measured in
            quality order and the first under budget is emitted (the report says so).
        table_path: the table file behind ``predictor`` (recorded in outputs; written to
            when a device is given).
        policy: :class:`~oplat.timing.TimingPolicy` for measurements (default policy).
        progress: a progress bar with ETA on stderr.
        measure: how an emitted network is timed on ``device`` (None:
            :func:`~oplat.search.measure_model`, ``time_network`` under ``policy``).
        objective: None ranks networks by the capacity proxy (fast, no training); a
            :class:`~oplat.search.trained.PsnrObjective` trains every feasible trial
            briefly and ranks it by the measured PSNR of its ``precision`` ONNX file,
            prunes poor trials early and trains the winner in full (the ``train`` extra).
    """

    space: SearchSpace
    predictor: Predictor
    budget_ms: float
    name: str
    out_dir: Path
    precision: str = "int8"
    trials: int = 200
    storage: str | None = None
    seed: int | None = 0
    pareto: bool = False
    device: Device | None = None
    table_path: str | Path | None = None
    policy: Any = None
    progress: bool = True
    measure: MeasureFn | None = None
    objective: PsnrObjective | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_dir", Path(self.out_dir))

    @property
    def table_text(self) -> str:
        """The table as outputs name it: the path given, else the predictor's source."""
        if self.table_path is not None:
            return str(self.table_path)
        return self.predictor.source or "<in-memory table>"

    @property
    def table_file(self) -> Path | None:
        return Path(self.table_path) if self.table_path is not None else None

    @property
    def objective_name(self) -> str:
        """``proxy`` or ``psnr``."""
        return "proxy" if self.objective is None else "psnr"

    @property
    def quality_key(self) -> str:
        """The trial user attribute the search maximises: ``quality_proxy``, or the
        measured PSNR of the budget's precision (``int8_psnr`` / ``fp32_psnr``)."""
        return "quality_proxy" if self.objective is None else f"{self.precision}_psnr"

    @property
    def weights_seed(self) -> int:
        """Seed of the emitted placeholder weights (the sampler's; 0 without one)."""
        return 0 if self.seed is None else self.seed

