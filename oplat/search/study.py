"""The Optuna study of a search: opening or resuming it, the sampler, the objective with
its latency constraint, and Ctrl-C.

Each trial picks a network from a :class:`~oplat.space.SearchSpace`
(:func:`~oplat.space.arch_from_trial`), predicts its latency (:class:`~oplat.search.pricing.Prices`)
and scores its quality (:func:`~oplat.search.proxy.quality_proxy`, or — the psnr
objective — a feasible network is trained and its ONNX files measured by
:class:`~oplat.search.trained.TrialScorer`, which reports the monitor PSNR to the
study's pruner). Latency ≤ budget is an Optuna constraint, so infeasible trials stay in
the study and the sampler learns from them; the psnr objective never trains them.

Resuming and workers: ``trials`` is the total of finished trials the study should reach,
across every worker, so a resumed search runs only the missing ones and two workers started
with ``--trials 40`` together run 40. Each worker claims a trial under the storage's study
lock (:class:`~oplat.search.storage.OpenedStorage`) only while the study's COMPLETE,
PRUNED and RUNNING trials (other workers' included) are fewer than ``trials``. A search
that is alone on its journal marks trials a killed run left RUNNING as FAIL and runs their
parameters again; on a database a RUNNING trial is failed and run again once its worker's
heartbeat stops; otherwise running trials are left alone (another worker owns them). A
study made for another space, budget, precision or mode is refused.

optuna-dashboard: each trial records ``predicted_ms``, ``quality_proxy`` and ``feasible``
as user attributes and its constraint (predicted ms − budget) both as Optuna 5's named
constraint and in the ``constraints`` list the dashboard reads (greying infeasible trials);
the objectives carry names (``study.set_metric_names``). The dashboard picks its best trial
and Pareto front from objective values alone, ignoring constraints, so an infeasible
trial's quality objective is recorded as :data:`INFEASIBLE_QUALITY` (0: every network of
the family scores Q > 3) — its true Q stays in ``quality_proxy``. The samplers never read
an infeasible trial's values (TPE and NSGA-II rank infeasible trials by their constraint
violation alone), so the search is the same.

Ctrl-C ends a search with ``KeyboardInterrupt`` and no Optuna log: inside a trial the
trial is told FAIL and queued again for the next run; inside Optuna's bookkeeping the
interrupt waits until the trial is recorded (see :class:`Interrupts`).
"""

from __future__ import annotations

import math
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import oplat
from oplat.arch import ArchSpec, describe, macs, params
from oplat.errors import OplatError, warn
from oplat.progress import progress_bar
from oplat.search import proxy
from oplat.search.config import SearchConfig
from oplat.search.pricing import PRECISIONS, Prices, fastest_priced
from oplat.search.storage import OpenedStorage, mask_password, open_storage
from oplat.space import SearchSpace, arch_from_trial, trial_params

__all__ = [
    "INFEASIBLE_QUALITY", "Interrupts", "StudyRun", "completed_trials", "metric_names", "preflight", "quality_label", "run_study",
]

#: The quality objective an infeasible trial records (its true Q is the user attribute
#: ``quality_proxy``): below every network's Q, so optuna-dashboard's best trial and Pareto
#: front, which ignore constraints, hold feasible trials only.
INFEASIBLE_QUALITY = 0.0
#: How long a worker whose study is full waits for the trials other workers still run
#: before it emits (seconds).
WAIT_FOR_OTHERS_S = 30.0


# ---------------------------------------------------------------------- before the study
def _round_up(ms: float) -> str:
    """``ms`` rounded up to 2 significant digits, as text."""
    if ms <= 0:
        return "0"
    step = 10 ** (math.floor(math.log10(ms)) - 1)
    return f"{math.ceil(ms / step - 1e-9) * step:.6g}"


