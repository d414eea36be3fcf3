"""``oplat search``: find the plain SR network with the most capacity under a latency budget.

Each Optuna trial picks a network from a :class:`~oplat.space.SearchSpace`
(:func:`~oplat.space.arch_from_trial`), predicts its latency from the latency table
(:class:`~oplat.predict.Predictor`) and scores its quality with a **capacity proxy (not
PSNR)** or, with a :class:`~oplat.search.trained.PsnrObjective`, by the measured PSNR of
its own ONNX file after a short training (pruned early when its curve is poor). Latency
≤ budget is an Optuna constraint, so infeasible trials stay in the study and the sampler
learns from them. The winner is emitted as FP32 and QDQ INT8 ONNX (and ``.tflite``) with
a report and a review page.

One concern per module:

- :mod:`~oplat.search.config` — :class:`SearchConfig`, what one search is asked to do;
- :mod:`~oplat.search.proxy` — the quality proxy (learned MACs per output pixel, receptive field);
- :mod:`~oplat.search.pricing` — ArchSpec → kernels, the pricing cache, measuring missing
  table entries on the fly, the fastest network;
- :mod:`~oplat.search.storage` — the journal backend, locks, databases, :func:`check_storage`,
  :func:`mask_password` (the one place a storage password is hidden), :func:`dashboard_command`;
- :mod:`~oplat.search.study` — the Optuna study: sampler, constraint, resume checks, Ctrl-C;
- :mod:`~oplat.search.select` — pure: candidates, feasible set, Pareto front, the winner;
- :mod:`~oplat.search.trained` — the psnr objective: trials trained and measured, the
  pruner, the winner's full training (torch imported only when it runs);
- :mod:`~oplat.search.emit` — the emitted files, checked; the measured-substitution rule;
- :mod:`~oplat.search.result` — :class:`SearchResult`;
- :mod:`~oplat.search.run` — :func:`run_search` and :func:`search_throughput`.

``report.md``, ``report.html`` and ``pareto.csv`` are rendered by :mod:`oplat.report.search`.
"""

from __future__ import annotations

from oplat.search.config import MeasureFn, SearchConfig
from oplat.search.emit import MAX_TFLITE_STEPS, MEASURE_CANDIDATES, choose_measured, measure_model
from oplat.search.pricing import PRECISIONS, Prices, arch_from_values, arch_kernels, arch_net, fastest_network
from oplat.search.proxy import (
    QUALITY_PROXY_FORMULA,
    QUALITY_PROXY_NAME,
    learned_macs_per_output_pixel,
    quality_proxy,
    receptive_field_px,
)
from oplat.search.result import SearchResult
from oplat.search.run import run_search, search_throughput
from oplat.search.select import Candidate
from oplat.search.storage import FolderLock, check_storage, dashboard_command, mask_password
from oplat.search.trained import PsnrObjective

__all__ = [
    "MAX_TFLITE_STEPS",
    "MEASURE_CANDIDATES",
    "PRECISIONS",
    "QUALITY_PROXY_FORMULA",
    "QUALITY_PROXY_NAME",
    "Candidate",
    "FolderLock",
    "MeasureFn",
    "Prices",
    "PsnrObjective",
    "SearchConfig",
    "SearchResult",
    "arch_from_values",
    "arch_kernels",
    "arch_net",
    "check_storage",
    "choose_measured",
    "dashboard_command",
    "fastest_network",
    "learned_macs_per_output_pixel",
    "mask_password",
    "measure_model",
    "quality_proxy",
    "receptive_field_px",
    "run_search",
    "search_throughput",
]
