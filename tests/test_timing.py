"""The timing policy: logic on a scripted clock, then on a real ONNX Runtime session."""

from __future__ import annotations

import numpy as np

from oplat.backends import ort
from oplat.build import inputs_for, model_from_op
from oplat.spec import OpSpec
from oplat.timing import TimingPolicy, stats_ms, time_interleaved, time_one


class FakeClock:
    """A clock that advances only when a fake op runs; durations follow a script."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def op(self, durations_s, log=None, name=None):
        it = iter(durations_s)

        def run():
            self.now += next(it)
            if log is not None:
                log.append(name)

        return run


def _steady(value, n=100000):
    return [value] * n


def test_runs_per_round_fill_the_round_and_fast_ops_are_grouped():
    clock = FakeClock()
    policy = TimingPolicy(warmup_s=0.01, rounds=3, round_s=0.05, min_sample_s=1e-3, max_extra_rounds=0)
    slow, fast = time_interleaved(
        [clock.op(_steady(0.01)), clock.op(_steady(1e-5))], policy, clock=clock
    )
    assert slow.inner == 1 and slow.runs_per_round == 5  # 5 × 10 ms fills a 50 ms round
    assert fast.inner == 100  # 100 × 10 µs per timer reading
    assert fast.runs_per_round * fast.inner * 1e-5 >= 0.05
    assert len(slow.rounds_ms) == 3
    assert np.allclose(slow.samples_ms, 10.0) and np.allclose(fast.samples_ms, 0.01)
    assert slow.stats()["runs"] == 15


def test_rounds_are_interleaved_across_entries():
    clock = FakeClock()
    log = []
    policy = TimingPolicy(warmup_s=0, warmup_runs=1, rounds=2, round_s=0, min_runs=1, max_runs=1, max_extra_rounds=0)
    time_interleaved([clock.op(_steady(0.01), log, "a"), clock.op(_steady(0.01), log, "b")], policy, clock=clock)
    # warm-up+calibration of a (4 runs), of b (4), then rounds a, b, a, b
    assert log[8:] == ["a", "b", "a", "b"]


def test_disagreeing_rounds_are_remeasured_then_accepted():
    clock = FakeClock()
    # calibration at 10 ms; round 1 is a slow spell (13 ms), later rounds steady.
    script = [0.01] * 5 + [0.013] * 2 + [0.01] * 1000
    policy = TimingPolicy(warmup_s=0, warmup_runs=2, rounds=3, round_s=0.02, min_runs=2, agree_pct=3.0)
    t = time_one_with_clock(clock, script, policy)
    assert t.extra_rounds == 1
    assert t.spread_pct <= 3.0
    assert len(t.rounds_ms) == 3 and len(t.discarded_rounds_ms) == 1
    assert np.allclose(t.discarded_rounds_ms[0], 13.0)


def test_a_late_slow_spell_is_the_round_set_aside():
    """The spell hits the last scheduled round: the extra round replaces *it*, not the
    undisturbed first round (keeping the most recent rounds would have kept the spell)."""
    clock = FakeClock()
    script = [0.01] * 5 + [0.01] * 4 + [0.013] * 2 + [0.01] * 1000
    policy = TimingPolicy(warmup_s=0, warmup_runs=2, rounds=3, round_s=0.02, min_runs=2, agree_pct=3.0)
    t = time_one_with_clock(clock, script, policy)
    assert t.extra_rounds == 1 and t.spread_pct <= 3.0
    assert np.allclose(t.discarded_rounds_ms[0], 13.0)
    assert np.allclose(t.samples_ms, 10.0)


def test_persistently_noisy_entry_is_flagged_after_the_limit():
    clock = FakeClock()
    # The machine drifts slower round after round (10, 11, 12, … ms): extra rounds are all
    # slower, so the fastest three never agree.
    script = [0.01] * 5 + [0.001 * (10 + r) for r in range(100) for _ in range(2)]
    policy = TimingPolicy(warmup_s=0, warmup_runs=2, rounds=3, round_s=0.02, min_runs=2, max_extra_rounds=2)
    t = time_one_with_clock(clock, script, policy)
    assert t.extra_rounds == 2 and t.spread_pct > 3.0
    assert np.allclose(t.round_medians_ms, [10.0, 11.0, 12.0])  # the fastest rounds are the ones kept


def test_alternating_spells_leave_the_undisturbed_rounds():
    clock = FakeClock()
    script = [0.01] * 5 + ([0.01] * 2 + [0.02] * 2) * 1000  # rounds alternate 10 ms / 20 ms
    policy = TimingPolicy(warmup_s=0, warmup_runs=2, rounds=3, round_s=0.02, min_runs=2, max_extra_rounds=2)
    t = time_one_with_clock(clock, script, policy)
    assert t.extra_rounds == 2 and t.spread_pct < 1e-6 and np.allclose(t.samples_ms, 10.0)
    assert np.allclose([min(r) for r in t.discarded_rounds_ms], [20.0, 20.0])


def time_one_with_clock(clock, script, policy):
    return time_interleaved([clock.op(script)], policy, clock=clock)[0]


def test_stats_are_the_usual_ones():
    s = stats_ms([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s["median_ms"] == 3.0 and s["mean_ms"] == 22.0
    assert s["p10_ms"] < s["median_ms"] < s["p90_ms"]
    assert abs(s["std_ms"] - np.std([1, 2, 3, 4, 100], ddof=1)) < 1e-9


def test_policy_on_a_real_onnxruntime_session():
    spec = OpSpec("conv+relu", 16, 32, 32, c_out=16, kernel=3)
    model = model_from_op(spec)
    with ort.open(model, inputs_for(model), {"threads": 1}) as session:
        timing = time_one(session.run, TimingPolicy.quick())
    stats = timing.stats()
    assert 0 < stats["p10_ms"] <= stats["median_ms"] <= stats["p90_ms"]
    assert stats["rounds"] == 3
    assert len(timing.samples_ms) == sum(len(r) for r in timing.rounds_ms) >= 3 * 2
    # a 16→16 3×3 conv at 32×32 is 2.4 MMAC: far below a second, far above a nanosecond
    assert 1e-4 < stats["median_ms"] < 1000


# ----------------------------------------------------------------------------- one rounds rule
def _old_estimate_s(policy, run_s):
    """The agent's estimate before TimingPolicy.worst_case_s owned it (warm-up and rounds)."""
    import math

    run_s = max(run_s, 1e-9)
    warm_s = max(policy.warmup_s, policy.warmup_runs * run_s) + 3 * run_s
    inner = max(1, math.ceil(policy.min_sample_s / run_s))
    sample_s = inner * run_s
    runs = min(max(math.ceil(policy.round_s / sample_s), policy.min_runs), policy.max_runs)
    return warm_s + (policy.rounds + policy.max_extra_rounds) * runs * sample_s


