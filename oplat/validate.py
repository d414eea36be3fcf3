"""``oplat calibrate`` and ``oplat validate``: check a table's predictions against whole networks.

calibrate: measure a few random networks of a search space end to end and fit the
composition model (see :mod:`oplat.predict`), stored next to the table.

validate: measure *other* random networks (another seed; never the calibration ones)
end to end and report how close the predictions are: share within ±5 % and ±10 %, mean
absolute % error, the worst cases, and the error per kernel type (from the runtime's
per-node profile of each whole network, where it has one).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from oplat.attribution import attribute_profile
from oplat.options import configured
from oplat.devices import Device
from oplat.errors import OplatError
from oplat.fingerprint import SETUP_FIELDS, setup_diff
from oplat.measure import DRIFT_PCT, drift_sample, fingerprint_for, time_networks
from oplat.progress import progress_bar
from oplat.predict import Prediction, Predictor, compose_path, fit_composition
from oplat.records import Composition, CompositionFile, Stats
from oplat.spec import OpSpec
from oplat.timing import TimingPolicy

__all__ = [
    "CalibrateConfig", "NetworkResult", "ValidationReport", "calibrate", "check_table_device", "network_model",
    "sample_networks", "validate", "ValidateConfig",
]



def sample_networks(space, count: int, seed: int) -> list:
    """``count`` distinct random networks of ``space`` (deterministic for a seed)."""
    from oplat.space import sample_arch

    rng = np.random.default_rng(seed)
    seen, out = set(), []
    for _ in range(count * 50):
        arch = sample_arch(space, rng)
        if arch not in seen:
            seen.add(arch)
            out.append(arch)
            if len(out) == count:
                break
    return out


def network_model(arch, precision: str):
    """The ONNX model of ``arch``: FP32, or INT8 QDQ (uint8 activations, int8 weights)."""
    from oplat.arch import model_from_arch, quantize_qdq

    model = model_from_arch(arch)
    return quantize_qdq(model) if precision == "int8" else model


def check_table_device(predictor: Predictor, device: Device) -> None:
    """Refuse a table measured on another device (or setup) than ``device``."""
    diff = setup_diff(predictor.device, fingerprint_for(device), SETUP_FIELDS)
    if diff:
        was, now = diff
        raise OplatError(
            f"table {predictor.source} was measured with {was} but --device gives {now}; "
            "use that device's table or measure one with `oplat measure`"
        )


@dataclass(frozen=True)
class NetworkResult:
    arch: str
    precision: str
    predicted_ms: float
    measured_ms: float  # the network's wall time on the predictor's statistic
    p10_ms: float
    p90_ms: float
    median_ms: float
    measured_share: float
    by_kernel: dict  # op -> (predicted compute ms, profiled ms)
    arch_spec: dict = None  # the ArchSpec as data, so predictions can be recomputed offline
    features: dict = None  # the composition features of the prediction
    extrapolated: bool = False  # a kernel was priced from rows flagged far away

    @property
    def error_pct(self) -> float:
        return 100.0 * (self.predicted_ms - self.measured_ms) / self.measured_ms


def _by_kernel_type(pred: Prediction, profile) -> dict:
    """Per kernel type (:func:`oplat.attribution.kernel_type`): (predicted compute ms,
    profiled ms in the whole network); reorders and nodes no kernel owns, with the
    composition's boundary and constant terms, are ``(boundary)``."""
    if profile is None:
        return {}
    out = attribute_profile(pred, profile, pred.net.precision)
    boundary = out.setdefault("(boundary)", [0.0, 0.0])
    comp = pred.composition
    for other in ("(layout)", "(unattributed)"):
        boundary[1] += out.pop(other, [0.0, 0.0])[1]
    # the composition's terms beyond compute: in-network reorders, boundary, constant
    boundary[0] += comp.total(pred.features) - comp.compute * pred.compute_ms
    return {k: (round(v[0], 4), round(v[1], 4)) for k, v in out.items()}


