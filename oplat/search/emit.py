"""Emitting a search's winner: ``best.onnx``, ``best.int8.onnx``, ``best.tflite``,
``report.md`` and ``pareto.csv``.

With a device the winner is measured end to end; when it measures over the budget the
next feasible candidates are measured in quality order and the first under it is emitted
(:func:`choose_measured`). Every emitted model is checked (full ONNX check, one
onnxruntime run, the output shape; ``best.tflite`` against ``best.int8.onnx``). Emitted
files are written to a temporary name and renamed, so an interrupted emission keeps the
last ones.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import oplat
from oplat.arch import ArchSpec, calibration_images, describe, macs, model_from_arch, params, quantize_qdq
from oplat.backends.ort import exact_session
from oplat.devices import Device
from oplat.errors import OplatError, warn
from oplat.predict import Prediction, Predictor
from oplat.search.config import SearchConfig
from oplat.search.pricing import PRECISIONS, arch_kernels
from oplat.search.proxy import IMAGE_CHANNELS, QUALITY_PROXY_FORMULA, QUALITY_PROXY_NAME
from oplat.search.result import Emission, SearchResult
from oplat.search.select import Candidate, Selection, select
from oplat.search.study import StudyRun, completed_trials

__all__ = ["MAX_TFLITE_STEPS", "MEASURE_CANDIDATES", "MeasuredChoice", "choose_measured", "emit", "measure_model"]

#: With a device: how many candidates (the winner first, then the next feasible networks
#: in quality order) are measured at most when the winner measures over budget.
MEASURE_CANDIDATES = 5
#: The emitted files' precisions, in the order of ``(fp32 model, int8 model)``.
PRECISIONS_FILE_ORDER = ("fp32", "int8")
#: Largest output difference (in 1/255 steps) allowed between best.tflite and
#: best.int8.onnx; 99% of pixels must be within 2 steps.
MAX_TFLITE_STEPS = 8


# ---------------------------------------------------------------------- measuring
def measure_model(model, device: Device, policy) -> dict:
    """The default :attr:`SearchConfig.measure`: ``time_network`` statistics of one model
    (``median_ms``, ``p10_ms``, ``p90_ms``, … and ``noisy``)."""
    from oplat.measure import time_network

    timed = time_network(model, device, policy)
    return {**timed.stats.to_json(), "noisy": timed.noisy}


@dataclass(frozen=True)
class MeasuredChoice:
    """Which candidate to emit after measuring: ``chosen``, its ``measured`` statistics,
    every candidate ``tried`` (quality order), whether the chosen one is ``over_budget``
    and, when it is not the top-ranked one or is over budget, why (``substituted``)."""

    chosen: Candidate
    measured: dict
    tried: list[tuple[Candidate, dict]]
    over_budget: bool
    substituted: str


def choose_measured(
    feasible: list[Candidate],
    measure: Callable[[Candidate], dict],
    *,
    budget_ms: float,
    stat: str,
    limit: int = MEASURE_CANDIDATES,
) -> MeasuredChoice:
    """The measured-substitution rule: measure ``feasible`` (best first) one at a time, at
    most ``limit``, and take the first whose ``stat`` (e.g. ``p10_ms``) is within
    ``budget_ms``; when none is, the top-ranked one (over budget)."""
    first = chosen = feasible[0]
    tried: list[tuple[Candidate, dict]] = []
    for cand in feasible[:limit]:
        m = measure(cand)
        tried.append((cand, m))
        if m[stat] <= budget_ms:
            chosen = cand
            break
    measured = next(m for c, m in tried if c is chosen)
    over_budget = measured[stat] > budget_ms
    substituted = ""
    if chosen is not first:
        substituted = (
            f"The top-ranked network (trial {first.number}, {describe(first.arch)}) measured "
            f"{tried[0][1][stat]:.4g} ms ({stat[:-3]}), over the budget; emitted the best candidate that measures under it: "
            f"trial {chosen.number} (rank {[c for c, _ in tried].index(chosen) + 1} in quality order)."
        )
    elif over_budget:
        substituted = (
            f"None of the {len(tried)} best feasible candidates measured under {budget_ms:g} ms; "
            "emitted the top-ranked one anyway."
        )
    return MeasuredChoice(chosen, measured, tried, over_budget, substituted)


# ---------------------------------------------------------------------- the models
def _build(arch: ArchSpec, seed: int):
    """(FP32 model, QDQ INT8 model) of ``arch`` with placeholder weights."""
    fp32 = model_from_arch(arch, seed=seed)
    return fp32, quantize_qdq(fp32, seed=seed)


@dataclass(frozen=True)
class _Picked:
    chosen: Candidate
    models: tuple
    measured: dict[str, dict | None]
    over_budget: bool | None
    substituted: str
    tried: list[tuple[Candidate, dict]]


def _pick(config: SearchConfig, feasible: list[Candidate], stat: str) -> _Picked:
    """The network to emit and its models; with a device, measured (both precisions; a
    psnr search measures only the budget's precision here, its trained files later)."""
    chosen = feasible[0]
    built = {chosen: _build(chosen.arch, config.weights_seed)}
    if config.device is None:
        return _Picked(chosen, built[chosen], {"fp32": None, "int8": None}, None, "", [])
    measure = config.measure or measure_model
    index = 1 if config.precision == "int8" else 0

    def measure_candidate(cand: Candidate) -> dict:
        if cand not in built:
            built[cand] = _build(cand.arch, config.weights_seed)
        return measure(built[cand][index], config.device, config.policy)

    choice = choose_measured(feasible, measure_candidate, budget_ms=config.budget_ms, stat=stat)
    models = built[choice.chosen]
    measured: dict[str, dict | None] = {"fp32": None, "int8": None}
    measured[config.precision] = choice.measured
    other = "fp32" if config.precision == "int8" else "int8"
    if config.objective is None:
        measured[other] = measure(models[1 if other == "int8" else 0], config.device, config.policy)
    return _Picked(choice.chosen, models, measured, choice.over_budget, choice.substituted, choice.tried)


def _predict_model(predictor: Predictor, model) -> tuple[Prediction | None, str]:
    try:
        return predictor.predict(model), ""
    except OplatError as exc:
        return None, str(exc)


def _predict_emitted(run: StudyRun, picked: _Picked, precision: str) -> dict[str, tuple[Prediction | None, str]]:
    """The emitted graphs, predicted as ONNX (the kernel path must agree with them)."""
    prices, arch = run.prices, picked.chosen.arch
    for prec in PRECISIONS:
        prices.ensure_measured([k.spec for k in arch_kernels(arch, prec)])
    fp32_model, int8_model = picked.models
    preds = {"fp32": _predict_model(prices.predictor, fp32_model), "int8": _predict_model(prices.predictor, int8_model)}
    main_pred = preds[precision][0]
    if main_pred is None:  # pragma: no cover - the search priced this precision already
        raise OplatError(preds[precision][1])
    fast = prices.price(arch, precision, measure=False).predicted_ms
    if not math.isclose(fast, main_pred.total_ms, rel_tol=1e-6, abs_tol=1e-9):
        warn(f"kernel-path prediction {fast:.6g} ms differs from the ONNX graph's {main_pred.total_ms:.6g} ms (a bug)")
    return preds


# ---------------------------------------------------------------------- checks and files
@contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary file next to ``path`` that replaces it when the block succeeds: a Ctrl-C
    or a crash while an output is written leaves the previous file whole, never a torn one."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _run_once(model, arch: ArchSpec) -> None:
    """Check an emitted model: full ONNX check, one onnxruntime run, the output shape."""
    import numpy as np
    import onnx

    onnx.checker.check_model(model, full_check=True)
    session = exact_session(model)
    x = calibration_images(arch.in_h, arch.in_w, 1, seed=1)[0]
    (y,) = session.run(None, {session.get_inputs()[0].name: x})
    want = (1, IMAGE_CHANNELS, arch.out_h, arch.out_w)
    if tuple(y.shape) != want or not np.all(np.isfinite(y)):
        raise RuntimeError(f"emitted network gives output {y.shape} (finite: {np.all(np.isfinite(y))}), expected {want}")


def _tflite_output(data: bytes, name: str, x):
    from ai_edge_litert.interpreter import Interpreter

    from oplat.tflite import onnx_like_output, tflite_feeds

    interp = Interpreter(model_content=data, num_threads=1)
    interp.allocate_tensors()
    feeds = tflite_feeds({name: x})
    for detail in interp.get_input_details():
        interp.set_tensor(detail["index"], next(iter(feeds.values())))
    interp.invoke()
    return onnx_like_output(interp.get_tensor(interp.get_output_details()[0]["index"]))


def _emit_tflite(int8_model, arch: ArchSpec, path: Path) -> tuple[Path | None, str]:
    """Write the INT8 network as ``.tflite`` (NHWC, full-integer inside, float I/O) and
    check it: LiteRT's output must match onnxruntime's (exact int8) on the same image,
    99 % of it within two output quantization steps and all of it within
    :data:`MAX_TFLITE_STEPS`. Returns (path or None, a note for the report)."""
    import numpy as np

    try:
        import ai_edge_litert.interpreter  # noqa: F401

        from oplat.tflite import tflite_from_onnx
    except ImportError:
        return None, "best.tflite not written: LiteRT is not installed (pip install 'oplat[litert]')"
    data = tflite_from_onnx(int8_model)
    x = calibration_images(arch.in_h, arch.in_w, 1, seed=2)[0]
    session = exact_session(int8_model)
    name = session.get_inputs()[0].name
    (want,) = session.run(None, {name: x})
    got = _tflite_output(data, name, x)
    step = 1.0 / 255.0  # the output is the [0, 1] image in uint8 steps
    if got.shape != want.shape:
        raise RuntimeError(f"best.tflite gives shape {got.shape}, best.int8.onnx {want.shape}")
    steps = np.abs(got - want) / step
    p99, worst = float(np.percentile(steps, 99)), float(steps.max())
    # The runtimes requantize with different rounding (ORT: float scale, round half to
    # even; LiteRT: fixed-point multiplier), so a 1-step difference in a hidden layer
    # can reach the output a few steps wide in a deep net. A conversion error moves the
    # bulk of the pixels; rounding moves a few.
    if p99 > 2.0 + 1e-6 or worst > MAX_TFLITE_STEPS:
        raise RuntimeError(
            f"best.tflite disagrees with best.int8.onnx in LiteRT: p99 {p99:.1f} output steps, max {worst:.1f} "
            f"(allowed: p99 ≤ 2, max ≤ {MAX_TFLITE_STEPS})"
        )
    with _replacing(path) as tmp:
        tmp.write_bytes(data)
    return path, (
        f"best.tflite: INT8, NHWC; against best.int8.onnx in LiteRT: median {float(np.median(steps)):.0f}, "
        f"p99 {p99:.0f}, max {worst:.0f} output steps (1/255)"
    )


def _metadata(config: SearchConfig, emission: Emission, prec: str) -> dict[str, str]:
    """The ``oplat.*`` ``metadata_props`` of the emitted ``prec`` model."""
    space, chosen, arch = config.space, emission.chosen, emission.chosen.arch
    pred = emission.preds[prec][0]
    props = {
        "oplat.version": oplat.__version__,
        "oplat.search": config.name,
        "oplat.space": f"{space.name} ({space.fingerprint})",
        "oplat.table": config.table_text,
        "oplat.device": emission.device_text,
        "oplat.precision": prec,
        "oplat.budget_ms": f"{config.budget_ms:g}",
        "oplat.budget_precision": config.precision,
        "oplat.predicted_ms": "" if pred is None else f"{pred.total_ms:.6g}",
        "oplat.calibrated": "" if pred is None else str(pred.calibrated).lower(),
        "oplat.arch": json.dumps(asdict(arch), separators=(",", ":")),
        "oplat.arch_description": describe(arch),
        "oplat.quality_proxy": f"{chosen.quality:.6f}",
        "oplat.quality_proxy_name": f"{QUALITY_PROXY_NAME}: {QUALITY_PROXY_FORMULA}",
        "oplat.trial": str(chosen.number),
        "oplat.objective": config.objective_name,
    }
    if config.objective is not None:
        props["oplat.train"] = f"{config.objective.steps} steps (the winner of {config.objective.trial_steps}-step trials)"
    m = emission.measured.get(prec)
    if m:
        props["oplat.measured_ms"] = f"{m['median_ms']:.6g}"
        props["oplat.measured_p10_ms"] = f"{m['p10_ms']:.6g}"
        props["oplat.measured_p90_ms"] = f"{m['p90_ms']:.6g}"
    return props


def _write_models(config: SearchConfig, emission: Emission, models: tuple) -> dict[str, Path]:
    """Check and write ``best.onnx`` and ``best.int8.onnx`` (in that order)."""
    import onnx

    out_dir, arch = config.out_dir, emission.chosen.arch
    paths = {"fp32": out_dir / "best.onnx", "int8": out_dir / "best.int8.onnx"}
    for prec, model in zip(("fp32", "int8"), models):
        onnx.helper.set_model_props(model, _metadata(config, emission, prec))
        _run_once(model, arch)
        with _replacing(paths[prec]) as tmp:
            onnx.save(model, str(tmp))
    return paths


def _write_tables(config: SearchConfig, selection: Selection, emission: Emission, storage_text: str) -> tuple[Path, Path]:
    """Write ``pareto.csv`` and ``report.md``; their paths (report first)."""
    from oplat.report.search import pareto_csv, search_report  # here: it imports this package's records

    report, pareto = config.out_dir / "report.md", config.out_dir / "pareto.csv"
    with _replacing(pareto) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        f.write(pareto_csv(selection.front, float(config.budget_ms), psnr=config.objective is not None))
    with _replacing(report) as tmp:
        tmp.write_text(search_report(config, selection, emission, storage_text=storage_text), encoding="utf-8")
    return report, pareto


def _write_page(config: SearchConfig, selection: Selection, emission: Emission, storage_text: str) -> tuple[Path | None, str]:
    """Write ``report.html`` (and its figures as SVG beside it); (path or None, a note)."""
    from oplat.report.figures import INSTALL_HINT

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None, f"report.html not written: {INSTALL_HINT}"
    from oplat.report.figures import svg_text
    from oplat.report.search import search_page  # here: it imports this package's records

    page = search_page(config, selection, emission, storage_text=storage_text)
    path = config.out_dir / "report.html"
    names = {f.slug: f"{path.stem}-{f.slug}.svg" for f in page.figures}
    for f in page.figures:  # the figures beside the page, as SVG
        with _replacing(path.with_name(names[f.slug])) as tmp:
            tmp.write_text(svg_text(f.fig), encoding="utf-8")
    with _replacing(path) as tmp:
        tmp.write_text(page.render(names), encoding="utf-8")
    return path, ""


def _trained(config: SearchConfig, scorer, picked: _Picked, stat: str) -> tuple[_Picked, object]:
    """The psnr search: train the chosen network in full and take its models (with a
    device, measured again: the emitted files are these)."""
    chosen = picked.chosen
    # one folder per (network, step budget): another --steps trains anew instead of refusing the checkpoint
    folder = config.out_dir / "train" / f"trial-{chosen.number}-{config.objective.steps}steps"
    winner = scorer.train_winner(chosen.arch, folder, progress=config.progress)
    models = (winner.fp32, winner.int8)
    if config.device is None:
        return replace(picked, models=models), winner
    measure = config.measure or measure_model
    measured = {prec: measure(model, config.device, config.policy) for prec, model in zip(PRECISIONS_FILE_ORDER, models)}
    over_budget = measured[config.precision][stat] > config.budget_ms
    return replace(picked, models=models, measured=measured, over_budget=over_budget), winner


# ---------------------------------------------------------------------- emission
def _record_measured(study, config: SearchConfig, picked: _Picked, stat: str) -> None:
    """The networks measured on the device, as study user attributes
    ``oplat.measured.trial_<n>`` (what optuna-dashboard shows next to the predictions; a
    finished trial's own attributes cannot change any more)."""
    keys = ("median_ms", "p10_ms", "p90_ms")
    for cand, m in picked.tried:
        record: dict = {config.precision: {k: float(m[k]) for k in keys if k in m}, "within_budget": bool(m[stat] <= config.budget_ms)}
        if cand is picked.chosen:
            for prec, other in picked.measured.items():
                if other and prec != config.precision:
                    record[prec] = {k: float(other[k]) for k in keys if k in other}
        study.set_user_attr(f"oplat.measured.trial_{cand.number}", record)


def _selection(config: SearchConfig, run: StudyRun) -> Selection:
    from optuna.trial import TrialState

    selection = select(completed_trials(run.study), config.space, config.budget_ms, config.quality_key)
    selection = replace(selection, pruned=len(run.study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))))
    if selection.winner is None:
        trained = " and trained to the end (pruned trials are not candidates)" if config.objective is not None else ""
        raise OplatError(
            f"study {config.name!r} has no completed trial within {config.budget_ms:g} ms {config.precision}{trained}; "
            f"run more trials (--trials) or delete {config.out_dir} and start again"
        )
    return selection