def preflight(config: SearchConfig, prices: Prices) -> ArchSpec:
    """Check the arguments and that some network meets the budget; the fastest network."""
    trials, precision, budget_ms, space = config.trials, config.precision, config.budget_ms, config.space
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise OplatError(f"trials must be a positive integer, got {trials!r}")
    if precision not in PRECISIONS:
        raise OplatError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not (isinstance(budget_ms, (int, float)) and math.isfinite(budget_ms) and budget_ms > 0):
        raise OplatError(f"the latency budget must be a positive number of ms, got {budget_ms!r}")
    fastest, fastest_ms = fastest_priced(space, prices, precision)
    if fastest_ms > budget_ms:
        priced = prices.price(fastest, precision)
        raise OplatError(
            f"no network in search space {space.name!r} meets the {budget_ms:g} ms {precision} budget: the fastest "
            f"({describe(fastest)}) is predicted at {fastest_ms:.4g} ms"
            f"{'' if priced.calibrated else ' (uncalibrated)'}; allow a budget of at least {_round_up(fastest_ms)} ms, "
            f"search a smaller input than {space.in_h}×{space.in_w} (in_h/in_w in the space file), "
            "or use a faster device"
        )
    return fastest


# ---------------------------------------------------------------------- Ctrl-C
class Interrupts:
    """Ctrl-C (SIGINT) during a search (held by ``run_search``), so that it never tears the study.

    Optuna's bookkeeping (opening the study, asking for a trial, telling its result: journal
    records that belong together) runs *deferred*: a Ctrl-C there stops the loop after the
    trial (``study.stop``) and raises ``KeyboardInterrupt`` where the deferred block ends.
    Inside the objective (``immediate``) it raises at once, and the objective fails its trial
    quietly (see :class:`_Objective`). A second Ctrl-C while stopping is ignored; a third raises
    wherever it lands. Installed only in the main thread, over Python's default handler
    (another handler is left alone, and a Ctrl-C then behaves as it always did).
    """

    def __init__(self) -> None:
        self.presses = 0
        self.study = None  # set once the study is open: a deferred Ctrl-C stops its loop
        self._raised = False
        self._deferred = False
        self._old = None

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._old = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None

    def _on_sigint(self, signum, frame) -> None:
        self.presses += 1
        if self.presses >= 3 or (self.presses == 1 and not self._deferred):
            self._raised = True
            raise KeyboardInterrupt
        if self.study is not None:
            try:
                self.study.stop()
            except RuntimeError:  # not inside optimize: the next objective or block end raises
                pass

    def check(self) -> None:
        """Raise the ``KeyboardInterrupt`` that a Ctrl-C in a deferred block postponed."""
        if self.presses and not self._raised:
            self._raised = True
            raise KeyboardInterrupt

    @contextmanager
    def deferred(self) -> Iterator[None]:
        was = self._deferred
        try:
            self._deferred = True
            yield
        finally:
            self._deferred = was
        if not was:
            self.check()

    @contextmanager
    def immediate(self) -> Iterator[None]:
        was = self._deferred
        try:
            self._deferred = False
            self.check()
            yield
        finally:
            self._deferred = was


# ---------------------------------------------------------------------- opening the study
def _study_attrs(config: SearchConfig) -> dict[str, Any]:
    space = config.space
    return {
        "oplat.space": space.name,
        "oplat.space_fingerprint": space.fingerprint,
        "oplat.budget_ms": float(config.budget_ms),
        "oplat.precision": config.precision,
        "oplat.table": config.table_text,
        "oplat.pareto": config.pareto,
        "oplat.quality_proxy": proxy.QUALITY_PROXY_FORMULA,
        "oplat.objective": config.objective_name,
        "oplat.training": None if config.objective is None else config.objective.settings(),
        "oplat.version": oplat.__version__,
    }