#: Networks timed together with interleaved rounds (see :func:`oplat.measure.time_networks`).
NETWORK_BATCH = 8


def _predictable(archs, predictor, precision) -> tuple[list, list[dict]]:
    """(archs the table prices, [{arch, reason}] of those it refuses to price)."""
    from oplat.arch import describe
    from oplat.predict import MissingKernels

    ok, refused = [], []
    for arch in archs:
        try:
            predictor.predict(network_model(arch, precision))
            ok.append(arch)
        except MissingKernels as exc:
            refused.append({"arch": describe(arch), "reason": "; ".join(f"{k.spec.label()}: {why}" for k, why in exc.missing[:2])})
    return ok, refused


def _measure(archs, device, predictor, precision, policy, progress, desc) -> tuple[list[tuple[Prediction, Stats, object, object]], list[float]]:
    """((prediction, measured statistics, profile, arch) of each network, timed in
    batches; the drift). A few of the table's rows of ``precision`` are re-timed in every
    batch, interleaved with the networks: their p10 ratios (now / table) are the drift,
    how far the machine has moved from the table's window meanwhile."""
    from oplat.build import model_from_op

    sample = drift_sample(
        [r for r in predictor.rows.values() if isinstance(r.spec, OpSpec) and r.spec.precision == precision and r.spec.layout == "nchw"])
    out, drift = [], []
    with progress_bar(total=len(archs), desc=desc, unit="net", enabled=progress) as bar:
        for start in range(0, len(archs), NETWORK_BATCH):
            batch = archs[start : start + NETWORK_BATCH]
            models = [network_model(arch, precision) for arch in batch]
            preds = [predictor.predict(model) for model in models]
            timed = time_networks(models + [model_from_op(r.spec) for r in sample], device, policy, profile=True)
            out.extend((pred, t.stats, t.profile, arch) for pred, t, arch in zip(preds, timed, batch))
            for t, row in zip(timed[len(batch):], sample):
                drift.append(t.stats.of("p10") / row.stats.of("p10"))
            bar.update(len(batch))
    return out, drift


def drifted(ratios) -> bool:
    """Whether table rows re-timed now (``ratios``: p10 now / table p10) ran, at their
    median, more than DRIFT_PCT off the table."""
    return bool(len(ratios)) and abs(float(np.median(ratios)) - 1.0) * 100 > DRIFT_PCT


#: Fewest networks a composition fit takes (its leave-one-out error needs a few).
MIN_FIT_NETWORKS = 3


@dataclass(frozen=True, kw_only=True)
class CalibrateConfig:
    """One calibration (``oplat calibrate``): which table, on which networks.

    Attributes:
        predictor: the table calibrated (``Predictor.from_table(path)``); the fits are
            stored next to it (:func:`oplat.predict.compose_path`) and set on it.
        device: where the networks are measured: the device and setup of the table.
        space: the search space the networks are sampled from.
        precisions: ``fp32``, ``int8`` or both; each is fitted, and kept, in turn.
        networks: how many networks are measured end to end (at least
            :data:`MIN_FIT_NETWORKS`).
        seed: seed of the sampled networks (:func:`validate` samples with another).
        policy: :class:`~oplat.timing.TimingPolicy` for the measurements (None: the default).
        progress: a progress bar on stderr.
    """

    predictor: Predictor
    device: Device
    space: Any
    precisions: list[str]
    networks: int = 8
    seed: int = 1000
    policy: TimingPolicy | None = None
    progress: bool = True


