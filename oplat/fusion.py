"""Fusion rules, found by measurement: time A, B and A→B on the device.

Where the runtime has a per-node profiler the verdict is structural: B is fused when the
profile of A→B shows no kernel of B's kind (ONNX Runtime renames the conv that absorbed
a ReLU; OpenVINO folds ReLU and Add into the convolution as post-ops), and then none of
B's lone-op time remains (``b_share`` 0; 1 when B still runs). Timing alone decided this
before and, on a noisy host, called a ReLU that ORT provably fuses "unfused" with
b_share 2.3. Without a profiler (device tools, remote agents) the verdict falls back to
the timings: ``b_share`` = (t(A→B) − t(A)) / t(B) on the p10 wall times, fused below
:data:`FUSED_BELOW`. The predictor multiplies B's table time by ``b_share``.
"""

from __future__ import annotations


import onnx
from onnx import compose

from oplat.build import model_from_op
from oplat.devices import Device
from oplat.measure import time_network
from oplat.records import FUSED_BELOW, FusionVerdict
from oplat.spec import OpSpec
from oplat.timing import TimingPolicy

__all__ = ["FUSED_BELOW", "PAIRS", "FusionVerdict", "detect_fusions", "model_from_pair"]

#: Pairs worth knowing for plain SR networks: (A op, B op).
PAIRS = (("conv", "relu"), ("conv", "add"))

#: Profiled op types that show B still running as its own kernel (ORT, OpenVINO).
_B_KERNELS = {"relu": {"Relu", "QLinearRelu", "Eltwise"}, "add": {"Add", "QLinearAdd", "Eltwise", "Sum"}}


def _pair_specs(a_op: str, b_op: str, c: int, h: int, w: int, precision: str) -> tuple[OpSpec, OpSpec]:
    a = OpSpec(a_op, c, h, w, c_out=c, kernel=3, precision=precision)
    b = OpSpec(b_op, c, h, w, precision=precision)
    return a, b


def _initializer(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    for init in model.graph.initializer:
        if init.name == name:
            return init
    raise KeyError(name)


def model_from_pair(a: OpSpec, b: OpSpec) -> onnx.ModelProto:
    """A→B: A's output feeds B's first input; B's other inputs stay graph inputs.

    INT8 (QDQ) pairs carry one set of quantization parameters across the seam: B's
    input scale and zero point become A's output ones, as in any quantized network
    (ONNX Runtime would run mismatched ones, a converter to TFLite rightly refuses them).
    """
    ma, mb = model_from_op(a), model_from_op(b)
    for m in (ma, mb):
        del m.metadata_props[:]  # each carries its own spec key; the pair is neither
    if a.precision == "int8" and b.precision == "int8":
        for src, dst in (("y_scale", "x_scale"), ("y_zero", "x_zero")):
            tensor = _initializer(mb, dst)
            tensor.CopyFrom(_initializer(ma, src))
            tensor.name = dst
    merged = compose.merge_models(ma, mb, io_map=[("y", "x0")], prefix1="a_", prefix2="b_")
    onnx.checker.check_model(merged)
    return merged


def _timed(model, device: Device, policy: TimingPolicy):
    """(p10 ms of the model's own kernels, the profile or None). With a profiler the
    p10 wall time is scaled by the kernels' share of the profiled run (lone-op reorders
    would otherwise swamp the comparison); without one it is the p10 wall time."""
    timed = time_network(model, device, policy, profile=True)
    p10, profile = timed.stats.of("p10"), timed.profile
    if profile is None or profile.compute_ms <= 0:
        return p10, None
    total = profile.compute_ms + profile.layout_ms
    return p10 * profile.compute_ms / total, profile


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
        t_a, _ = _timed(model_from_op(a), device, policy)
        t_b, _ = _timed(model_from_op(b), device, policy)
        t_ab, profile = _timed(model_from_pair(a, b), device, policy)
        b_kernels = None
        if profile is not None:
            b_kernels = tuple(
                n["name"] for n in profile.nodes
                if n["name"].startswith("b_") and not n["layout"] and n["op_type"] in _B_KERNELS[b_op]
            )
        key = f"{a_op}+{b_op}"
        out[key] = FusionVerdict(key, precision, t_a, t_b, t_ab, f"{channels}×{h}×{w}", b_kernels)
    return out