def test_worst_case_is_the_same_arithmetic_and_bounds_the_timing():
    policies = [TimingPolicy(), TimingPolicy.quick(), TimingPolicy(rounds=100, min_runs=100, max_runs=100, max_extra_rounds=0),
                TimingPolicy(warmup_s=0, warmup_runs=0, rounds=1, round_s=0, min_runs=1, max_runs=1, min_sample_s=0,
                             max_extra_rounds=0)]
    for policy in policies:
        for run_s in (0.0, 1e-9, 3e-7, 1e-5, 2e-4, 1.3e-3, 0.01, 0.37, 2.0):
            assert policy.worst_case_s(run_s) == _old_estimate_s(policy, run_s)
    # On a scripted clock with runs of run_s: the timing takes what the bound says, less
    # the extra rounds it did not need, plus at most the warm-up's crossing run (run times
    # are powers of two, so the scripted clock adds them up exactly).
    for run_s in (2.0**-17, 2.0**-9, 2.0**-7, 2.0**-4):
        for extra in (0, 2):
            clock = FakeClock()
            policy = TimingPolicy(warmup_s=0.02, warmup_runs=2, rounds=3, round_s=0.02, min_runs=2, max_extra_rounds=extra)
            timing = time_interleaved([clock.op(_steady(run_s))], policy, clock=clock)[0]
            unused_s = extra * timing.runs_per_round * timing.inner * run_s
            assert policy.worst_case_s(run_s) - unused_s - 1e-9 <= clock.now <= policy.worst_case_s(run_s) - unused_s + run_s


