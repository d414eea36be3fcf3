"""``oplat measure``: time every entry of an op set on a device, append rows to a table.

Resumable by key: entries already in the table are skipped, so an interrupted run
(Ctrl-C or a killed process) continues where it stopped. Entries are timed in small
batches with interleaved rounds (see :mod:`oplat.timing`); each entry's row is written
(flushed and fsynced) as soon as its timing is final, so a kill loses at most the
entries of the batch whose rounds were still running (``--batch``, 24 by default: about
20-25 s of work on the development host).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oplat.options import configured
from oplat.backends import Unsupported
from oplat.build import inputs_for, model_from_op
from oplat.devices import Device
from oplat.errors import OplatError, OplatRuntimeError
from oplat.fingerprint import SETUP_FIELDS, environment, setup_diff
from oplat.limits import Limits, check_spec
from oplat.paths import default_table_path  # noqa: F401 (re-exported: the results-path policy lives in oplat.paths)
from oplat.progress import progress_bar
from oplat.records import NetworkTiming, Row
from oplat.spec import OpSpec
from oplat.table import TableWriter, TableWriteError
from oplat.timing import Timing, TimingPolicy, profile_runs, time_interleaved

__all__ = ["POOL_NAME", "MeasureConfig", "MeasureSummary", "PoolConfig", "check_drift", "drift_sample", "measure_pool", "measure_specs", "pool_fingerprint", "default_table_path", "fingerprint_for", "time_network", "time_networks"]



@dataclass(frozen=True)
class MeasureSummary:
    path: Path
    already: int  # rows the table had for this op set before the run
    measured: int  # rows written by this run
    errors: int
    unsupported: int
    noisy: int


@dataclass(frozen=True, kw_only=True)
class MeasureConfig:
    """One measurement on one device (``oplat measure``): where its rows go and how.

    Attributes:
        opset: the op set's name, recorded in every row.
        out: the table file rows are appended to.
        policy: :class:`~oplat.timing.TimingPolicy` (None: the default policy).
        batch: entries timed together with interleaved rounds; a kill loses at most one
            batch (``--batch``).
        retry_errors: measure again entries whose row in the table is an error row.
        retry_noisy: measure again entries whose row in the table is flagged noisy.
        progress: a progress bar on stderr.
        on_row: called with each row as soon as it is written.
        wait: wait for another writer of the table instead of refusing.
        limits: :class:`~oplat.limits.Limits` every spec is checked against before anything
            is built (None: ``Limits.default()``).
        models: maps a spec's key to the (model, feeds) to time for it (kernels cut out of
            a network by :func:`oplat.extract.extract_kernels`); other specs build their own.
        accept_drift: append even when the rows re-timed by :func:`check_drift` moved.
    """

    opset: str
    out: str | Path
    policy: TimingPolicy | None = None
    batch: int = 24
    retry_errors: bool = False
    retry_noisy: bool = False
    progress: bool = True
    on_row: Callable[[Row], None] | None = None
    wait: bool = False
    limits: Limits | None = None
    models: dict | None = None
    accept_drift: bool = False

    def keeps(self, row: Row) -> bool:
        """Whether ``row``, already in the table, stands (its entry is not measured again)."""
        if self.retry_errors and row.status == "error":
            return False
        return not (self.retry_noisy and row.noisy)


@dataclass(frozen=True, kw_only=True)
class PoolConfig:
    """One measurement sharded over a pool of boards (:func:`measure_pool`).

    Attributes:
        opset, out, policy, batch, progress, wait, limits: as in :class:`MeasureConfig`
            (``batch``: the entries a free board takes at a time).
    """

    opset: str
    out: str | Path
    policy: TimingPolicy | None = None
    batch: int = 24
    progress: bool = True
    wait: bool = False
    limits: Limits | None = None


def fingerprint_for(device: Device) -> dict:
    module = device.require()
    theirs = module.fingerprint(device.options)  # the backend contract's hook: None when this host times
    if theirs is not None:
        # The machine that times is elsewhere (the agent's board): record its fingerprint.
        return {**theirs, "name": device.name, "agent_device": theirs.get("name")}
    runtime, version = module.runtime(device.options)
    return environment(
        device=device.name,
        runtime=runtime,
        runtime_version=version,
        threads=device.options.get("threads"),
        options=device.options,
    )


#: The device name rows measured by a pool of boards carry (whatever boards the pool has
#: on a given run, so a resumed pool with one board more or less writes the same table).
POOL_NAME = "remote-pool"


def pool_fingerprint(devices: Sequence[Device]) -> dict:
    """The fingerprint a pool of boards shares: every board's must agree on the setup
    (runtime and version, threads, options, CPU and ISA); a board that differs is refused
    by name, so one pool never mixes two kinds of board in a table."""
    prints = [fingerprint_for(d) for d in devices]
    first = {**prints[0], "name": POOL_NAME}
    for device, other in zip(devices[1:], prints[1:]):
        diff = setup_diff(first, {**other, "name": POOL_NAME}, SETUP_FIELDS)
        if diff:
            was, now = diff
            raise OplatError(
                f"board {device.name} has {now} but {devices[0].name} has {was}; a pool shares one setup: "
                "measure each kind of board into its own table"
            )
    return first


def _check_same_setup(path: Path, rows, fingerprint: dict) -> None:
    """Refuse to mix rows measured under another setup into one table."""
    for row in rows:
        diff = setup_diff(row.device, fingerprint, SETUP_FIELDS)
        if diff:
            was, now = diff
            raise OplatError(
                f"{path} was measured with {was}; this run has {now}. "
                "Write to another table with --out (or move the old one away) so setups do not mix"
            )


def _self_timed(session) -> bool:
    """The one rule (:mod:`oplat.backends.base`): a SelfTimedSession times itself."""
    from oplat.backends import SelfTimedSession

    return isinstance(session, SelfTimedSession)


def _measure_batch(
    specs: Sequence[OpSpec],
    device: Device,
    module,
    opset: str,
    fingerprint: dict,
    policy: TimingPolicy,
    write: Callable[[Row], None],
    models: dict | None = None,
) -> None:
    """Measure one batch, handing each row to ``write`` as soon as it is complete.

    Sessions are opened first (an entry that cannot be built or loaded gets its failure
    row at once), then timed with interleaved rounds; an entry's row is profiled and
    written the moment its timing is final, not when the whole batch is. A kill therefore
    loses the entries whose rounds were still running: at most one batch (``--batch``).
    """
    with ExitStack() as stack:
        open_sessions = []
        for spec in specs:
            try:
                if models and spec.key in models:  # cut from a user's network, fed its real activations
                    model, feeds = models[spec.key]
                else:
                    model = model_from_op(spec)
                    feeds = inputs_for(model)
                session = stack.enter_context(module.open(model, feeds, device.options))
            except Unsupported as exc:
                write(Row.failed(spec, opset, fingerprint, "unsupported", exc))
                continue
            except Exception as exc:  # a runtime failing on one op must not stop the run
                write(Row.failed(spec, opset, fingerprint, "error", exc))
                continue
            open_sessions.append((spec, session))
        written: set[int] = set()

        def finish(index: int, timing: Timing) -> None:
            spec, session = open_sessions[index]
            profile_error = None
            try:
                profile = session.profile(profile_runs(timing.summary().median_ms))
            except Exception as exc:  # the wall-clock timing stands; say why per-node times are missing
                profile, profile_error = None, f"{type(exc).__name__}: {exc}"[:300]
            written.add(index)
            write(Row.measured(spec, opset, fingerprint, timing, policy, profile, profile_error))

        try:
            if any(_self_timed(s) for _, s in open_sessions):
                # Self-timed sessions (a remote agent, a board's CLI) time themselves with
                # the same policy; nothing to interleave on this side.
                for i, (_, session) in enumerate(open_sessions):
                    finish(i, session.time(policy))
            else:
                time_interleaved([s.run for _, s in open_sessions], policy, on_final=finish)
        except TableWriteError:
            raise  # the table cannot be written (disk full, setup): stop, rows so far are kept
        except Exception:
            # One entry failed mid-run: time the rest one by one so only it gets an error row.
            for i, (spec, session) in enumerate(open_sessions):
                if i in written:
                    continue
                try:
                    timing = session.time(policy) if _self_timed(session) else time_interleaved([session.run], policy)[0]
                except Exception as exc:
                    written.add(i)
                    write(Row.failed(spec, opset, fingerprint, "error", exc))
                    continue
                finish(i, timing)


@dataclass
class _Resumed:
    """A measurement past its prologue (:func:`_resumed`): the open table and what is left."""

    out: Path
    writer: TableWriter
    policy: TimingPolicy
    fingerprint: dict  # what every row of this run carries
    done: dict  # the table's latest row per key, read once the lock was taken
    pending: list[OpSpec]  # the specs still to measure, in order
    already: int  # rows the table had for this op set before the run
    counts: dict = field(default_factory=lambda: {"measured": 0, "error": 0, "unsupported": 0, "noisy": 0})

    def count(self, row: Row) -> None:
        _count(self.counts, row)

    def summary(self) -> MeasureSummary:
        c = self.counts
        return MeasureSummary(
            path=self.out, already=self.already, measured=c["measured"], errors=c["error"], unsupported=c["unsupported"], noisy=c["noisy"]
        )


@contextmanager
def _resumed(
    specs: Sequence[OpSpec],
    config: MeasureConfig | PoolConfig,
    fingerprint: Callable[[], dict],
    keeps: Callable[[Row], bool] | None = None,
) -> Iterator[_Resumed]:
    """The prologue :func:`measure_specs` and :func:`measure_pool` share: check every spec
    against the size limits, take the ``fingerprint``, lock the table (``config.wait``:
    wait for another writer) and read it under the lock, refuse rows of another setup, and
    resume by key (a row in the table stands unless ``keeps`` says otherwise). The table
    stays locked until the ``with`` block ends."""
    policy = config.policy or TimingPolicy()
    _check_limits(specs, config.limits or Limits.default())
    theirs = fingerprint()
    out = Path(config.out)
    with TableWriter(out, wait=config.wait) as writer:
        done = writer.table.latest()
        _check_same_setup(out, done.values(), theirs)
        pending = [s for s in specs if s.key not in done or (keeps is not None and not keeps(done[s.key]))]
        yield _Resumed(out, writer, policy, theirs, done, pending, len(specs) - len(pending))


def measure_pool(specs: Sequence[OpSpec], devices: Sequence[Device], config: PoolConfig | None = None, **options: Any) -> MeasureSummary:
    """Shard ``specs`` over several boards of one kind (remote agents), one writer.

    Each board takes the next batch of pending entries when it is free (boards of one
    kind can still differ in speed), its rows carry the board they were timed on
    (``board``) and the pool's shared fingerprint; resuming works as for one device.
    Takes a :class:`PoolConfig` (whose fields are documented there), or its fields as
    keywords (``measure_pool(specs, devices, opset=..., out=...)``), or both (keywords
    override the config's)."""
    import queue
    import threading

    config = configured(PoolConfig, config, options)
    if len(devices) < 2:
        raise OplatError("a pool needs two or more boards, e.g. --device remote:A:8765,remote:B:8765")
    lock = threading.Lock()
    errors: list[BaseException] = []
    with _resumed(specs, config, lambda: pool_fingerprint(devices)) as run:
        work: queue.Queue = queue.Queue()
        for start in range(0, len(run.pending), config.batch):
            work.put(run.pending[start : start + config.batch])
        with progress_bar(
            total=len(specs), initial=run.already, unit="op", desc=f"{POOL_NAME} {config.opset}", enabled=config.progress
        ) as bar:

            def board(device: Device) -> None:
                module = device.require()

                def write(row: Row) -> None:
                    data = {**row.to_json(), "board": device.name}
                    with lock:
                        run.writer.append(Row.from_json(data))
                        run.count(row)
                        bar.update(1)

                while not errors:
                    try:
                        chunk = work.get_nowait()
                    except queue.Empty:
                        return
                    try:
                        _measure_batch(chunk, device, module, config.opset, run.fingerprint, run.policy, write)
                    except BaseException as exc:  # a board that fails stops the pool; rows so far are kept
                        errors.append(exc)
                        return

            threads = [threading.Thread(target=board, args=(d,), name=d.name, daemon=True) for d in devices]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    if errors:
        raise errors[0]
    return run.summary()

def _count(counts: dict, row: Row) -> None:
    counts["measured"] += 1
    if not row.ok:
        counts[row.status] += 1
    elif row.noisy:
        counts["noisy"] += 1


def _check_limits(specs, limits: Limits) -> None:
    too_big = []
    for spec in specs:
        try:
            check_spec(spec, limits)
        except OplatError as exc:
            too_big.append(str(exc))
    if too_big:
        first = too_big[0] if len(too_big) == 1 else f"{len(too_big)} entries are over the size limits, the first: {too_big[0]}"
        raise OplatError(f"{first}; nothing was measured")


def measure_specs(specs: Sequence[OpSpec], device: Device, config: MeasureConfig | None = None, **options: Any) -> MeasureSummary:
    """Measure ``specs`` on ``device``, appending rows to the table at ``config.out``.

    Takes a :class:`MeasureConfig` (whose fields are documented there), or its fields as
    keywords (``measure_specs(specs, device, opset=..., out=..., policy=...)``), or both
    (keywords override the config's). The table is locked for the whole run and read after
    the lock is taken, so a run that waited measures only what the other left. Every spec
    is checked against the size limits before anything is built. Before appending to a
    table that has rows, a few of them are re-timed (:func:`check_drift`) unless
    ``accept_drift``.
    """
    config = configured(MeasureConfig, config, options)
    with _resumed(specs, config, lambda: fingerprint_for(device), config.keeps) as run:
        module = device.require()
        if run.pending and not config.accept_drift:
            check_drift(run.out, list(run.done.values()), device, module, run.policy)
        with progress_bar(
            total=len(specs), initial=run.already, unit="op", desc=f"{device.name} {config.opset}", enabled=config.progress
        ) as bar:

            def write(row: Row) -> None:
                run.writer.append(row)
                run.count(row)
                if config.on_row:
                    config.on_row(row)
                bar.update(1)

            for start in range(0, len(run.pending), config.batch):
                chunk = run.pending[start : start + config.batch]
                bar.set_postfix_str(chunk[0].label(), refresh=True)
                _measure_batch(chunk, device, module, config.opset, run.fingerprint, run.policy, write, config.models)
    return run.summary()

#: Rows re-timed by the drift check, and the least p10 a row needs to take part (faster
#: rows move by more than their recorded noise between any two runs).
DRIFT_ROWS, DRIFT_MIN_MS = 3, 1.0
#: A re-timed row has moved when its p10 is off by more than this many percent, or more
#: than its own recorded round spread if that is larger.
DRIFT_PCT = 10.0


def drift_sample(rows: list[Row]) -> list[Row]:
    """Up to DRIFT_ROWS ok rows of at least DRIFT_MIN_MS, spread over the table's range:
    the rows re-timed to tell whether the machine still runs as when they were measured."""
    usable = sorted((r for r in rows if r.ok and r.stats.of("p10") >= DRIFT_MIN_MS), key=lambda r: r.stats.of("p10"))
    if len(usable) <= DRIFT_ROWS:
        return usable
    step = (len(usable) - 1) / (DRIFT_ROWS - 1)
    return [usable[round(i * step)] for i in range(DRIFT_ROWS)]


def check_drift(path: Path, rows: list[Row], device: Device, module, policy: TimingPolicy) -> None:
    """Re-time a few rows of the table at ``path``; refuse to append when most of them moved
    beyond their recorded noise. A table holds for the machine and the days it was measured
    on: the committed cpu table re-measured days later on a host with the same fingerprint
    ran 1.34× slower at p10, and appended rows would have mixed the two."""
    sample = drift_sample(rows)
    if not sample:
        return
    timings = time_networks([model_from_op(r.spec) for r in sample], device, policy)
    ratios = [t.stats.of("p10") / r.stats.of("p10") for t, r in zip(timings, sample)]
    moved = [abs(q - 1) * 100 > max(DRIFT_PCT, r.spread_pct or 0.0) for q, r in zip(ratios, sample)]
    if sum(moved) * 2 > len(sample):
        when = sorted(r.measured_at for r in rows if r.measured_at)
        since = f" since {when[0][:10]}" if when else ""
        raise OplatRuntimeError(
            f"{path}: {sum(moved)} of {len(sample)} re-timed rows moved beyond their recorded noise "
            f"(now {', '.join(f'{q:.2f}×' for q in ratios)} their p10): this machine or its load changed{since}. "
            "Write to a new table with --out NEW, or add --accept-drift to append anyway"
        )


def time_networks(models: Sequence, device: Device, policy: TimingPolicy | None = None, *, profile: bool = False) -> list[NetworkTiming]:
    """Time whole networks end to end with interleaved rounds (one batch).

    Round *r* of every network runs before round *r+1* of any, so a slow spell of a
    shared machine falls on all of them alike, and each network's rounds are spread
    over the whole batch instead of a few seconds. Returns one :class:`NetworkTiming`
    per model. Self-timed sessions (remote agents, board tools) time themselves with the
    same policy, one after another.
    """
    module = device.require()
    policy = policy or TimingPolicy()
    with ExitStack() as stack:
        sessions = [stack.enter_context(module.open(m, inputs_for(m), device.options)) for m in models]
        if any(_self_timed(s) for s in sessions):
            timings = [s.time(policy) if _self_timed(s) else time_interleaved([s.run], policy)[0] for s in sessions]
        else:
            timings = time_interleaved([s.run for s in sessions], policy)
        out = []
        for session, timing in zip(sessions, timings):
            stats = timing.summary()
            kernel_profile = None
            if profile:
                try:
                    kernel_profile = session.profile(profile_runs(stats.median_ms))
                except Exception:  # per-node times are optional; the wall time stands
                    kernel_profile = None
            out.append(NetworkTiming(stats, timing.spread_pct > policy.agree_pct, timing.spread_pct, len(timing.rounds_ms), kernel_profile))
    return out


def time_network(model, device: Device, policy: TimingPolicy | None = None, *, profile: bool = False) -> NetworkTiming:
    """Time one whole network end to end: :func:`time_networks` of a batch of one."""
    return time_networks([model], device, policy, profile=profile)[0]
