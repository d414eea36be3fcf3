"""The one timing policy every backend shares.

Backends only know how to run a model once (``Session.run()``). Everything else lives
here: warm-up, how many runs a round needs, interleaved rounds across a batch of
entries, the agreement check between rounds with re-measurement, and the statistics.

Interleaving matters on a shared, noisy machine: round *r* of every entry in a batch runs
before round *r+1* of any, so a slow spell hurts all entries alike instead of one.

The rounds rule (``rounds`` rounds, then extra rounds while they disagree, each setting
the slowest round aside) is written once, in :func:`_run_rounds`: :func:`time_interleaved`
uses it for sessions timed here, :func:`time_rounds` for self-timed ones (a board's tool
runs one round per call), and :meth:`TimingPolicy.worst_case_s` bounds its duration.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from oplat.errors import OplatError
from oplat.records import Stats

__all__ = [
    "PROFILE_RUNS_MAX",
    "PROFILE_RUNS_MIN",
    "PROFILE_S",
    "TimingPolicy",
    "Timing",
    "profile_runs",
    "stats_ms",
    "time_interleaved",
    "time_one",
    "time_rounds",
]

#: Most rounds (and extra rounds) a policy may ask for.
_MAX_ROUNDS = 1000
#: Timed runs after warm-up that calibrate the runs per sample and per round.
_CALIBRATION_RUNS = 3
#: Profiled runs (:func:`profile_runs`): at least, at most, and the seconds they aim at.
PROFILE_RUNS_MIN, PROFILE_RUNS_MAX, PROFILE_S = 5, 30, 0.3


@dataclass(frozen=True, kw_only=True)
class TimingPolicy:
    """How to time one entry.

    Attributes:
        warmup_s: run at least this long (and ``warmup_runs`` times) before timing.
        warmup_runs: minimum warm-up runs.
        rounds: rounds per entry; each round is a batch of back-to-back runs.
        round_s: a round lasts at least this long (more runs for fast ops).
        min_runs: runs per round at least this many, whatever their duration.
        max_runs: runs per round at most this many.
        min_sample_s: runs faster than this are timed in groups (``inner`` runs per
            timer reading) so one sample is well above the timer's resolution.
        agree_pct: rounds agree when (max - min) / median of the round medians is
            within this many percent.
        max_extra_rounds: rounds added (one at a time, keeping the fastest
            ``rounds`` by round median) while rounds disagree, before the entry is
            flagged noisy.
    """

    warmup_s: float = 0.1
    warmup_runs: int = 2
    rounds: int = 5
    round_s: float = 0.1
    min_runs: int = 3
    max_runs: int = 1000
    min_sample_s: float = 200e-6
    agree_pct: float = 3.0
    max_extra_rounds: int = 4

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise OplatError(f"timing policy: {problem}")

    def problem(self) -> str | None:
        """Why this policy cannot be used, or None. Counts have upper bounds so a typo
        (``--rounds 999999999``) is refused instead of running for years."""
        for name, low, high in (
            ("warmup_runs", 0, 10_000),
            ("rounds", 1, _MAX_ROUNDS),
            ("min_runs", 1, 1_000_000),
            ("max_runs", 1, 1_000_000),
            ("max_extra_rounds", 0, _MAX_ROUNDS),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                return f"{name} must be an integer from {low} to {high}, got {value!r}"
        for name, high in (("warmup_s", 3600.0), ("round_s", 3600.0), ("min_sample_s", 10.0), ("agree_pct", 1000.0)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or not 0 <= value <= high:
                return f"{name} must be a finite number from 0 to {high:g}, got {value!r}"
        if self.agree_pct <= 0:
            return f"agree_pct must be above 0 (percent), got {self.agree_pct!r}"
        if self.max_runs < self.min_runs:
            return f"max_runs ({self.max_runs}) is below min_runs ({self.min_runs})"
        return None

    @classmethod
    def quick(cls) -> TimingPolicy:
        """A short policy for smoke runs and tests (still 3 rounds, still checked)."""
        return cls(warmup_s=0.02, warmup_runs=1, rounds=3, round_s=0.02, min_runs=2, max_extra_rounds=2)

    def inner_runs(self, run_s: float) -> int:
        """Runs per sample (timer reading) for runs of ``run_s`` seconds: enough that one
        sample lasts ``min_sample_s``."""
        return max(1, math.ceil(self.min_sample_s / run_s))

    def runs_per_round(self, *, sample_s: float | None = None, sample_ms: float | None = None) -> int:
        """Samples per round for samples of ``sample_s`` seconds (or ``sample_ms``
        milliseconds, for a tool that reports ms): enough to last ``round_s``, within
        ``min_runs`` … ``max_runs``."""
        if (sample_s is None) == (sample_ms is None):
            raise TypeError("runs_per_round takes one of sample_s or sample_ms")
        runs = math.ceil(self.round_s / sample_s) if sample_s is not None else math.ceil(self.round_s * 1000 / sample_ms)
        return int(min(max(runs, self.min_runs), self.max_runs))

    def worst_case_s(self, run_s: float) -> float:
        """How long :func:`time_one` takes at most for runs of ``run_s`` seconds each, in
        seconds: warm-up, calibration, and every round with every extra round, by the
        same arithmetic the timing follows (only the warm-up's last run, the one that
        crosses ``warmup_s``, may add up to one ``run_s``)."""
        run_s = max(run_s, 1e-9)
        warm_s = max(self.warmup_s, self.warmup_runs * run_s) + _CALIBRATION_RUNS * run_s
        inner = self.inner_runs(run_s)
        sample_s = inner * run_s
        runs = self.runs_per_round(sample_s=sample_s)
        return warm_s + (self.rounds + self.max_extra_rounds) * runs * sample_s


def profile_runs(median_ms: float) -> int:
    """Profiled runs for a model whose runs take ``median_ms``: about ``PROFILE_S``
    seconds of them, from ``PROFILE_RUNS_MIN`` to ``PROFILE_RUNS_MAX`` (enough for a stable
    median, never long). ``oplat measure`` and the agent's ``"auto"`` use it."""
    return int(min(PROFILE_RUNS_MAX, max(PROFILE_RUNS_MIN, math.ceil(PROFILE_S * 1000 / max(median_ms, 1e-6)))))