def emit(config: SearchConfig, run: StudyRun) -> SearchResult:
    """Pick the network to emit from the finished study ``run``, check and write its
    files and the report; what was written."""
    selection = _selection(config, run)
    prices = run.prices
    stat = f"{prices.predictor.stat}_ms"  # measured networks are judged on the predictor's statistic
    picked = _pick(config, selection.feasible, stat)
    winner = None
    if run.scorer is not None:
        picked, winner = _trained(config, run.scorer, picked, stat)
    _record_measured(run.study, config, picked, stat)
    preds = _predict_emitted(run, picked, config.precision)
    device = config.device
    device_text = device.name if device is not None else str(prices.predictor.device.get("name", "unknown"))
    config.out_dir.mkdir(parents=True, exist_ok=True)
    emission = Emission(
        chosen=picked.chosen, preds=preds, measured=picked.measured, over_budget=picked.over_budget,
        substituted=picked.substituted, tried=picked.tried, device_text=device_text,
    )
    paths = _write_models(config, emission, picked.models)
    quality = None if winner is None else run.scorer.measure_files(paths, winner)  # the files as written
    best_tflite, tflite_note = _emit_tflite(picked.models[1], picked.chosen.arch, config.out_dir / "best.tflite")
    emission = replace(emission, tflite_note=tflite_note, quality=quality)
    report, pareto = _write_tables(config, selection, emission, run.storage_text)
    page, page_note = _write_page(config, selection, emission, run.storage_text)
    paths = {**paths, "tflite": best_tflite, "report": report, "pareto": pareto, "html": page, "html_note": page_note}
    return _result(config, run, selection, emission, paths=paths)