def _check_resume(study, name: str, out_dir: Path, want: dict[str, Any]) -> None:
    have = study.user_attrs
    where = f"pick another --name or delete {out_dir}"
    if have.get("oplat.space_fingerprint") != want["oplat.space_fingerprint"]:
        raise OplatError(
            f"study {name!r} was created for another search space ({have.get('oplat.space')!r}, fingerprint "
            f"{have.get('oplat.space_fingerprint')}; this one is {want['oplat.space']!r}, {want['oplat.space_fingerprint']}); "
            f"{where}"
        )
    objective = have.get("oplat.objective", "proxy")  # studies older than the psnr objective: proxy
    if objective != want["oplat.objective"]:
        raise OplatError(
            f"study {name!r} ranks networks by {objective}, not {want['oplat.objective']}; run it again with "
            f"--objective {objective} or {where}"
        )
    if objective == "psnr" and have.get("oplat.training") != want["oplat.training"]:
        theirs, ours = have.get("oplat.training") or {}, want["oplat.training"]
        diff = "; ".join(f"{k}: {theirs.get(k)!r} → {ours.get(k)!r}" for k in sorted(ours) if theirs.get(k) != ours.get(k))
        raise OplatError(
            f"study {name!r} trained its trials with other settings ({diff}), so their PSNRs do not compare; "
            f"run it again with the same training options or {where}"
        )
    if have.get("oplat.pareto") != want["oplat.pareto"]:
        mode = "a Pareto (latency, quality)" if have.get("oplat.pareto") else "a single-objective"
        raise OplatError(f"study {name!r} is {mode} search; run it again the same way (with or without --pareto) or {where}")
    old_budget, old_precision = have.get("oplat.budget_ms"), have.get("oplat.precision")
    if not isinstance(old_budget, (int, float)) or old_precision != want["oplat.precision"] or not math.isclose(
        old_budget, want["oplat.budget_ms"], rel_tol=1e-9
    ):
        raise OplatError(
            f"study {name!r} was run with a {old_budget} ms {old_precision} budget, not {want['oplat.budget_ms']:g} ms "
            f"{want['oplat.precision']}; its trials' feasibility is relative to that budget; {where}"
        )
    if have.get("oplat.table") != want["oplat.table"]:
        warn(f"study {name!r} was predicted from {have.get('oplat.table')}; its earlier trials keep those figures")


def _constraints_func(trial) -> list[float]:
    return list(trial.user_attrs.get("constraint", [0.0]))


def _set_constraint(trial, slack_ms: float, trial_id: int) -> None:
    if hasattr(trial, "set_constraint"):  # Optuna >= 5: constraints live on the trial
        trial.set_constraint("latency_ms", slack_ms)
        # ... under "constraints:latency_ms"; optuna-dashboard (0.21) reads only the list
        # under "constraints" (what Optuna 4's samplers write), so write that too.
        trial.storage.set_trial_system_attr(trial_id, "constraints", [slack_ms])
    else:  # Optuna 4: read back by _constraints_func (the sampler writes the list)
        trial.set_user_attr("constraint", [slack_ms])


def quality_label(config: SearchConfig) -> str:
    """What the quality objective is, in a few words."""
    if config.objective is None:
        return f"{proxy.QUALITY_PROXY_NAME}: log2 MACs/px + log2 RF"
    return f"{config.precision.upper()} PSNR-Y dB after {config.objective.trial_steps} steps"


def metric_names(config: SearchConfig) -> list[str]:
    """The study's objective names, as oplat prints them (optuna-dashboard shows them)."""
    quality = quality_label(config)
    return [f"predicted {config.precision} ms", quality] if config.pareto else [quality]


def _set_metric_names(study, config: SearchConfig) -> None:
    import optuna

    names = metric_names(config)
    if getattr(study, "metric_names", None) != names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)


def _sampler(space: SearchSpace, *, pareto: bool, seed: int | None):
    import optuna

    legacy = not hasattr(optuna.trial.Trial, "set_constraint")
    extra = {"constraints_func": _constraints_func} if legacy else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if pareto:
            return optuna.samplers.NSGAIISampler(seed=seed, **extra)
        # Multivariate TPE models depth × width × residual jointly (and is ~2× faster than
        # one estimator per parameter); a per-layer space has a conditional search space,
        # which ``group`` decomposes.
        dynamic = space.widths == "per-layer" and space.depth_min != space.depth_max
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=dynamic, **extra
        )


