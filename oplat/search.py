"""``oplat search``: find the plain SR network with the most capacity under a latency budget.

Each Optuna trial picks a network from a :class:`~oplat.space.SearchSpace`
(:func:`~oplat.space.arch_from_trial`), predicts its latency from the latency table
(:class:`~oplat.predict.Predictor`) and scores its quality. Latency ≤ budget is an Optuna
constraint, so infeasible trials stay in the study and the sampler learns from them.

The objective — a **capacity proxy (not PSNR)**
-----------------------------------------------
Nothing here trains a network, so quality is a *proxy*, named as one in every output::

    Q = log2(M) + log2(R)

``M``
    learned multiply-accumulates per **output** pixel: Σ over the declared convs of
    c_in·c_out·k², divided by s² (the output has s² pixels per LR pixel). ``folded`` counts
    its declared widths, not the 3 identity channels it carries (``anchor`` and ``folded``
    compute the same function, so they score the same). ``none`` is credited as an anchor
    network 3 channels narrower in every layer but the last: ``folded`` shows that a plain
    network needs exactly those 3 channels per layer to carry the image that the anchor
    adds for free.
``R``
    receptive field of one output pixel, in LR pixels (one side): 1 + Σ (k − 1).

Why this is defensible: within one family of plain conv+ReLU SR networks, PSNR is commonly
observed to rise roughly linearly in log(compute) until it saturates (FSRCNN/ESPCN/ABPN-style
width and depth sweeps; the Mobile AI 2021 SR challenge's PSNR-vs-runtime plots), so
``log2(M)`` is the capacity axis; ``log2(R)`` is the depth term — at equal compute a deeper
network sees more context and composes more nonlinearities. Q is monotone: widening any
layer or adding a layer never lowers it. It ranks networks; it does not predict dB, and a
search result must still be trained and evaluated on real images.

INT8 without quantizing every trial
-----------------------------------
:func:`arch_net` builds the :class:`~oplat.graph.NetGraph` of a network straight from its
ArchSpec — the same kernels (and node names) that :func:`~oplat.graph.net_graph` reads from
:func:`~oplat.arch.model_from_arch` (FP32) or from its :func:`~oplat.arch.quantize_qdq`
graph (INT8: every conv an int8 ``conv`` — the quantizer folds ReLU into the uint8 output
range — and no Clip kernel, the [0, 1] clip being the output's uint8 saturation), in
microseconds instead of seconds.

Storage and resuming
--------------------
By default the study lives in ``<out_dir>/study.journal``, an Optuna journal file (the
standard format: Optuna's own ``JournalFileBackend`` and optuna-dashboard read it). oplat
writes it without an fsync per record — each record is one ``write`` under an ``flock``, so
a killed process loses nothing it wrote; the file is fsynced about once a second and at the
end, so only a power cut can lose the last second. One ``oplat search`` at a time may use a
result folder (``<out_dir>/search.lock``); a resumed search marks trials a killed run left
RUNNING as FAIL and runs their parameters again. ``trials`` is the total the study should
reach: a resumed search runs only the missing ones. Any Optuna storage URL
(``postgresql://…``, ``sqlite:///…``) can be given instead, for many workers; then running
trials are left alone (another worker may own them). A journal path given as storage must
be in an existing folder, and an existing file there must be an Optuna journal (anything
else is refused untouched). A torn last record (a writer killed inside its write) is cut
off when the journal is opened, so the file always stays readable by Optuna.

Ctrl-C ends a search with ``KeyboardInterrupt`` and no Optuna log: inside a trial the
trial is told FAIL and queued again for the next run; inside Optuna's bookkeeping the
interrupt waits until the trial is recorded (see :class:`_Interrupts`). Emitted files are
written to a temporary name and renamed, so an interrupted emission keeps the last ones.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import stat
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import networkx as nx

import oplat
from oplat.arch import ArchSpec, arch_ops, calibration_images, convs, describe, macs, model_from_arch, params, quantize_qdq
from oplat.backends.ort import exact_session
from oplat.devices import Device
from oplat.progress import progress_bar
from oplat.errors import OplatError, warn
from oplat.graph import Kernel, NetGraph
from oplat.predict import Prediction, Predictor
from oplat.space import SearchSpace, arch_from_trial, trial_params
from oplat.spec import OpSpec

__all__ = [
    "MEASURE_CANDIDATES",
    "PRECISIONS",
    "QUALITY_PROXY_FORMULA",
    "QUALITY_PROXY_NAME",
    "SearchResult",
    "arch_kernels",
    "arch_net",
    "check_storage",
    "fastest_network",
    "learned_macs_per_output_pixel",
    "quality_proxy",
    "receptive_field_px",
    "run_search",
    "search_throughput",
]

QUALITY_PROXY_NAME = "capacity proxy (not PSNR)"
QUALITY_PROXY_FORMULA = (
    "Q = log2(learned MACs per output pixel) + log2(receptive field in LR pixels); "
    "folded counts its declared widths, none is credited 3 channels narrower per layer"
)
#: With a device: how many candidates (the winner first, then the next feasible networks
#: in quality order) are measured at most when the winner measures over budget.
MEASURE_CANDIDATES = 5
#: Largest output difference (in 1/255 steps) allowed between best.tflite and
#: best.int8.onnx; 99% of pixels must be within 2 steps.
MAX_TFLITE_STEPS = 8
PRECISIONS = ("int8", "fp32")

_C_IN = 3
_JOURNAL = "study.journal"
_LOCK = "search.lock"
_FSYNC_EVERY_S = 1.0


# ---------------------------------------------------------------------- quality proxy
def _learned_widths(arch: ArchSpec) -> list[tuple[int, int, int]]:
    """(c_in, c_out, kernel) of the declared convs, as :func:`quality_proxy` credits them."""
    narrow = 3 if arch.residual == "none" else 0
    out = []
    c_in = _C_IN
    last = len(arch.layers) - 1
    for i, layer in enumerate(arch.layers):
        c_out = layer.c_out if i == last else max(1, layer.c_out - narrow)
        out.append((c_in, c_out, layer.kernel))
        c_in = c_out
    return out


def learned_macs_per_output_pixel(arch: ArchSpec) -> float:
    """Σ c_in·c_out·k² over the declared convs / s² (see the module docstring), MACs per
    output pixel."""
    total = sum(ci * co * k * k for ci, co, k in _learned_widths(arch))
    return total / (arch.scale * arch.scale)


def receptive_field_px(arch: ArchSpec) -> int:
    """Receptive field of one output pixel along one side, in LR pixels: 1 + Σ (k − 1)."""
    return 1 + sum(layer.kernel - 1 for layer in arch.layers)


@lru_cache(maxsize=65536)
def quality_proxy(arch: ArchSpec) -> float:
    """The capacity proxy (not PSNR), dimensionless, higher is better:
    ``log2(learned_macs_per_output_pixel) + log2(receptive_field_px)``."""
    return math.log2(learned_macs_per_output_pixel(arch)) + math.log2(receptive_field_px(arch))


# ---------------------------------------------------------------------- kernels without ONNX
def arch_kernels(arch: ArchSpec, precision: str = "fp32") -> list[Kernel]:
    """The kernels :func:`oplat.graph.net_graph` reads from the network's ONNX graph.

    ``fp32``: the graph of :func:`~oplat.arch.model_from_arch`. ``int8``: the graph of
    :func:`~oplat.arch.quantize_qdq` of it — every conv a plain int8 ``conv`` (the quantizer
    drops each ReLU into its conv's uint8 output range) and no ``clip`` kernel. Node names
    are those of the ONNX graphs.
    """
    if precision not in PRECISIONS:
        raise OplatError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    int8 = precision == "int8"
    kernels: list[Kernel] = []
    conv_i = 0
    for spec in arch_ops(arch, precision):
        if spec.op in ("conv", "conv+relu"):
            if int8:
                spec = OpSpec("conv", spec.c, spec.h, spec.w, n=spec.n, c_out=spec.c_out, kernel=spec.kernel, precision="int8")
                nodes: tuple[str, ...] = (f"conv{conv_i}",)
            else:
                nodes = (f"conv{conv_i}", f"relu{conv_i}") if spec.op == "conv+relu" else (f"conv{conv_i}",)
            conv_i += 1
        elif spec.op == "concat":
            nodes = ("anchor",)
        elif spec.op == "add":
            nodes = ("add_anchor",)
        elif spec.op == "depth_to_space":
            nodes = ("depth_to_space",)
        elif spec.op == "clip":
            if int8:
                continue
            nodes = ("clip",)
        else:  # pragma: no cover - arch_ops emits only the ops above
            raise AssertionError(spec.op)
        kernels.append(Kernel(spec, nodes))
    return kernels


def arch_net(arch: ArchSpec, precision: str = "fp32") -> NetGraph:
    """A :class:`~oplat.graph.NetGraph` for the predictor, built from ``arch`` alone.

    Kernels, element counts, boundary nodes, params, MACs and precision are those
    :func:`~oplat.graph.net_graph` gives for the FP32 or QDQ INT8 ONNX graph; the node
    graph is left empty and ``peak_activation_bytes`` 0 (the predictor uses neither).
    """
    kernels = arch_kernels(arch, precision)
    return NetGraph(
        graph=nx.DiGraph(),
        kernels=kernels,
        input_elements=_C_IN * arch.in_h * arch.in_w,
        output_elements=_C_IN * arch.out_h * arch.out_w,
        boundary_nodes=["x_QuantizeLinear", "y_DequantizeLinear"] if precision == "int8" else [],
        params=params(arch),
        macs=macs(arch),
        precision=precision,
    )


# ---------------------------------------------------------------------- pricing
@dataclass(frozen=True)
class _Priced:
    predicted_ms: float
    calibrated: bool
    measured_share: float


class _FixedTrial:
    """A trial that answers every ``suggest_*`` from a dict (a missing name: the lowest value or first choice)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def suggest_int(self, name: str, low: int, high: int) -> int:
        return int(self._values.get(name, low))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._values.get(name, choices[0])


class _Prices:
    """Cached predictions per (arch, precision); with a device, measures what the table lacks."""

    def __init__(self, predictor: Predictor, *, device: Device | None, table_path: Path | None, policy, opset: str):
        if device is not None and table_path is None:
            raise OplatError("measuring on the fly needs the table file to write to; give table_path (--table)")
        self.predictor = predictor
        self.device = device
        self.table_path = table_path
        self.policy = policy
        self.opset = opset
        self.measured_rows = 0
        self._cache: dict[tuple[ArchSpec, str], _Priced] = {}

    def _known(self, spec: OpSpec) -> bool:
        p = self.predictor
        if spec.key in p.rows or spec.key in p.failed:
            return True
        if spec.precision == "int8" and spec.op in ("conv", "conv+relu"):
            twin = OpSpec.from_dict({**spec.as_dict(), "op": "conv+relu" if spec.op == "conv" else "conv"})
            return twin.key in p.rows
        return False

    def ensure_measured(self, specs: Sequence[OpSpec]) -> None:
        """With a device: measure every spec the table lacks, then reload the table."""
        if self.device is None:
            return
        missing = list({s.key: s for s in specs if not self._known(s)}.values())
        if not missing:
            return
        from oplat.measure import measure_specs
        from oplat.table import read_table

        summary = measure_specs(missing, self.device, opset=self.opset, out=self.table_path, policy=self.policy, progress=False)
        self.measured_rows += summary.measured
        self.predictor = Predictor(
            read_table(self.table_path, quiet=True).rows,
            composition=self.predictor.composition,
            fusion=self.predictor.fusion,
            source=str(self.table_path),
            stat=self.predictor.stat,
        )
        self._cache.clear()  # neighbour-based figures may change with the new rows

    def price(self, arch: ArchSpec, precision: str, *, measure: bool = True) -> _Priced:
        key = (arch, precision)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        net = arch_net(arch, precision)
        if measure:
            self.ensure_measured([k.spec for k in net.kernels])
        pred = self.predictor.predict(net)
        priced = _Priced(pred.total_ms, pred.calibrated, pred.measured_share)
        self._cache[key] = priced
        return priced


def _arch(space: SearchSpace, values: dict[str, Any]) -> ArchSpec:
    return arch_from_trial(_FixedTrial(values), space)


def _depth_min_candidates(space: SearchSpace) -> list[ArchSpec]:
    """Every residual × every (uniform) width at the smallest depth."""
    out = []
    for residual in space.residuals:
        for width in space.channels:
            values: dict[str, Any] = {"depth": space.depth_min, "residual": residual, "width": width}
            values.update({f"width_{i}": width for i in range(space.depth_min + 1)})
            out.append(_arch(space, values))
    return out


def fastest_network(
    space: SearchSpace, predictor: Predictor, *, precision: str = "int8"
) -> tuple[ArchSpec, float]:
    """The network of ``space`` with the lowest predicted latency and that latency, ms.

    Latency grows with depth, so only the smallest depth is searched, over every residual
    mode and every width (a table need not be monotone in width: channel padding).
    """
    prices = _Prices(predictor, device=None, table_path=None, policy=None, opset="")
    return _fastest(space, prices, precision)


def _fastest(space: SearchSpace, prices: _Prices, precision: str) -> tuple[ArchSpec, float]:
    candidates = _depth_min_candidates(space)
    prices.ensure_measured([k.spec for a in candidates for k in arch_kernels(a, precision)])
    priced = [(prices.price(a, precision).predicted_ms, i, a) for i, a in enumerate(candidates)]
    ms, _, arch = min(priced)
    return arch, ms


# ---------------------------------------------------------------------- storage
class _Flock:
    """An exclusive ``flock`` on a file (released by the kernel when the process dies)."""

    def __init__(self, path: Path, *, blocking: bool) -> None:
        import fcntl

        self._fcntl = fcntl
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self._blocking = blocking

    def acquire(self) -> bool:
        flags = self._fcntl.LOCK_EX | (0 if self._blocking else self._fcntl.LOCK_NB)
        try:
            self._fcntl.flock(self._fd, flags)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        self._fcntl.flock(self._fd, self._fcntl.LOCK_UN)

    def write_pid(self) -> None:
        """Record this process in the lock file (for people looking; the lock is the flock)."""
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def close(self) -> None:
        os.close(self._fd)


def _journal_backend(path: Path):
    """An Optuna journal file backend: same file format, no fsync per record (see the
    module docstring), an ``flock`` instead of Optuna's symlink lock."""
    from optuna.storages.journal import JournalFileBackend

    class _OplatJournalFile(JournalFileBackend):
        def __init__(self, file_path: str) -> None:
            super().__init__(file_path)
            self._oplat_path = file_path
            self._oplat_lock = _Flock(Path(file_path + ".flock"), blocking=True)
            self._oplat_synced = time.monotonic()
            self._oplat_cut_torn_tail()

        def _oplat_cut_torn_tail(self) -> None:
            # A writer killed inside its write (or a power cut) can leave a last line without
            # its newline. Optuna skips it, but the next append would glue a record onto it
            # and make the file unreadable. Under the writers' lock nobody is mid-write, so a
            # tail without a newline is torn: cut it (it was never a finished record).
            self._oplat_lock.acquire()
            try:
                fd = os.open(self._oplat_path, os.O_RDWR)
                try:
                    size = os.fstat(fd).st_size
                    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
                        return
                    keep, end = 0, size
                    while end > 0:
                        start = max(0, end - (1 << 16))
                        i = os.pread(fd, end - start, start).rfind(b"\n")
                        if i >= 0:
                            keep = start + i + 1
                            break
                        end = start
                    os.ftruncate(fd, keep)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            finally:
                self._oplat_lock.release()
            warn(f"{self._oplat_path} ended in a torn record ({size - keep} bytes, a run killed while writing it); cut it off")

        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            data = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode("utf-8")
            self._oplat_lock.acquire()
            try:
                fd = os.open(self._oplat_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    if time.monotonic() - self._oplat_synced > _FSYNC_EVERY_S:
                        os.fsync(fd)
                        self._oplat_synced = time.monotonic()
                finally:
                    os.close(fd)
            finally:
                self._oplat_lock.release()

        def read_logs(self, log_number_from: int):
            # Optuna re-reads the journal before every storage call (~20 per trial). When
            # the file has not grown since the last read (every writer appends), there is
            # nothing new: a stat instead of an open and a read.
            offsets = getattr(self, "_log_number_offset", None)
            if offsets is not None and log_number_from in offsets:
                try:
                    if os.stat(self._oplat_path).st_size == offsets[log_number_from]:
                        return iter(())
                except OSError:
                    pass
            return super().read_logs(log_number_from)

        def sync(self) -> None:
            fd = os.open(self._oplat_path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._oplat_synced = time.monotonic()

    return _OplatJournalFile(str(path))


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _journal_file(storage: str | None, out_dir: Path) -> tuple[Path | None, str]:
    """The journal file a search will use (None for a storage URL) and what to tell a user
    whose file is unusable; raises :class:`OplatError` before anything is written when the
    file exists but is not an Optuna journal, or when a ``--storage`` path's folder is
    missing (only the default ``<out_dir>/study.journal`` gets its folder made)."""
    if storage is not None and "://" in storage:
        return None, ""
    if storage is None:
        path, hint = out_dir / _JOURNAL, "delete it or pick another --name"
    else:
        if not storage.strip():
            raise OplatError("--storage is empty; give a journal file path or a database URL (e.g. sqlite:///studies.db)")
        path, hint = Path(storage), "give a new path or a database URL (e.g. sqlite:///studies.db) to --storage"
        parent = path.parent
        if parent.exists() and not parent.is_dir():
            raise OplatError(f"{parent} is not a folder, so it cannot hold the study journal {path}; give another --storage")
        if not parent.is_dir():
            raise OplatError(
                f"the folder {parent} of the study journal {path} does not exist; create the folder first "
                f"(mkdir -p {parent}) or give another --storage"
            )
    _check_journal_file(path, hint)
    return path, hint


def check_storage(storage: str | None, out_dir: str | Path) -> None:
    """Raise the :class:`OplatError` :func:`run_search` gives for this ``storage`` (a journal
    path whose folder is missing, an existing file that is not an Optuna journal), before
    anything is read, measured or written."""
    _journal_file(storage, Path(out_dir))


def _check_journal_file(path: Path, hint: str) -> None:
    """Refuse an existing file that is not an Optuna journal (a text file, a latency table,
    an SQLite database) before Optuna reads it or appends to it. A missing or empty file is
    a new journal."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OplatError(f"cannot read the study journal {path} ({exc.strerror}); {hint}") from None
    if stat.S_ISDIR(st.st_mode):
        raise OplatError(f"{path} is a folder, not an Optuna journal file; {hint}")
    if not stat.S_ISREG(st.st_mode):
        raise OplatError(f"{path} is not a regular file, so not an Optuna journal file; {hint}")
    if st.st_size == 0:
        return
    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 16)
    except OSError as exc:
        raise OplatError(f"cannot read the study journal {path} ({exc.strerror}); {hint}") from None
    if first.startswith(_SQLITE_MAGIC):
        raise OplatError(
            f"{path} is an SQLite database, not an Optuna journal file; give it as a URL "
            f"(--storage sqlite:///{path.resolve()}) or give a new path"
        )
    try:
        record = json.loads(first)
    except ValueError:  # not JSON, not UTF-8
        record = None
    if not (isinstance(record, dict) and isinstance(record.get("op_code"), int) and "worker_id" in record):
        raise OplatError(f"{path} is not an Optuna journal file (its first line is not a journal record); {hint}")


def _open_storage(storage: str | None, out_dir: Path):
    """(storage object or URL, journal backend or None, text for reports)."""
    from optuna.storages import JournalStorage

    path, hint = _journal_file(storage, out_dir)
    if path is None:
        return storage, None, storage
    writable = "pick a writable --results" if storage is None else "give a writable --storage path"
    try:
        backend = _journal_backend(path)
    except OSError as exc:
        raise OplatError(f"cannot write the study journal {path} ({exc.strerror}); {writable}") from None
    try:
        return JournalStorage(backend), backend, str(path)
    except Exception as exc:  # a damaged journal: Optuna raises JSON, key or value errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OplatError(f"cannot read the study journal {path} ({type(exc).__name__}: {first}); {hint}") from None


def _study_attrs(space: SearchSpace, budget_ms: float, precision: str, table: str, pareto: bool) -> dict[str, Any]:
    return {
        "oplat.space": space.name,
        "oplat.space_fingerprint": space.fingerprint,
        "oplat.budget_ms": budget_ms,
        "oplat.precision": precision,
        "oplat.table": table,
        "oplat.pareto": pareto,
        "oplat.quality_proxy": QUALITY_PROXY_FORMULA,
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


# ---------------------------------------------------------------------- the search loop
@dataclass(frozen=True)
class _Loop:
    study: Any
    prices: _Prices
    journal: Path | None
    storage_text: str
    trials_run: int
    elapsed_s: float


def _set_constraint(trial, slack_ms: float) -> None:
    if hasattr(trial, "set_constraint"):  # Optuna >= 5: constraints live on the trial
        trial.set_constraint("latency_ms", slack_ms)
    else:  # Optuna 4: read back by _constraints_func
        trial.set_user_attr("constraint", [slack_ms])


def _constraints_func(trial) -> list[float]:
    return list(trial.user_attrs.get("constraint", [0.0]))


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


def _preflight(*, space: SearchSpace, prices: _Prices, budget_ms: float, precision: str, trials: int) -> ArchSpec:
    """Check the arguments and that some network meets the budget; the fastest network."""
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise OplatError(f"trials must be a positive integer, got {trials!r}")
    if precision not in PRECISIONS:
        raise OplatError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not (isinstance(budget_ms, (int, float)) and math.isfinite(budget_ms) and budget_ms > 0):
        raise OplatError(f"the latency budget must be a positive number of ms, got {budget_ms!r}")
    fastest, fastest_ms = _fastest(space, prices, precision)
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


class _FolderLock:
    """Holds ``<out_dir>/search.lock`` while a search with a journal file runs and emits.

    With a storage URL nothing is locked (workers elsewhere share the study) and
    ``owned`` is False, so trials other workers are running are left alone.
    """

    def __init__(self, out_dir: Path, storage: str | None) -> None:
        self.out_dir = out_dir
        self.owned = storage is None or "://" not in storage
        self._lock: _Flock | None = None

    def __enter__(self) -> _FolderLock:
        if not self.owned:
            return self
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            lock = _Flock(self.out_dir / _LOCK, blocking=False)
        except OSError as exc:
            raise OplatError(f"cannot write to {self.out_dir} ({exc.strerror}); pick a writable --results") from None
        if not lock.acquire():
            lock.close()
            raise OplatError(f"another oplat search is running in {self.out_dir}; wait for it to finish or pick another --name")
        lock.write_pid()
        self._lock = lock
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock.close()
            self._lock = None


class _Interrupts:
    """Ctrl-C (SIGINT) during a search (held by ``run_search``), so that it never tears the study.

    Optuna's bookkeeping (opening the study, asking for a trial, telling its result: journal
    records that belong together) runs *deferred*: a Ctrl-C there stops the loop after the
    trial (``study.stop``) and raises ``KeyboardInterrupt`` where the deferred block ends.
    Inside the objective (``immediate``) it raises at once, and the objective fails its trial
    quietly (see ``_search_loop``). A second Ctrl-C while stopping is ignored; a third raises
    wherever it lands. Installed only in the main thread, over Python's default handler
    (another handler is left alone, and a Ctrl-C then behaves as it always did).
    """

    def __init__(self) -> None:
        self.presses = 0
        self.study = None  # set once the study is open: a deferred Ctrl-C stops its loop
        self._raised = False
        self._deferred = False
        self._old = None

    def __enter__(self) -> _Interrupts:
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


def _search_loop(
    *,
    space: SearchSpace,
    prices: _Prices,
    fastest: ArchSpec,
    own_folder: bool,
    budget_ms: float,
    precision: str,
    trials: int,
    name: str,
    out_dir: Path,
    storage: str | None,
    seed: int | None,
    pareto: bool,
    table_text: str,
    progress: bool,
    interrupts: _Interrupts,
) -> _Loop:
    import optuna
    from optuna.trial import TrialState
    out_dir.mkdir(parents=True, exist_ok=True)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    backend = None
    try:
        with interrupts.deferred():
            storage_obj, backend, storage_text = _open_storage(storage, out_dir)
            directions = ["minimize", "maximize"] if pareto else ["maximize"]
            try:
                study = optuna.create_study(
                    study_name=name,
                    storage=storage_obj,
                    sampler=_sampler(space, pareto=pareto, seed=seed),
                    directions=directions,
                    load_if_exists=True,
                )
            except OplatError:
                raise
            except ImportError as exc:
                raise OplatError(
                    f"storage {storage_text}: {str(exc).strip().splitlines()[0]} — install sqlalchemy and the URL's database "
                    "driver (e.g. psycopg2-binary for postgresql://)"
                ) from None
            except Exception as exc:  # a storage URL can fail in many driver-specific ways
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise OplatError(f"cannot open the study storage {storage_text}: {first}") from None
            interrupts.study = study

            want = _study_attrs(space, float(budget_ms), precision, table_text, pareto)
            existing = study.get_trials(deepcopy=False)
            if "oplat.space_fingerprint" in study.user_attrs:
                _check_resume(study, name, out_dir, want)
            elif all(t.state == TrialState.WAITING and t.user_attrs.get("oplat.seeded") == "fastest" for t in existing):
                # A new study, or one whose setup a killed run left unfinished (the
                # fingerprint, written last, marks a finished setup).
                if not existing:
                    # Start from the fastest network: the study always has a feasible trial.
                    study.enqueue_trial(trial_params(space, fastest), user_attrs={"oplat.seeded": "fastest"})
                for key, value in sorted(want.items(), key=lambda kv: kv[0] == "oplat.space_fingerprint"):
                    study.set_user_attr(key, value)
            else:
                raise OplatError(f"study {name!r} in {storage_text} was not made by oplat search; pick another --name")

            if own_folder:
                # We own the folder, so a RUNNING trial is a killed run's: fail it, run it again.
                study_id = storage_obj.get_study_id_from_name(name)
                for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    trial_id = storage_obj.get_trial_id_from_study_id_trial_number(study_id, t.number)
                    storage_obj.set_trial_state_values(trial_id, TrialState.FAIL)
                    # fixed_params: an enqueued trial (the fastest network) killed before it suggested them
                    retry = {**t.system_attrs.get("fixed_params", {}), **t.params}
                    study.enqueue_trial(retry, user_attrs={"oplat.retry_of": t.number})

            done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
            remaining = max(0, trials - done)

            def score(trial):
                arch = arch_from_trial(trial, space)
                priced = prices.price(arch, precision)
                quality = quality_proxy(arch)
                _set_constraint(trial, priced.predicted_ms - budget_ms)
                trial.set_user_attr("predicted_ms", priced.predicted_ms)
                trial.set_user_attr("quality_proxy", quality)
                trial.set_user_attr("params", params(arch))
                trial.set_user_attr("macs", macs(arch))
                trial.set_user_attr("arch", describe(arch))
                trial.set_user_attr("measured_share", priced.measured_share)
                return (priced.predicted_ms, quality) if pareto else quality

            def objective(trial):
                try:
                    with interrupts.immediate():
                        return score(trial)
                except KeyboardInterrupt:
                    # Ctrl-C inside a trial: Optuna tells it FAIL (never COMPLETE) and re-raises;
                    # its log of that "failure" (a traceback) is silenced, the trial queued
                    # again for the next run (as a killed run's RUNNING trial is).
                    optuna.logging.set_verbosity(optuna.logging.ERROR)
                    try:
                        retry = {**getattr(trial, "_fixed_params", {}), **trial.params}
                        study.enqueue_trial(retry, user_attrs={"oplat.retry_of": trial.number})
                    except Exception:  # pragma: no cover - the retry is a courtesy
                        pass
                    raise

            best = {"q": -math.inf, "ms": math.nan}
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                ms, q = t.user_attrs.get("predicted_ms"), t.user_attrs.get("quality_proxy")
                if ms is not None and q is not None and ms <= budget_ms and q > best["q"]:
                    best.update(q=q, ms=ms)
            with progress_bar(
                total=trials, initial=min(done, trials), unit="trial", desc=f"search {name}", enabled=progress
            ) as bar:

                if best["q"] > -math.inf:
                    bar.set_postfix_str(f"best Q={best['q']:.3f} at {best['ms']:.3g} ms", refresh=False)

                def on_trial(_study, frozen) -> None:
                    bar.update(1)
                    if frozen.state == TrialState.COMPLETE:
                        ms, q = frozen.user_attrs.get("predicted_ms"), frozen.user_attrs.get("quality_proxy")
                        if ms is not None and ms <= budget_ms and q > best["q"]:
                            best.update(q=q, ms=ms)
                            bar.set_postfix_str(f"best Q={q:.3f} at {ms:.3g} ms", refresh=False)

                start = time.perf_counter()
                interrupts.check()  # a Ctrl-C while the study opened: no trial starts
                if remaining:
                    study.optimize(objective, n_trials=remaining, callbacks=[on_trial], gc_after_trial=False)
                elapsed = time.perf_counter() - start
    finally:
        optuna.logging.set_verbosity(verbosity)
        if backend is not None:
            backend.sync()
    journal = Path(storage_text) if backend is not None else None
    return _Loop(study, prices, journal, storage_text, remaining, elapsed)


def _round_up(ms: float) -> str:
    """``ms`` rounded up to 2 significant digits, as text."""
    if ms <= 0:
        return "0"
    step = 10 ** (math.floor(math.log10(ms)) - 1)
    return f"{math.ceil(ms / step - 1e-9) * step:.6g}"


# ---------------------------------------------------------------------- results
@dataclass(frozen=True)
class _Candidate:
    number: int
    arch: ArchSpec
    predicted_ms: float
    quality: float
    measured_share: float


def _candidates(study, space: SearchSpace, budget_ms: float) -> tuple[list[_Candidate], list[_Candidate]]:
    """(all completed trials, the feasible ones best first: quality ↓, latency ↑, number ↑;
    one per network)."""
    from optuna.trial import TrialState

    done = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        ua = t.user_attrs
        if "predicted_ms" not in ua or "quality_proxy" not in ua:
            continue
        arch = _arch(space, t.params)
        done.append(_Candidate(t.number, arch, float(ua["predicted_ms"]), float(ua["quality_proxy"]), float(ua.get("measured_share", 0.0))))
    feasible: dict[ArchSpec, _Candidate] = {}
    for c in sorted(done, key=lambda c: (-c.quality, c.predicted_ms, c.number)):
        if c.predicted_ms <= budget_ms and c.arch not in feasible:
            feasible[c.arch] = c
    return done, list(feasible.values())


def _pareto_front(done: list[_Candidate]) -> list[_Candidate]:
    """Latency ↓ / quality ↑ non-dominated trials, one per network, fastest first."""
    unique: dict[ArchSpec, _Candidate] = {}
    for c in sorted(done, key=lambda c: c.number):
        unique.setdefault(c.arch, c)
    front = []
    best_q = -math.inf
    for c in sorted(unique.values(), key=lambda c: (c.predicted_ms, -c.quality, c.number)):
        if c.quality > best_q:
            front.append(c)
            best_q = c.quality
    return front


@dataclass(frozen=True, kw_only=True)
class SearchResult:
    """What :func:`run_search` found and wrote. Latencies in ms.

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


def _run_once(model, arch: ArchSpec) -> None:
    """Check an emitted model: full ONNX check, one onnxruntime run, the output shape."""
    import numpy as np
    import onnx

    onnx.checker.check_model(model, full_check=True)
    session = exact_session(model)
    x = calibration_images(arch.in_h, arch.in_w, 1, seed=1)[0]
    (y,) = session.run(None, {session.get_inputs()[0].name: x})
    want = (1, _C_IN, arch.out_h, arch.out_w)
    if tuple(y.shape) != want or not np.all(np.isfinite(y)):
        raise RuntimeError(f"emitted network gives output {y.shape} (finite: {np.all(np.isfinite(y))}), expected {want}")


def _emit_tflite(int8_model, arch: ArchSpec, path: Path) -> tuple[Path | None, str]:
    """Write the INT8 network as ``.tflite`` (NHWC, full-integer inside, float I/O) and
    check it: LiteRT's output must match onnxruntime's (exact int8) on the same image,
    99 % of it within two output quantization steps and all of it within
    :data:`MAX_TFLITE_STEPS`. Returns (path or None, a note for the report)."""
    import numpy as np

    try:
        from ai_edge_litert.interpreter import Interpreter

        from oplat.tflite import onnx_like_output, tflite_feeds, tflite_from_onnx
    except ImportError:
        return None, "best.tflite not written: LiteRT is not installed (pip install 'oplat[litert]')"
    data = tflite_from_onnx(int8_model)
    x = calibration_images(arch.in_h, arch.in_w, 1, seed=2)[0]
    session = exact_session(int8_model)
    name = session.get_inputs()[0].name
    (want,) = session.run(None, {name: x})
    interp = Interpreter(model_content=data, num_threads=1)
    interp.allocate_tensors()
    feeds = tflite_feeds({name: x})
    for detail in interp.get_input_details():
        interp.set_tensor(detail["index"], next(iter(feeds.values())))
    interp.invoke()
    got = onnx_like_output(interp.get_tensor(interp.get_output_details()[0]["index"]))
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


def _predict_model(predictor: Predictor, model) -> tuple[Prediction | None, str]:
    try:
        return predictor.predict(model), ""
    except OplatError as exc:
        return None, str(exc)


def _fmt_ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _kernel_table(pred: Prediction) -> str:
    from tabulate import tabulate

    rows = [
        [i, k.label, ", ".join(k.kernel.nodes), f"{k.compute_ms:.4g}", f"{k.layout_ms:.4g}", k.source, k.basis]
        for i, k in enumerate(pred.kernels)
    ]
    rows.append(["", "**sum**", "", f"{pred.compute_ms:.4g}", f"{pred.layout_ms:.4g}", "", ""])
    return tabulate(rows, headers=["#", "kernel", "nodes", "compute ms", "layout ms", "source", "basis"], tablefmt="github")


def _calibration_text(pred: Prediction) -> str:
    if pred.calibrated:
        c = pred.composition
        mape = f", fit error {c.fit_mape_pct:.1f}% MAPE" if c.fit_mape_pct is not None else ""
        return f"calibrated (composition model fitted on {c.networks} measured networks{mape})"
    return "uncalibrated: the total is the plain sum of kernel compute times (run `oplat calibrate`)"


def _write_report(
    path: Path,
    *,
    name: str,
    space: SearchSpace,
    table_text: str,
    device_text: str,
    budget_ms: float,
    precision: str,
    chosen: _Candidate,
    preds: dict[str, tuple[Prediction | None, str]],
    measured: dict[str, dict | None],
    over_budget: bool | None,
    substituted: str,
    tried: list[tuple[_Candidate, dict]],
    trials_total: int,
    trials_feasible: int,
    networks_feasible: int,
    storage_text: str,
    pareto: bool,
    tflite_note: str = "",
) -> None:
    from tabulate import tabulate

    arch = chosen.arch
    lines = [
        f"# oplat search `{name}`",
        "",
        f"- search space: `{space.name}` (fingerprint {space.fingerprint}), ×{space.scale}, "
        f"{space.in_h}×{space.in_w} → {arch.out_h}×{arch.out_w}",
        f"- budget: **{budget_ms:g} ms {precision}** (the {precision} network is what the budget constrains)",
        f"- latency table: `{table_text}` (device {device_text})",
        f"- study: `{storage_text}`, {trials_total} completed trials, {trials_feasible} of them feasible "
        f"({networks_feasible} distinct networks)"
        f", sampler {'NSGA-II (latency ↓, quality ↑)' if pareto else 'TPE (multivariate, constrained)'}",
        "",
        "## Winner",
        "",
        f"- architecture: `{describe(arch)}` (trial {chosen.number})",
        f"- parameters: {params(arch):,}",
        f"- MACs: {macs(arch):,} ({macs(arch) / 1e9:.4g} G) per {arch.in_h}×{arch.in_w} frame",
        f"- quality: **{QUALITY_PROXY_NAME}** Q = {chosen.quality:.3f} — a proxy, not a PSNR estimate: "
        f"{QUALITY_PROXY_FORMULA}. Here: {learned_macs_per_output_pixel(arch):.1f} learned MACs per output pixel, "
        f"receptive field {receptive_field_px(arch)} LR px. It ranks networks of this family by capacity; train and "
        "evaluate the winner on real images before trusting it.",
        "- weights: He-initialised placeholders (deterministic); both files are architectures to train, "
        "not trained models.",
        "",
        "| layer | conv | activation |",
        "|---|---|---|",
    ]
    for i, c in enumerate(convs(arch)):
        lines.append(f"| {i} | {c.kernel}×{c.kernel}, {c.c_in} → {c.c_out} | {'ReLU' if c.act == 'relu' else 'linear'} |")
    lines += ["", "## Predicted latency", ""]
    rows = []
    for prec, file in (("fp32", "best.onnx"), ("int8", "best.int8.onnx")):
        pred, why = preds[prec]
        if pred is None:
            rows.append([file, prec, "—", "—", "—", f"not predictable: {why}"])
        else:
            rows.append([file, prec, f"{pred.total_ms:.4g}", "yes" if pred.calibrated else "no (sum of kernels)", f"{100 * pred.measured_share:.0f}%", ""])
    lines.append(tabulate(rows, headers=["file", "precision", "predicted ms", "calibrated", "kernels measured", "note"], tablefmt="github"))
    lines.append("")
    for prec in (precision, *[p for p in PRECISIONS if p != precision]):
        pred, _ = preds[prec]
        if pred is None:
            continue
        file = "best.int8.onnx" if prec == "int8" else "best.onnx"
        lines += [
            f"### Per-kernel breakdown, `{file}` ({prec})",
            "",
            f"Total {pred.total_ms:.4g} ms — {_calibration_text(pred)}. `measured`: the table has this exact kernel; "
            "`predicted`: scaled from the nearest measured rows named in *basis*.",
            "",
            _kernel_table(pred),
            "",
        ]
    lines += ["## Measured latency", ""]
    if not any(measured.values()):
        lines += ["Not measured (no device given).", ""]
    else:
        rows = []
        for prec, file in (("fp32", "best.onnx"), ("int8", "best.int8.onnx")):
            m = measured.get(prec)
            if m:
                rows.append([file, prec, f"{m['median_ms']:.4g}", f"{m['p10_ms']:.4g}", f"{m['p90_ms']:.4g}", "yes" if m.get("noisy") else "no"])
        lines += [tabulate(rows, headers=["file", "precision", "median ms", "p10 ms", "p90 ms", "noisy"], tablefmt="github"), ""]
        if over_budget:
            lines += [f"OVER BUDGET: the emitted network measured over the {budget_ms:g} ms {precision} budget.", ""]
        else:
            lines += [f"Within budget: measured {precision} median ≤ {budget_ms:g} ms.", ""]
        if substituted:
            lines += [substituted, ""]
        if len(tried) > 1 or substituted:
            lines += ["Candidates measured (quality order):", ""]
            lines.append(
                tabulate(
                    [[c.number, describe(c.arch), f"{c.quality:.3f}", f"{c.predicted_ms:.4g}", f"{m['median_ms']:.4g}"] for c, m in tried],
                    headers=["trial", "network", "Q", "predicted ms", f"measured {precision} ms"],
                    tablefmt="github",
                )
            )
            lines.append("")
    lines += [
        "## Files",
        "",
        "- `best.onnx`: FP32, opset 17; `best.int8.onnx`: QDQ (uint8 activations, int8 per-channel weights).",
        f"- {tflite_note}" if tflite_note else "",
        "- `pareto.csv`: the latency / quality front of all completed trials (predicted latency, the capacity proxy).",
        "- oplat metadata (`oplat.*`) is in each file's `metadata_props`.",
        "",
    ]
    with _replacing(path) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")


def _write_pareto(path: Path, front: list[_Candidate], budget_ms: float) -> None:
    with _replacing(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["trial", "predicted_ms", "quality_proxy", "params", "macs", "measured_share", "feasible", "arch"])
        for c in front:
            w.writerow([
                c.number,
                f"{c.predicted_ms:.6g}",
                f"{c.quality:.6f}",
                params(c.arch),
                macs(c.arch),
                f"{c.measured_share:.3f}",
                "yes" if c.predicted_ms <= budget_ms else "no",
                describe(c.arch),
            ])


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


def _metadata(model, props: dict[str, str]) -> None:
    import onnx

    onnx.helper.set_model_props(model, props)


def _measure(model, device: Device, policy) -> dict:
    from oplat.measure import time_network

    timed = time_network(model, device, policy)
    return {**timed.stats.to_json(), "noisy": timed.noisy}


def _emit(
    *,
    loop: _Loop,
    space: SearchSpace,
    name: str,
    out_dir: Path,
    budget_ms: float,
    precision: str,
    device: Device | None,
    policy,
    table_text: str,
    pareto: bool,
    seed: int,
) -> SearchResult:
    import onnx

    done, feasible = _candidates(loop.study, space, budget_ms)
    n_feasible = sum(c.predicted_ms <= budget_ms for c in done)
    if not feasible:
        raise OplatError(
            f"study {name!r} has no completed trial within {budget_ms:g} ms {precision}; run more trials "
            f"(--trials) or delete {out_dir} and start again"
        )
    prices = loop.prices
    stat = f"{loop.prices.predictor.stat}_ms"  # measured networks are judged on the predictor's statistic

    def build(arch: ArchSpec):
        fp32 = model_from_arch(arch, seed=seed)
        return fp32, quantize_qdq(fp32, seed=seed)

    chosen = feasible[0]
    models = build(chosen.arch)
    measured: dict[str, dict | None] = {"fp32": None, "int8": None}
    over_budget: bool | None = None
    substituted = ""
    tried: list[tuple[_Candidate, dict]] = []
    if device is not None:
        index = 1 if precision == "int8" else 0
        first = chosen
        for cand in feasible[:MEASURE_CANDIDATES]:
            cand_models = models if cand is first else build(cand.arch)
            m = _measure(cand_models[index], device, policy)
            tried.append((cand, m))
            if m[stat] <= budget_ms:
                chosen, models = cand, cand_models
                break
        measured[precision] = next(m for c, m in tried if c is chosen)
        over_budget = measured[precision][stat] > budget_ms
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
        other = "fp32" if precision == "int8" else "int8"
        measured[other] = _measure(models[1 if other == "int8" else 0], device, policy)

    arch = chosen.arch
    fp32_model, int8_model = models
    # The emitted graphs, predicted as ONNX (the kernel path must agree with them).
    for prec in PRECISIONS:
        prices.ensure_measured([k.spec for k in arch_kernels(arch, prec)])
    preds = {"fp32": _predict_model(prices.predictor, fp32_model), "int8": _predict_model(prices.predictor, int8_model)}
    main_pred = preds[precision][0]
    if main_pred is None:  # pragma: no cover - the search priced this precision already
        raise OplatError(preds[precision][1])
    fast = prices.price(arch, precision, measure=False).predicted_ms
    if not math.isclose(fast, main_pred.total_ms, rel_tol=1e-6, abs_tol=1e-9):
        warn(f"kernel-path prediction {fast:.6g} ms differs from the ONNX graph's {main_pred.total_ms:.6g} ms (a bug)")

    device_text = device.name if device is not None else str(prices.predictor.device.get("name", "unknown"))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"fp32": out_dir / "best.onnx", "int8": out_dir / "best.int8.onnx"}
    for prec, model in (("fp32", fp32_model), ("int8", int8_model)):
        pred = preds[prec][0]
        props = {
            "oplat.version": oplat.__version__,
            "oplat.search": name,
            "oplat.space": f"{space.name} ({space.fingerprint})",
            "oplat.table": table_text,
            "oplat.device": device_text,
            "oplat.precision": prec,
            "oplat.budget_ms": f"{budget_ms:g}",
            "oplat.budget_precision": precision,
            "oplat.predicted_ms": "" if pred is None else f"{pred.total_ms:.6g}",
            "oplat.calibrated": "" if pred is None else str(pred.calibrated).lower(),
            "oplat.arch": json.dumps(asdict(arch), separators=(",", ":")),
            "oplat.arch_description": describe(arch),
            "oplat.quality_proxy": f"{chosen.quality:.6f}",
            "oplat.quality_proxy_name": f"{QUALITY_PROXY_NAME}: {QUALITY_PROXY_FORMULA}",
            "oplat.trial": str(chosen.number),
        }
        if measured.get(prec):
            m = measured[prec]
            props["oplat.measured_ms"] = f"{m['median_ms']:.6g}"
            props["oplat.measured_p10_ms"] = f"{m['p10_ms']:.6g}"
            props["oplat.measured_p90_ms"] = f"{m['p90_ms']:.6g}"
        _metadata(model, props)
        _run_once(model, arch)
        with _replacing(paths[prec]) as tmp:
            onnx.save(model, str(tmp))

    best_tflite, tflite_note = _emit_tflite(int8_model, arch, out_dir / "best.tflite")

    front = _pareto_front(done)
    report = out_dir / "report.md"
    pareto_csv = out_dir / "pareto.csv"
    _write_pareto(pareto_csv, front, budget_ms)
    _write_report(
        report,
        name=name,
        space=space,
        table_text=table_text,
        device_text=device_text,
        budget_ms=budget_ms,
        precision=precision,
        chosen=chosen,
        preds=preds,
        measured=measured,
        over_budget=over_budget,
        substituted=substituted,
        tried=tried,
        trials_total=len(done),
        trials_feasible=n_feasible,
        networks_feasible=len(feasible),
        storage_text=loop.storage_text,
        pareto=pareto,
        tflite_note=tflite_note,
    )
    return SearchResult(
        name=name,
        out_dir=out_dir,
        best_onnx=paths["fp32"],
        best_int8_onnx=paths["int8"],
        report=report,
        pareto_csv=pareto_csv,
        storage=loop.storage_text,
        journal=loop.journal,
        arch=arch,
        description=describe(arch),
        trial_number=chosen.number,
        quality_proxy=chosen.quality,
        params=params(arch),
        macs=macs(arch),
        budget_ms=float(budget_ms),
        precision=precision,
        predicted_ms=main_pred.total_ms,
        predicted_fp32_ms=None if preds["fp32"][0] is None else preds["fp32"][0].total_ms,
        predicted_int8_ms=None if preds["int8"][0] is None else preds["int8"][0].total_ms,
        calibrated=main_pred.calibrated,
        measured_share=main_pred.measured_share,
        measured_fp32=measured["fp32"],
        measured_int8=measured["int8"],
        over_budget=over_budget,
        substituted=substituted,
        trials_total=len(done),
        trials_feasible=n_feasible,
        trials_run=loop.trials_run,
        elapsed_s=loop.elapsed_s,
        measured_rows=prices.measured_rows,
        best_tflite=best_tflite,
        tflite_note=tflite_note,
    )


# ---------------------------------------------------------------------- entry points
def run_search(
    *,
    space: SearchSpace,
    predictor: Predictor,
    budget_ms: float,
    precision: str = "int8",
    trials: int = 200,
    name: str,
    out_dir: str | Path,
    storage: str | None = None,
    seed: int | None = 0,
    pareto: bool = False,
    device: Device | None = None,
    table_path: str | Path | None = None,
    policy=None,
    progress: bool = True,
) -> SearchResult:
    """Search ``space`` for the network with the highest capacity proxy within the budget.

    Args:
        space: the networks to try.
        predictor: prices kernels (``Predictor.from_table(table_path)``).
        budget_ms: latency budget in milliseconds (see :func:`oplat.units.parse_duration_ms`).
        precision: which network the budget constrains, ``int8`` (the QDQ network that
            ships; default) or ``fp32``.
        trials: the total number of completed trials the study should have; a resumed
            study runs only the missing ones.
        name: the study name (and, by convention, the folder ``results/search/<name>``).
        out_dir: where ``best.onnx``, ``best.int8.onnx``, ``report.md``, ``pareto.csv`` and
            (by default) ``study.journal`` go.
        storage: None for ``<out_dir>/study.journal``; an Optuna storage URL
            (``postgresql://…``, ``sqlite:///…``); or another journal file path (in an
            existing folder; an existing file there must be an Optuna journal).
        seed: sampler seed (and the seed of the emitted placeholder weights; None → 0 there).
        pareto: two objectives (latency ↓, quality ↑) with NSGA-II instead of TPE; the budget
            still constrains and the emitted network is the best feasible one.
        device: when given, kernels the table lacks are measured on it as trials need them
            (appended to ``table_path``, so later searches find them), and the emitted
            networks are measured end to end; if the winner measures over budget, up to
            :data:`MEASURE_CANDIDATES` feasible candidates are measured in quality order and
            the first under budget is emitted (the report says so).
        table_path: the table file behind ``predictor`` (recorded in outputs; written to
            when a device is given).
        policy: :class:`~oplat.timing.TimingPolicy` for measurements (default policy).
        progress: a progress bar with ETA on stderr.

    Raises :class:`OplatError` when no network of the space can meet the budget (naming the
    fastest possible latency), when ``name`` belongs to a study of another space, budget or
    mode, or when the table cannot price a kernel family the space needs.
    """
    out_dir = Path(out_dir)
    table_text = str(table_path) if table_path is not None else (predictor.source or "<in-memory table>")
    prices = _Prices(
        predictor,
        device=device,
        table_path=Path(table_path) if table_path is not None else None,
        policy=policy,
        opset=f"search:{space.name}",
    )
    _journal_file(storage, out_dir)  # refuse a bad journal path before anything is measured or made
    fastest = _preflight(space=space, prices=prices, budget_ms=budget_ms, precision=precision, trials=trials)
    with _Interrupts() as interrupts, _FolderLock(out_dir, storage) as folder:
        loop = _search_loop(
            space=space,
            prices=prices,
            fastest=fastest,
            own_folder=folder.owned,
            budget_ms=budget_ms,
            precision=precision,
            trials=trials,
            name=name,
            out_dir=out_dir,
            storage=storage,
            seed=seed,
            pareto=pareto,
            table_text=table_text,
            progress=progress,
            interrupts=interrupts,
        )
        return _emit(
            loop=loop,
            space=space,
            name=name,
            out_dir=out_dir,
            budget_ms=float(budget_ms),
            precision=precision,
            device=device,
            policy=policy,
            table_text=table_text,
            pareto=pareto,
            seed=0 if seed is None else seed,
        )


def search_throughput(
    *,
    space: SearchSpace,
    predictor: Predictor,
    budget_ms: float,
    precision: str = "int8",
    trials: int = 1000,
    out_dir: str | Path,
    seed: int | None = 0,
    pareto: bool = False,
    progress: bool = False,
) -> float:
    """Trials per second of the search loop alone (default journal storage under
    ``out_dir``, no emission): what ``run_search`` spends per trial from a table."""
    prices = _Prices(predictor, device=None, table_path=None, policy=None, opset="")
    fastest = _preflight(space=space, prices=prices, budget_ms=budget_ms, precision=precision, trials=trials)
    with _Interrupts() as interrupts, _FolderLock(Path(out_dir), None) as folder:
        loop = _search_loop(
            space=space,
            prices=prices,
            fastest=fastest,
            own_folder=folder.owned,
            budget_ms=budget_ms,
            precision=precision,
            trials=trials,
            name="throughput",
            out_dir=Path(out_dir),
            storage=None,
            seed=seed,
            pareto=pareto,
            table_text=predictor.source or "<in-memory table>",
            progress=progress,
            interrupts=interrupts,
        )
    return loop.trials_run / loop.elapsed_s if loop.elapsed_s > 0 else math.inf