@dataclass
class Timing:
    """Samples of one entry; each sample is the mean time of ``inner`` runs, in ms."""

    rounds_ms: list[list[float]] = field(default_factory=list)
    #: Rounds replaced by re-measurement, kept so no raw sample is hidden.
    discarded_rounds_ms: list[list[float]] = field(default_factory=list)
    inner: int = 1
    runs_per_round: int = 0
    extra_rounds: int = 0
    #: Set when a sample stands for many runs (a device tool that prints only a summary).
    runs_total: int | None = None
    note: str = ""

    def drop_slowest_round(self) -> None:
        """After an extra round: set aside the round with the highest median (kept in
        ``discarded_rounds_ms``). Interference only ever adds time, so the slowest round
        is the one a slow spell hit; keeping the oldest or newest rounds instead can
        throw away the undisturbed ones when the spell comes late."""
        meds = self.round_medians_ms
        slowest = max(range(len(meds)), key=meds.__getitem__)
        self.discarded_rounds_ms.append(self.rounds_ms.pop(slowest))
        self.extra_rounds += 1

    @property
    def samples_ms(self) -> list[float]:
        return [s for r in self.rounds_ms for s in r]

    @property
    def round_medians_ms(self) -> list[float]:
        return [float(np.median(r)) for r in self.rounds_ms]

    @property
    def spread_pct(self) -> float:
        """(max - min) / median of the round medians, in percent."""
        meds = self.round_medians_ms
        mid = float(np.median(meds))
        return 100.0 * (max(meds) - min(meds)) / mid if mid > 0 else 0.0

    def summary(self) -> Stats:
        """The statistics of the kept samples."""
        return Stats.from_samples(self.samples_ms)

    def stats(self) -> dict:
        """Row statistics: median/p10/p90/mean/std (ms), runs, rounds, spread."""
        out = self.summary().to_json()
        out.update(
            runs=self.runs_total if self.runs_total is not None else len(self.samples_ms) * self.inner,
            rounds=len(self.rounds_ms),
            inner=self.inner,
            round_medians_ms=[round(m, 6) for m in self.round_medians_ms],
            spread_pct=round(self.spread_pct, 3),
        )
        if self.note:
            out["timing_note"] = self.note
        return out


def stats_ms(samples_ms: Sequence[float]) -> dict:
    """Median, p10, p90, mean and sample std of ``samples_ms`` (all in ms), as row fields."""
    return Stats.from_samples(samples_ms).to_json()