class _StudyFull(Exception):
    """The study holds (or is running) all the trials it should: this worker stops."""


@lru_cache(maxsize=1)
def _capped_study_class() -> type:
    import optuna
    from optuna.trial import TrialState

    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)

    class _CappedStudy(optuna.Study):
        """A study whose ``ask`` claims a trial under the storage's study lock, and only
        while the study's finished and running trials (every worker's) are fewer than
        ``total``: a queued (WAITING) trial is taken first; a new one is made only when the
        queued ones do not already fill the study. Otherwise ``ask`` raises ``_StudyFull``."""

        def __init__(self, *args, cap: tuple[Any, int], **kwargs) -> None:  # (name, storage, sampler, pruner)
            super().__init__(*args, **kwargs)
            self._oplat_cap = cap

        def ask(self, fixed_distributions=None):
            lock, total = self._oplat_cap
            with lock.hold():
                trials = self.get_trials(deepcopy=False, states=counted)
                waiting = sum(t.state == TrialState.WAITING for t in trials)
                if len(trials) - waiting >= total or (not waiting and len(trials) >= total):
                    raise _StudyFull
                return super().ask(fixed_distributions)

    return _CappedStudy


def _create_study(config: SearchConfig, opened: OpenedStorage):
    import optuna

    directions = ["minimize", "maximize"] if config.pareto else ["maximize"]
    sampler = _sampler(config.space, pareto=config.pareto, seed=config.seed)
    pruner = optuna.pruners.NopPruner() if config.objective is None else config.objective.make_pruner(pareto=config.pareto)
    try:
        optuna.create_study(
            study_name=config.name, storage=opened.storage, sampler=sampler, pruner=pruner, directions=directions,
            load_if_exists=True,
        )
        return _capped_study_class()(config.name, opened.storage, sampler, pruner, cap=(opened.lock, config.trials))
    except OplatError:
        raise
    except Exception as exc:  # a storage URL can fail in many driver-specific ways
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OplatError(f"cannot open the study storage {opened.text}: {mask_password(first, config.storage)}") from None


def _set_up(study, config: SearchConfig, fastest: ArchSpec, storage_text: str) -> None:
    """Check a resumed study was made for this search, or set up a new one."""
    from optuna.trial import TrialState

    want = _study_attrs(config)
    existing = study.get_trials(deepcopy=False)
    if "oplat.space_fingerprint" in study.user_attrs:
        _check_resume(study, config.name, config.out_dir, want)
    elif all(t.state == TrialState.WAITING and t.user_attrs.get("oplat.seeded") == "fastest" for t in existing):
        # A new study, or one whose setup a killed run left unfinished (the
        # fingerprint, written last, marks a finished setup).
        if not existing:
            # Start from the fastest network: the study always has a feasible trial.
            study.enqueue_trial(trial_params(config.space, fastest), user_attrs={"oplat.seeded": "fastest"})
        for key, value in sorted(want.items(), key=lambda kv: kv[0] == "oplat.space_fingerprint"):
            study.set_user_attr(key, value)
    else:
        raise OplatError(f"study {config.name!r} in {storage_text} was not made by oplat search; pick another --name")
    _set_metric_names(study, config)


def _retry_stale(study, trial) -> None:
    """A database worker's heartbeat stopped (Optuna failed its trial): run it again."""
    retry = {**trial.system_attrs.get("fixed_params", {}), **trial.params}
    study.enqueue_trial(retry, user_attrs={"oplat.retry_of": trial.number})