@dataclass
class _Fits:
    """The composition file a calibration writes: what it held on the same statistic,
    updated with this run's fits as they are made."""

    path: Path
    composition: dict
    fusion: dict
    networks: dict

    @classmethod
    def read(cls, predictor: Predictor) -> _Fits:
        path = compose_path(predictor.source)
        try:
            stored = CompositionFile.read(path)
        except OplatError:
            stored = None  # unreadable: rewritten
        if stored is None or stored.stat != predictor.stat:  # fits on another statistic do not carry over
            stored = CompositionFile(stat=predictor.stat)
        return cls(path, dict(stored.composition), dict(stored.fusion), dict(stored.networks))

    def write(self, config: CalibrateConfig) -> None:
        CompositionFile(
            stat=config.predictor.stat,
            composition=self.composition,
            fusion=self.fusion,
            networks=self.networks,
            space=getattr(config.space, "name", ""),
            device=config.predictor.device,
            fitted_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        ).write(self.path)


def _check_calibration(config: CalibrateConfig) -> None:
    if config.networks < MIN_FIT_NETWORKS:
        raise OplatError(
            f"calibrate needs at least {MIN_FIT_NETWORKS} networks to fit a composition (leave-one-out), "
            f"got --networks {config.networks}; 8 is the default"
        )
    bad = [p for p in config.precisions if p not in ("fp32", "int8")]
    if bad or not config.precisions:
        raise OplatError(f"unknown precision {', '.join(bad) or '(none)'}; calibrate takes fp32, int8 or fp32,int8")


def _fit_precision(config: CalibrateConfig, precision: str, archs: list, fusion: dict, kept: Callable[[], str]):
    """(composition, measured networks) of one precision: its fusion checks (set in
    ``fusion`` and on the predictor), the networks measured end to end, the fit. A step that
    fails raises saying which, after ``kept()`` kept what the steps before made (and
    said where, appended to the message)."""
    from oplat.fusion import PAIRS, detect_fusions

    predictor, device, space = config.predictor, config.device, config.space
    step = f"{precision} fusion checks (A, B and A→B of {', '.join('+'.join(p) for p in PAIRS)})"
    try:
        fusion[precision] = detect_fusions(device, precision, h=space.in_h, w=space.in_w, policy=config.policy)
        predictor.fusion[precision] = fusion[precision]
        step = f"{precision} networks ({len(archs)} measured end to end)"
        measured, drift = _measure(archs, device, predictor, precision, config.policy, config.progress, f"calibrate {precision}")
        step = f"{precision} drift check"
        if drifted(drift):
            raise OplatError(
                f"the table's rows re-timed among the networks ran at {float(np.median(drift)):.2f}× their table p10 "
                f"(more than {DRIFT_PCT:.0f} % off): the machine no longer runs as in the table's window, and a fit "
                "would absorb that move; re-measure the table (`oplat measure --out NEW`), then calibrate it"
            )
        step = f"{precision} composition fit"
        covered = [m for m in measured if m[0].measured_share == 1.0]
        fit_on = covered if len(covered) >= 3 else measured  # prefer nets priced from the table alone
        comp = fit_composition([(p.features, s.of(predictor.stat)) for p, s, _, _ in fit_on])
    except Exception as exc:
        # Keep what the steps before measured: the fits of earlier precisions (and any
        # fusion verdicts) are written, and the message says which step failed.
        where = kept()
        if isinstance(exc, OplatError):
            raise OplatError(f"calibrate failed at the {step}: {exc}{where}") from None
        raise
    return comp, measured


def _fitted_networks(measured, stat: str) -> list[dict]:
    """The networks a fit was made on, as the composition file records them."""
    from oplat.arch import describe

    return [
        {
            "arch": describe(a),
            **p.features,
            "measured_share": p.measured_share,
            "measured_ms": s.of(stat),
            "median_ms": s.median_ms,
            "p10_ms": s.p10_ms,
        }
        for p, s, _, a in measured
    ]