class _Plan:
    """Per-entry state while a batch is timed."""

    def __init__(self, run: Callable[[], None], policy: TimingPolicy, clock: Callable[[], float]):
        self.run = run
        self.policy = policy
        self.clock = clock
        self.timing = Timing()

    def warm_up(self) -> None:
        p = self.policy
        start = self.clock()
        n = 0
        while n < p.warmup_runs or self.clock() - start < p.warmup_s:
            self.run()
            n += 1
        # Calibrate from a few timed runs after warm-up.
        t0 = self.clock()
        for _ in range(_CALIBRATION_RUNS):
            self.run()
        per_run_s = max((self.clock() - t0) / _CALIBRATION_RUNS, 1e-9)
        self.timing.inner = p.inner_runs(per_run_s)
        self.timing.runs_per_round = p.runs_per_round(sample_s=per_run_s * self.timing.inner)

    def round(self) -> None:
        inner = self.timing.inner
        clock = self.clock
        run = self.run
        samples = []
        for _ in range(self.timing.runs_per_round):
            t0 = clock()
            for _ in range(inner):
                run()
            samples.append((clock() - t0) * 1000.0 / inner)
        self.timing.rounds_ms.append(samples)


class _Rounds:
    """An entry timed elsewhere: ``one_round()`` runs one round and returns its samples."""

    def __init__(self, one_round: Callable[[], Sequence[float]], timing: Timing):
        self.one_round = one_round
        self.timing = timing

    def round(self) -> None:
        self.timing.rounds_ms.append(list(self.one_round()))


def _run_rounds(entries: Sequence, policy: TimingPolicy, on_final: Callable[[int], None] | None = None) -> None:
    """THE rounds rule, for entries with a ``timing`` and a ``round()`` that appends one
    round to it: ``policy.rounds`` rounds of every entry, interleaved; then, up to
    ``policy.max_extra_rounds`` times, every entry whose round medians still disagree by
    more than ``policy.agree_pct`` gets one more round and sets its slowest round aside.
    ``on_final(index)`` is called once per entry, as soon as its timing is final."""
    final = [False] * len(entries)

    def finish(index: int) -> None:
        final[index] = True
        if on_final is not None:
            on_final(index)

    for _ in range(policy.rounds):
        for entry in entries:
            entry.round()
    for _ in range(policy.max_extra_rounds):
        for i, entry in enumerate(entries):
            if not final[i] and entry.timing.spread_pct <= policy.agree_pct:
                finish(i)
        noisy = [e for i, e in enumerate(entries) if not final[i]]
        if not noisy:
            break
        for entry in noisy:
            entry.round()
            entry.timing.drop_slowest_round()
    for i in range(len(entries)):
        if not final[i]:
            finish(i)


def time_interleaved(
    runs: Sequence[Callable[[], None]],
    policy: TimingPolicy,
    *,
    clock: Callable[[], float] = time.perf_counter,
    on_final: Callable[[int, Timing], None] | None = None,
) -> list[Timing]:
    """Time several entries with interleaved rounds; return one Timing per entry.

    Each callable runs its model once. Entries whose rounds disagree by more than
    ``policy.agree_pct`` get extra rounds (interleaved among the disagreeing ones),
    keeping the fastest ``policy.rounds`` rounds, up to ``policy.max_extra_rounds``.
    ``on_final(index, timing)`` is called as soon as an entry's timing is final (its
    rounds agree, or it has had every extra round), so a caller can write its row while
    the other entries still take extra rounds.
    """
    plans = [_Plan(r, policy, clock) for r in runs]
    for plan in plans:
        plan.warm_up()
    _run_rounds(plans, policy, None if on_final is None else lambda i: on_final(i, plans[i].timing))
    return [p.timing for p in plans]


def time_one(run: Callable[[], None], policy: TimingPolicy) -> Timing:
    """Time one entry (a batch of one)."""
    return time_interleaved([run], policy)[0]


def time_rounds(one_round: Callable[[], Sequence[float]], policy: TimingPolicy, timing: Timing | None = None) -> Timing:
    """Apply the policy's rounds to an entry timed elsewhere (a self-timed session).

    ``one_round()`` runs one round where the timing happens (e.g. one invocation of a
    board's tool) and returns its samples in ms; the caller has warmed up and calibrated
    (``timing`` carries ``inner`` and ``runs_per_round``). Rounds, agreement and extra
    rounds follow the same rule as :func:`time_interleaved`. Returns ``timing`` filled.
    """
    timing = timing if timing is not None else Timing()
    _run_rounds([_Rounds(one_round, timing)], policy)
    return timing