def _retry_killed(study, storage_obj, name: str) -> None:
    """We are alone on the journal, so a RUNNING trial is a killed run's: fail it, run it again."""
    from optuna.trial import TrialState

    study_id = storage_obj.get_study_id_from_name(name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        trial_id = storage_obj.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage_obj.set_trial_state_values(trial_id, TrialState.FAIL)
        # fixed_params: an enqueued trial (the fastest network) killed before it suggested them
        retry = {**t.system_attrs.get("fixed_params", {}), **t.params}
        study.enqueue_trial(retry, user_attrs={"oplat.retry_of": t.number})


# ---------------------------------------------------------------------- the trials
class _Objective:
    """Prices and scores one trial's network (with a ``scorer``: trains a feasible one and
    measures its PSNR); a Ctrl-C inside it fails the trial quietly and queues its
    parameters again."""

    def __init__(self, config: SearchConfig, prices: Prices, study, interrupts: Interrupts, storage_obj, scorer=None) -> None:
        self.config, self.prices, self.scorer, self.study, self.interrupts = config, prices, scorer, study, interrupts
        self.storage, self.study_id = storage_obj, storage_obj.get_study_id_from_name(config.name)

    def score(self, trial):
        config = self.config
        arch = arch_from_trial(trial, config.space)
        priced = self.prices.price(arch, config.precision)
        quality = proxy.quality_proxy(arch)  # looked up on the module: tests wrap it to interrupt a trial
        slack = priced.predicted_ms - config.budget_ms
        _set_constraint(trial, slack, self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number))
        trial.set_user_attr("predicted_ms", priced.predicted_ms)
        trial.set_user_attr("quality_proxy", quality)
        trial.set_user_attr("feasible", slack <= 0)
        trial.set_user_attr("params", params(arch))
        trial.set_user_attr("macs", macs(arch))
        trial.set_user_attr("arch", describe(arch))
        trial.set_user_attr("measured_share", priced.measured_share)
        value = INFEASIBLE_QUALITY  # see the module docstring (optuna-dashboard)
        if slack <= 0:
            value = quality if self.scorer is None else self._trained(trial, arch)
        return (priced.predicted_ms, value) if config.pareto else value

    def _trained(self, trial, arch: ArchSpec) -> float:
        """Train a feasible network and measure it (the psnr objective); its objective value."""
        scores = self.scorer.score(trial, arch, report=not self.config.pareto)
        for key, value in scores.items():
            trial.set_user_attr(key, value)
        return float(scores.get(self.config.quality_key, INFEASIBLE_QUALITY))

    def __call__(self, trial):
        import optuna

        try:
            with self.interrupts.immediate():
                return self.score(trial)
        except KeyboardInterrupt:
            # Ctrl-C inside a trial: Optuna tells it FAIL (never COMPLETE) and re-raises;
            # its log of that "failure" (a traceback) is silenced, the trial queued
            # again for the next run (as a killed run's RUNNING trial is).
            optuna.logging.set_verbosity(optuna.logging.ERROR)
            try:
                retry = {**getattr(trial, "_fixed_params", {}), **trial.params}
                self.study.enqueue_trial(retry, user_attrs={"oplat.retry_of": trial.number})
            except Exception:  # pragma: no cover - the retry is a courtesy
                pass
            raise


class _BestSoFar:
    """The progress bar's postfix: the best feasible quality so far and its latency."""

    def __init__(self, study, config: SearchConfig) -> None:
        self.budget_ms, self.key = config.budget_ms, config.quality_key
        self.label = "Q=" if config.objective is None else f"{config.precision.upper()} "
        self.unit = "" if config.objective is None else " dB"
        self.q, self.ms = -math.inf, math.nan
        self.bar = None
        self.ran = 0  # trials this call finished
        self.pruned = 0
        for t in completed_trials(study):
            self._consider(t)

    def _consider(self, trial) -> bool:
        ms, q = trial.user_attrs.get("predicted_ms"), trial.user_attrs.get(self.key)
        if ms is not None and q is not None and ms <= self.budget_ms and q > self.q:
            self.q, self.ms = q, ms
            return True
        return False

    def _text(self) -> str:
        text = f"best {self.label}{self.q:.3f}{self.unit} at {self.ms:.3g} ms" if self.q > -math.inf else ""
        return text + (f", {self.pruned} pruned" if self.pruned else "")

    def show(self, bar) -> None:
        self.bar = bar
        if self._text():
            bar.set_postfix_str(self._text(), refresh=False)

    def on_trial(self, _study, frozen) -> None:
        from optuna.trial import TrialState

        self.ran += 1
        self.bar.update(1)
        self.pruned += frozen.state == TrialState.PRUNED
        if (frozen.state == TrialState.COMPLETE and self._consider(frozen)) or frozen.state == TrialState.PRUNED:
            self.bar.set_postfix_str(self._text(), refresh=False)