def calibrate(config: CalibrateConfig | None = None, /, **options: Any) -> dict[str, Composition]:
    """Fit and store the composition model of ``config.predictor``'s table for
    ``config.precisions``.

    Takes a :class:`CalibrateConfig` (whose fields are documented there), or its fields as
    keywords (``calibrate(predictor=..., device=..., space=..., precisions=[...])``), or
    both (keywords override the config's)."""
    config = configured(CalibrateConfig, config, options)
    _check_calibration(config)
    check_table_device(config.predictor, config.device)
    archs = sample_networks(config.space, config.networks, config.seed)
    fits = _Fits.read(config.predictor)
    result: dict[str, Composition] = {}

    def kept() -> str:
        if not (result or fits.fusion):
            return ""
        fits.write(config)
        return f"; the results so far ({', '.join(result) or 'fusion checks only'}) are in {fits.path}"

    for precision in config.precisions:
        comp, measured = _fit_precision(config, precision, archs, fits.fusion, kept)
        result[precision] = fits.composition[precision] = comp
        fits.networks[precision] = _fitted_networks(measured, config.predictor.stat)
        fits.write(config)  # each precision's fit is kept as soon as it is made
    config.predictor.composition.update(result)
    return result

@dataclass(frozen=True)
class ValidationReport:
    """Predicted vs measured networks. ``refused``: networks the table would not price
    ({arch, reason}: a kernel too far from every measured row), never silently priced;
    ``off_grid``: the networks were sampled off the op set's grid (see :func:`off_grid_space`)."""

    precision: str
    results: list[NetworkResult]
    calibrated: bool
    stat: str = "median"
    refused: tuple = ()
    off_grid: bool = False
    #: p10 of table rows re-timed among the networks / their table p10 (one per row and
    #: batch; empty where none were): the machine's drift from the table's window.
    drift: tuple = ()

    @property
    def drifted(self) -> bool:
        """Whether the re-timed rows ran, at their median, more than DRIFT_PCT off the table."""
        return drifted(self.drift)

    @property
    def extrapolated(self) -> int:
        """Networks whose prediction used a neighbour estimate flagged as EXTRAPOLATED."""
        return sum(1 for r in self.results if r.extrapolated)

    @property
    def errors_pct(self) -> np.ndarray:
        return np.array([r.error_pct for r in self.results])

    def share_within(self, pct: float) -> float:
        return float(np.mean(np.abs(self.errors_pct) <= pct)) * 100.0

    @property
    def mape_pct(self) -> float:
        return float(np.mean(np.abs(self.errors_pct)))

    def worst(self, n: int = 5) -> list[NetworkResult]:
        return sorted(self.results, key=lambda r: -abs(r.error_pct))[:n]

    def kernel_errors(self) -> dict[str, tuple[float, float, float]]:
        """op -> (predicted ms, measured ms, error %) summed over all networks.

        The measured side is like-for-like with the prediction: each network's measured
        wall time (on the report's statistic) split by the profiled share of each kernel
        type in that network. Raw profile medians would be compared on another statistic
        (and profiling adds its own overhead), so a p10 prediction would look low.
        """
        sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for r in self.results:
            profiled = sum(m for _, m in r.by_kernel.values())
            for op, (p, m) in r.by_kernel.items():
                sums[op][0] += p
                sums[op][1] += r.measured_ms * m / profiled if profiled else 0.0
        return {op: (p, m, 100.0 * (p - m) / m if m else float("nan")) for op, (p, m) in sums.items()}

    @classmethod
    def from_dict(cls, data: dict) -> ValidationReport:
        """A report read back from its saved JSON (``as_dict``)."""
        names = set(NetworkResult.__dataclass_fields__)
        results = [NetworkResult(**{k: v for k, v in r.items() if k in names}) for r in data["results"]]
        return cls(data["precision"], results, calibrated=data["calibrated"], stat=data.get("stat", "median"),
                   refused=tuple(data.get("refused", ())), off_grid=bool(data.get("off_grid", False)),
                   drift=tuple(data.get("drift", ())))

    def as_dict(self) -> dict:
        return {
            "precision": self.precision,
            "calibrated": self.calibrated,
            "stat": self.stat,
            "off_grid": self.off_grid,
            "refused": list(self.refused),
            "drift": list(self.drift),
            "networks": len(self.results),
            "within_5_pct": self.share_within(5),
            "within_10_pct": self.share_within(10),
            "mape_pct": self.mape_pct,
            "results": [{**r.__dict__, "error_pct": r.error_pct} for r in self.results],
            "kernel_errors": self.kernel_errors(),
        }


