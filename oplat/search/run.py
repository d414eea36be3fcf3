"""The entry points: :func:`run_search` (search, then emit) and :func:`search_throughput`
(the same search, timed, without emission). Both run :func:`_searched`."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

from oplat.options import configured
from oplat.search.config import SearchConfig
from oplat.search.emit import emit
from oplat.search.pricing import Prices
from oplat.search.result import SearchResult
from oplat.search.storage import FolderLock, check_storage
from oplat.search.study import Interrupts, StudyRun, preflight, run_study

__all__ = ["run_search", "search_throughput"]

T = TypeVar("T")


def _searched(config: SearchConfig, then: Callable[[StudyRun], T]) -> T:
    """The one sequence of a search: price, refuse what cannot work before anything is
    written (a bad journal path, bad arguments, a budget no network meets), then run the
    study under the Ctrl-C handler and the folder lock, and ``then`` (still under both)."""
    prices = Prices(
        config.predictor,
        device=config.device,
        table_path=config.table_file,
        policy=config.policy,
        opset=f"search:{config.space.name}",
    )
    check_storage(config.storage, config.out_dir)  # refuse a bad journal path before anything is measured or made
    fastest = preflight(config, prices)
    # the psnr objective: torch, the images and the device, before the study is touched
    scorer = None if config.objective is None else config.objective.scorer(config.space.scale)
    with Interrupts() as interrupts, FolderLock(config.out_dir, config.storage):
        run = run_study(config, prices, fastest, interrupts=interrupts, scorer=scorer)
        return then(run)


def run_search(config: SearchConfig | None = None, /, **options: Any) -> SearchResult:
    """Search ``config.space`` for the network with the highest capacity proxy within the
    budget, then emit it (``best.onnx``, ``best.int8.onnx``, ``best.tflite``, ``report.md``,
    ``pareto.csv``).

    Takes a :class:`~oplat.search.SearchConfig` (whose fields are documented there), or its
    fields as keywords (``run_search(space=..., predictor=..., budget_ms=..., name=...,
    out_dir=...)``), or a config and fields that replace its own.

    Raises :class:`OplatError` when no network of the space can meet the budget (naming the
    fastest possible latency), when ``name`` belongs to a study of another space, budget or
    mode, or when the table cannot price a kernel family the space needs.
    """
    config = configured(SearchConfig, config, options)
    return _searched(config, lambda run: emit(config, run))


def search_throughput(config: SearchConfig | None = None, /, **options: Any) -> float:
    """Trials per second of the search loop alone (no emission): what :func:`run_search`
    spends per trial. Takes what :func:`run_search` takes; as keywords, ``name`` defaults
    to ``"throughput"``, ``trials`` to 1000 and ``progress`` to False (the default journal
    storage under ``out_dir``)."""
    config = configured(SearchConfig, config, options, {"name": "throughput", "trials": 1000, "progress": False})
    run = _searched(config, lambda run: run)
    return run.trials_run / run.elapsed_s if run.elapsed_s > 0 else math.inf