def test_runs_per_round_in_seconds_or_milliseconds():
    import math

    import pytest

    policy = TimingPolicy(round_s=0.1, min_runs=3, max_runs=1000)
    assert policy.runs_per_round(sample_s=0.01) == 10 and policy.runs_per_round(sample_ms=10.0) == 10
    assert policy.runs_per_round(sample_s=1.0) == 3 and policy.runs_per_round(sample_s=1e-9) == 1000
    for per_run_ms in (1e-6, 0.0137, 0.3, 1.0, 1.82, 7.0, 33.3, 250.0):  # the toolchain's arithmetic, unchanged
        old = int(min(max(math.ceil(policy.round_s * 1000 / per_run_ms), policy.min_runs), policy.max_runs))
        assert policy.runs_per_round(sample_ms=per_run_ms) == old
    with pytest.raises(TypeError):
        policy.runs_per_round()
    with pytest.raises(TypeError):
        policy.runs_per_round(sample_s=1.0, sample_ms=1000.0)


def test_time_rounds_is_the_same_rule_for_self_timed_entries():
    from oplat.timing import Timing, time_rounds

    policy = TimingPolicy(rounds=3, agree_pct=3.0, max_extra_rounds=2)
    script = iter([[10.0, 10.0], [13.0, 13.0], [10.0, 10.1], [10.0, 9.9], [99.0]])
    given = Timing(inner=1, runs_per_round=2)
    timing = time_rounds(lambda: next(script), policy, given)
    assert timing is given and (timing.inner, timing.runs_per_round) == (1, 2)
    assert timing.extra_rounds == 1 and timing.discarded_rounds_ms == [[13.0, 13.0]]
    assert timing.round_medians_ms == [10.0, 10.05, 9.95]
    # The same scripted rounds through the interleaved path give the same verdicts.
    noisy = iter([[10.0], [11.0], [12.0], [13.0], [14.0], [15.0]])
    t = time_rounds(lambda: next(noisy), policy)
    assert t.extra_rounds == 2 and t.round_medians_ms == [10.0, 11.0, 12.0] and t.spread_pct > 3.0
    clock = FakeClock()
    script = [0.01] * 5 + [0.001 * (10 + r) for r in range(100) for _ in range(2)]
    interleaved = time_one_with_clock(clock, script, TimingPolicy(warmup_s=0, warmup_runs=2, rounds=3, round_s=0.02,
                                                                  min_runs=2, max_extra_rounds=2))
    assert interleaved.extra_rounds == t.extra_rounds and len(interleaved.discarded_rounds_ms) == 2


def test_profile_runs_is_the_rule_oplat_measure_uses():
    """oplat.timing.profile_runs is the one rule (measure and the agent both use it): as
    many runs as fill 0.3 s, at least 5 and at most 30."""
    from oplat import measure
    from oplat.timing import PROFILE_RUNS_MAX, PROFILE_RUNS_MIN, profile_runs

    assert measure.profile_runs is profile_runs
    assert (PROFILE_RUNS_MIN, PROFILE_RUNS_MAX) == (5, 30)
    want = {0.0: 30, 1e-7: 30, 0.001: 30, 0.01: 30, 1.0: 30, 9.99: 30, 10.0: 30, 11.0: 28, 33.0: 10, 60.0: 5, 1000.0: 5}
    assert {m: profile_runs(m) for m in want} == want