def _result(config: SearchConfig, run: StudyRun, selection: Selection, emission: Emission, *, paths: dict) -> SearchResult:
    arch, chosen, preds = emission.chosen.arch, emission.chosen, emission.preds
    main_pred = preds[config.precision][0]
    return SearchResult(
        name=config.name,
        out_dir=config.out_dir,
        best_onnx=paths["fp32"],
        best_int8_onnx=paths["int8"],
        report=paths["report"],
        pareto_csv=paths["pareto"],
        storage=run.storage_text,
        journal=run.journal,
        arch=arch,
        description=describe(arch),
        trial_number=chosen.number,
        quality_proxy=chosen.quality,
        params=params(arch),
        macs=macs(arch),
        budget_ms=float(config.budget_ms),
        precision=config.precision,
        predicted_ms=main_pred.total_ms,
        predicted_fp32_ms=None if preds["fp32"][0] is None else preds["fp32"][0].total_ms,
        predicted_int8_ms=None if preds["int8"][0] is None else preds["int8"][0].total_ms,
        calibrated=main_pred.calibrated,
        measured_share=main_pred.measured_share,
        measured_fp32=emission.measured["fp32"],
        measured_int8=emission.measured["int8"],
        over_budget=emission.over_budget,
        substituted=emission.substituted,
        trials_total=len(selection.done),
        trials_feasible=selection.trials_feasible,
        trials_pruned=selection.pruned,
        trials_run=run.trials_run,
        elapsed_s=run.elapsed_s,
        measured_rows=run.prices.measured_rows,
        best_tflite=paths["tflite"],
        tflite_note=emission.tflite_note,
        report_html=paths.get("html"),
        html_note=paths.get("html_note", ""),
        objective=config.objective_name,
        quality=_quality_json(emission.quality),
    )


def _quality_json(quality) -> dict | None:
    if quality is None:
        return None
    out: dict = {k: {"psnr": r.psnr, "ssim": r.ssim} for k, r in quality.results.items()}
    return {**out, "int8_drop_db": quality.int8_drop_db, "steps": quality.steps}
