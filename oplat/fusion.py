"""Fusion rules, found by measurement: time A, B and A→B on the device.

If the pair costs about as much as A alone, the device fuses B into A (ONNX Runtime folds
an Add into the preceding NCHWc conv's output, for example) and a network's B should
not be priced as a lone op. The verdict keeps the numbers: ``b_share`` is
(t(A→B) − t(A)) / t(B), the share of B's lone-op time that remains when it follows A
(≈1: not fused, ≈0: fused away). The predictor multiplies B's table time by it.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import compose

from oplat.build import model_from_op
from oplat.devices import Device
from oplat.measure import time_network
from oplat.spec import OpSpec
from oplat.timing import TimingPolicy

__all__ = ["PAIRS", "FusionVerdict", "detect_fusions", "model_from_pair"]

#: Pairs worth knowing for plain SR networks: (A op, B op).
PAIRS = (("conv", "relu"), ("conv", "add"))

#: Below this remaining share, B counts as fused into A.
FUSED_BELOW = 0.5


@dataclass(frozen=True)
class FusionVerdict:
    pair: str  # "conv+add"
    precision: str
    a_ms: float
    b_ms: float
    ab_ms: float
    shape: str

    @property
    def b_share(self) -> float:
        return max(0.0, (self.ab_ms - self.a_ms) / self.b_ms) if self.b_ms > 0 else 1.0

    @property
    def fused(self) -> bool:
        return self.b_share < FUSED_BELOW

    def as_dict(self) -> dict:
        return {**self.__dict__, "b_share": round(self.b_share, 4), "fused": self.fused}


def _pair_specs(a_op: str, b_op: str, c: int, h: int, w: int, precision: str) -> tuple[OpSpec, OpSpec]:
    a = OpSpec(a_op, c, h, w, c_out=c, kernel=3, precision=precision)
    b = OpSpec(b_op, c, h, w, precision=precision)
    return a, b


def model_from_pair(a: OpSpec, b: OpSpec) -> onnx.ModelProto:
    """A→B: A's output feeds B's first input; B's other inputs stay graph inputs."""
    ma, mb = model_from_op(a), model_from_op(b)
    for m in (ma, mb):
        del m.metadata_props[:]  # each carries its own spec key; the pair is neither
    merged = compose.merge_models(ma, mb, io_map=[("y", "x0")], prefix1="a_", prefix2="b_")
    onnx.checker.check_model(merged)
    return merged


def _compute_ms(model, device: Device, policy: TimingPolicy) -> float:
    """The model's own kernels (per-node profile, reorders left out) or, without a
    profiler, its wall time: lone-op reorders would otherwise swamp the comparison."""
    stats, profile = time_network(model, device, policy, profile=True)
    return profile.compute_ms if profile is not None and profile.compute_ms > 0 else stats["median_ms"]


def detect_fusions(
    device: Device,
    precision: str,
    *,
    channels: int = 8,
    h: int = 180,
    w: int = 320,
    policy: TimingPolicy | None = None,
) -> dict[str, FusionVerdict]:
    """Measure every pair of :data:`PAIRS` at one representative shape."""
    policy = policy or TimingPolicy()
    out = {}
    for a_op, b_op in PAIRS:
        a, b = _pair_specs(a_op, b_op, channels, h, w, precision)
        t_a = _compute_ms(model_from_op(a), device, policy)
        t_b = _compute_ms(model_from_op(b), device, policy)
        t_ab = _compute_ms(model_from_pair(a, b), device, policy)
        key = f"{a_op}+{b_op}"
        out[key] = FusionVerdict(key, precision, t_a, t_b, t_ab, f"{channels}×{h}×{w}")
    return out