@dataclass(frozen=True, kw_only=True)
class ValidateConfig:
    """One validation (``oplat validate``): which table, on which networks.

    Attributes:
        predictor: the table whose predictions are checked (``Predictor.from_table(path)``).
        device: where the networks are measured: the device and setup of the table.
        space: the search space the networks are sampled from (never the calibration
            networks: those are left out).
        precision: ``fp32`` or ``int8``.
        networks: how many networks are sampled.
        seed: seed of the sampled networks.
        policy: :class:`~oplat.timing.TimingPolicy` for the measurements (None: the default).
        progress: a progress bar on stderr.
        off_grid: sample them at an input size and widths the op set does not hold
            (:func:`off_grid_space`), so every conv is priced by the neighbour model.
    """

    predictor: Predictor
    device: Device
    space: Any
    precision: str
    networks: int = 40
    seed: int = 0
    policy: TimingPolicy | None = None
    progress: bool = True
    off_grid: bool = False


def validate(config: ValidateConfig | None = None, /, **options: Any) -> ValidationReport:
    """Measure random networks end to end and compare with the predictions.

    Takes a :class:`ValidateConfig` (whose fields are documented there), or its fields as
    keywords (``validate(predictor=..., device=..., space=..., precision="fp32")``), or both
    (keywords override the config's). Networks the table refuses to price are listed
    apart, never measured as if predicted."""
    from oplat.arch import describe

    config = configured(ValidateConfig, config, options)
    predictor, precision = config.predictor, config.precision
    check_table_device(predictor, config.device)
    space = off_grid_space(config.space) if config.off_grid else config.space
    archs = sample_networks(space, config.networks, config.seed)
    calibration = CompositionFile.read(compose_path(predictor.source))
    used = {n["arch"] for n in (calibration.networks.get(precision, []) if calibration else [])}
    archs = [a for a in archs if describe(a) not in used]  # never judge on the fitting set
    archs, refused = _predictable(archs, predictor, precision)
    measured, drift = _measure(archs, config.device, predictor, precision, config.policy, config.progress, f"validate {precision}")
    results = [
        NetworkResult(
            arch=describe(arch),
            precision=precision,
            predicted_ms=p.total_ms,
            measured_ms=s.of(predictor.stat),
            p10_ms=s.p10_ms,
            p90_ms=s.p90_ms,
            median_ms=s.median_ms,
            measured_share=p.measured_share,
            by_kernel=_by_kernel_type(p, prof),
            arch_spec=asdict(arch),
            features=p.features,
            extrapolated=any("EXTRAPOLATED" in k.basis for k in p.kernels),
        )
        for p, s, prof, arch in measured
    ]
    return ValidationReport(precision, results, calibrated=precision in predictor.composition, stat=predictor.stat,
                            refused=tuple(refused), off_grid=config.off_grid, drift=tuple(drift))

def off_grid_space(space):
    """``space`` moved off its op set's grid: widths between its choices (multiples of its
    channel alignment that it does not list) and an input of 3/4 of its size on each side
    (rounded to 8 pixels). Everything such a network runs is priced by neighbours."""

    align = space.channel_align
    between = tuple(c for c in range(min(space.channels) + align, max(space.channels), align) if c not in space.channels)
    if not between:
        raise OplatError(f"search space {space.name} has no widths between its choices to go off the grid with")
    h, w = (max(8, round(v * 0.75 / 8) * 8) for v in (space.in_h, space.in_w))
    return replace(space, name=f"{space.name}-offgrid", channels=between, in_h=h, in_w=w)