def completed_trials(study) -> list:
    """The study's COMPLETE trials (not copied: read them, do not change them)."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


# ---------------------------------------------------------------------- the loop
@dataclass(frozen=True)
class StudyRun:
    """A study after this call's trials: ``journal`` is its file (None for a storage
    URL), ``storage_text`` how outputs name the storage, ``trials_run`` how many trials
    this call ran, in ``elapsed_s`` seconds; ``scorer`` the psnr objective's
    :class:`~oplat.search.trained.TrialScorer` (None: the proxy)."""

    study: Any
    prices: Prices
    journal: Path | None
    storage_text: str
    trials_run: int
    elapsed_s: float
    scorer: Any = None


def run_study(config: SearchConfig, prices: Prices, fastest: ArchSpec, *, interrupts: Interrupts, scorer=None) -> StudyRun:
    """Open (or resume) the study of ``config`` and run the trials it still lacks (with
    other workers on the study: until it holds ``config.trials`` finished trials, then
    wait up to :data:`WAIT_FOR_OTHERS_S` for the trials they still run). ``scorer``: the
    psnr objective's :class:`~oplat.search.trained.TrialScorer` (None: the proxy)."""
    import optuna

    config.out_dir.mkdir(parents=True, exist_ok=True)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    opened = None
    try:
        with interrupts.deferred():
            opened = open_storage(config.storage, config.out_dir, name=config.name, on_stale=_retry_stale)
            with opened.lock.hold():  # workers starting together set the study up once
                study = _create_study(config, opened)
                interrupts.study = study
                _set_up(study, config, fastest, opened.text)
                if opened.alone:
                    _retry_killed(study, opened.storage, config.name)
            opened.set_up_done()
            done = len(completed_trials(study))
            remaining = max(0, config.trials - done)
            objective = _Objective(config, prices, study, interrupts, opened.storage, scorer)
            best = _BestSoFar(study, config)
            with progress_bar(
                total=config.trials, initial=min(done, config.trials), unit="trial", desc=f"search {config.name}",
                enabled=config.progress,
            ) as bar:
                best.show(bar)
                start = time.perf_counter()
                interrupts.check()  # a Ctrl-C while the study opened: no trial starts
                if remaining:
                    try:
                        study.optimize(objective, n_trials=remaining, callbacks=[best.on_trial], gc_after_trial=False)
                    except _StudyFull:  # other workers ran the rest
                        pass
                elapsed = time.perf_counter() - start
            # Always: a worker that started first (alone then) can still have company now,
            # and the trials the others run must finish before anyone picks the winner.
            # Its own trials are all finished; a killed run's were failed at the start.
            _wait_for_others(study, interrupts)
    finally:
        optuna.logging.set_verbosity(verbosity)
        if opened is not None:
            opened.close()
    return StudyRun(study, prices, opened.journal, opened.text, best.ran, elapsed, scorer)


def _wait_for_others(study, interrupts: Interrupts) -> None:
    """Before emitting, let the trials other workers still run finish (so every worker
    emits from the same finished study), for :data:`WAIT_FOR_OTHERS_S` at most."""
    from optuna.trial import TrialState

    deadline = time.monotonic() + WAIT_FOR_OTHERS_S
    while not interrupts.presses:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running:
            return
        if time.monotonic() > deadline:
            warn(
                f"{len(running)} trial(s) of other workers still running after {WAIT_FOR_OTHERS_S:g} s; "
                f"emitting from the {len(completed_trials(study))} completed"
            )
            return
        time.sleep(0.1)
