"""Tests for oplat.build: every op × precision builds, checks, runs and computes right.

Shapes are small (c=8, 16×24 pixels) so the whole file runs in a few seconds on CPU.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from onnx import numpy_helper

from oplat.build import IR_VERSION, OPSET, SPEC_METADATA_KEY, inputs_for, model_from_op
from oplat.spec import OPS, PRECISIONS, OpSpec

C, H, W = 8, 16, 24

# One spec per op (both resize modes), all at C×H×W input.
BASE_SPECS = [
    OpSpec(op="conv", c=C, h=H, w=W, c_out=12, kernel=3),
    OpSpec(op="conv+relu", c=C, h=H, w=W, c_out=C, kernel=3),
    OpSpec(op="add", c=C, h=H, w=W),
    OpSpec(op="concat", c=C, h=H, w=W, arity=3),
    OpSpec(op="resize", c=C, h=H, w=W, mode="nearest", scale=2),
    OpSpec(op="resize", c=C, h=H, w=W, mode="bilinear", scale=2),
    OpSpec(op="relu", c=C, h=H, w=W),
    OpSpec(op="clip", c=C, h=H, w=W, lo=0.2, hi=0.7),
    OpSpec(op="depth_to_space", c=C, h=H, w=W, block=2),
]
SPECS = [dataclasses.replace(s, precision=p) for s in BASE_SPECS for p in PRECISIONS]
INT8_SPECS = [s for s in SPECS if s.precision == "int8"]


def _id(spec: OpSpec) -> str:
    # ASCII ids so `pytest -k` works from any shell.
    return spec.label().replace(" ", "_").replace("→", "-").replace("×", "x")


def _session(model: onnx.ModelProto, **options: object) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3  # the NCHWc "hardware specific" warning on save is expected
    so.add_session_config_entry("session.x64quantprecision", "1")  # exact int8 on non-VNNI x86
    for name, value in options.items():
        setattr(so, name, value)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return _session(model).run(["y"], feeds)[0]


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


# --------------------------------------------------------------------------- numpy references
def _ref_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, relu: bool) -> np.ndarray:
    """"Same" conv, stride 1: x (N,C,H,W), w (O,C,k,k), b (O,) → (N,O,H,W), float64."""
    p = w.shape[-1] // 2
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p, p), (p, p)))
    windows = sliding_window_view(xp, w.shape[-2:], axis=(2, 3))  # N,C,H,W,k,k
    y = np.einsum("nchwij,ocij->nohw", windows, w.astype(np.float64)) + b.astype(np.float64)[None, :, None, None]
    return np.maximum(y, 0) if relu else y


def _bilinear_matrix(n_in: int, s: int) -> np.ndarray:
    """(n_in*s, n_in) interpolation weights for half_pixel linear resize with edge clamping."""
    out = np.arange(n_in * s)
    src = np.clip((out + 0.5) / s - 0.5, 0, n_in - 1)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = src - i0
    m = np.zeros((n_in * s, n_in))
    m[out, i0] += 1 - frac
    m[out, i1] += frac
    return m


def _reference(spec: OpSpec, xs: list[np.ndarray], params: dict[str, np.ndarray]) -> np.ndarray:
    """The op in float64 numpy; ``params`` holds conv weights ``W`` and bias ``B``."""
    x = xs[0].astype(np.float64)
    if spec.op in ("conv", "conv+relu"):
        return _ref_conv(x, params["W"], params["B"], relu=spec.op == "conv+relu")
    if spec.op == "add":
        return x + xs[1]
    if spec.op == "concat":
        return np.concatenate(xs, axis=1).astype(np.float64)
    if spec.op == "relu":
        return np.maximum(x, 0)
    if spec.op == "clip":
        return np.clip(x, spec.lo, spec.hi)
    if spec.op == "resize":
        s = spec.scale
        if spec.mode == "nearest":
            return x.repeat(s, axis=2).repeat(s, axis=3)
        return np.einsum("oh,nchw,pw->ncop", _bilinear_matrix(spec.h, s), x, _bilinear_matrix(spec.w, s))
    if spec.op == "depth_to_space":
        b = spec.block
        n, c, h, w = x.shape
        # DCR: channel index = (by * b + bx) * (c / b²) + c_out
        return x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2).reshape(n, c // (b * b), h * b, w * b)
    raise AssertionError(f"no reference for {spec.op}")


def test_specs_cover_every_op() -> None:
    assert {s.op for s in BASE_SPECS} == set(OPS)


# --------------------------------------------------------------------------- structure
@pytest.mark.parametrize("spec", SPECS, ids=_id)
def test_model_checks_infers_and_runs(spec: OpSpec) -> None:
    model = model_from_op(spec)
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    out_type = inferred.graph.output[0].type.tensor_type
    assert tuple(d.dim_value for d in out_type.shape.dim) == spec.output_shape

    assert model.ir_version == IR_VERSION
    assert [(o.domain, o.version) for o in model.opset_import] == [("", OPSET)]
    meta = {p.key: p.value for p in model.metadata_props}
    assert OpSpec.from_dict(json.loads(meta[SPEC_METADATA_KEY])) == spec
    assert [i.name for i in model.graph.input] == [f"x{i}" for i in range(len(spec.input_shapes))]
    assert [o.name for o in model.graph.output] == ["y"]

    feeds = inputs_for(model)
    want = {"int8": np.uint8, "fp16": np.float16}.get(spec.precision, np.float32)
    for name, shape in zip(feeds, spec.input_shapes):
        assert feeds[name].shape == shape and feeds[name].dtype == want
    y = _run(model, feeds)
    assert y.shape == spec.output_shape
    assert y.dtype == want


# --------------------------------------------------------------------------- numerics
@pytest.mark.parametrize("spec", [s for s in SPECS if s.precision == "fp32"], ids=_id)
def test_fp32_matches_numpy(spec: OpSpec) -> None:
    model = model_from_op(spec)
    # Shift to [-1, 1) so relu and clip see values on both sides of their thresholds.
    feeds = {k: v * 2 - 1 for k, v in inputs_for(model, seed=3).items()}
    got = _run(model, feeds)
    want = _reference(spec, list(feeds.values()), _inits(model))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spec", INT8_SPECS, ids=_id)
def test_int8_matches_float_within_quant_steps(spec: OpSpec) -> None:
    """Dequantized INT8 output vs the float op on the same dequantized input (and weights)."""
    model = model_from_op(spec)
    p = _inits(model)
    x_scale, x_zero = float(p["x_scale"]), int(p["x_zero"])
    y_scale, y_zero = float(p["y_scale"]), int(p["y_zero"])
    feeds = inputs_for(model, seed=5)
    xs = [(v.astype(np.float64) - x_zero) * x_scale for v in feeds.values()]
    params = {}
    if "W_q" in p:
        assert p["W_q"].dtype == np.int8 and p["B_q"].dtype == np.int32
        assert not p["W_zero"].any() and not p["B_zero"].any()
        np.testing.assert_allclose(p["B_scale"], x_scale * p["W_scale"], rtol=1e-6)
        params["W"] = p["W_q"] * p["W_scale"].astype(np.float64)[:, None, None, None]
        params["B"] = p["B_q"] * p["B_scale"].astype(np.float64)

    y = _run(model, feeds)
    got = (y.astype(np.float64) - y_zero) * y_scale
    want = _reference(spec, xs, params)
    # Saturating at the ends of the uint8 range is part of the contract (clip, relu).
    want = np.clip(want, (0 - y_zero) * y_scale, (255 - y_zero) * y_scale)
    steps = np.abs(got - want) / y_scale
    assert steps.max() <= 1.0, f"max error {steps.max():.2f} quantization steps"
    if spec.op == "conv":
        # The analytic output range must leave headroom: (almost) nothing pinned at 0/255.
        assert np.mean((y == 0) | (y == 255)) < 0.01


def test_int8_conv_tracks_fp32_weights() -> None:
    """Per-channel int8 weights stay close to the float weights they quantize."""
    spec = OpSpec(op="conv", c=C, h=H, w=W, c_out=C, kernel=3, precision="int8")
    p = _inits(model_from_op(spec))
    w = p["W_q"] * p["W_scale"][:, None, None, None]
    # Symmetric per-channel: each channel's peak hits ±127 exactly.
    assert (np.abs(p["W_q"]).reshape(C, -1).max(axis=1) == 127).all()
    assert np.abs(w).max() > 0 and p["W_scale"].dtype == np.float32


# --------------------------------------------------------------------------- determinism
def test_same_spec_gives_identical_bytes() -> None:
    for spec in SPECS:
        assert model_from_op(spec).SerializeToString() == model_from_op(spec).SerializeToString()


def test_different_specs_give_different_keys_and_weights() -> None:
    a = OpSpec(op="conv", c=C, h=H, w=W, c_out=C, kernel=3)
    b = dataclasses.replace(a, h=H + 1)  # same weight shape, different key
    assert a.key != b.key
    wa, wb = _inits(model_from_op(a))["W"], _inits(model_from_op(b))["W"]
    assert wa.shape == wb.shape and not np.array_equal(wa, wb)
    assert a.key != dataclasses.replace(a, precision="int8").key


def test_inputs_for_spec_and_model_agree() -> None:
    for spec in (BASE_SPECS[3], dataclasses.replace(BASE_SPECS[3], precision="int8")):
        from_spec = inputs_for(spec, seed=7)
        from_model = inputs_for(model_from_op(spec), seed=7)
        assert list(from_spec) == ["x0", "x1", "x2"]
        for k in from_spec:
            np.testing.assert_array_equal(from_spec[k], from_model[k])
        assert not np.array_equal(from_spec["x0"], from_spec["x1"])
        assert not np.array_equal(from_spec["x0"], inputs_for(spec, seed=8)["x0"])
    fp = inputs_for(BASE_SPECS[0])["x0"]
    assert fp.dtype == np.float32 and fp.min() >= 0 and fp.max() < 1


# --------------------------------------------------------------------------- runtime fusion
def _optimized_ops(model: onnx.ModelProto, tmp_path) -> list[str]:
    path = tmp_path / "optimized.onnx"
    _session(
        model,
        graph_optimization_level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        optimized_model_filepath=str(path),
    )
    return [n.op_type for n in onnx.load(str(path)).graph.node]


@pytest.mark.parametrize("op", ["conv", "conv+relu"])
def test_ort_fuses_int8_conv_into_qlinearconv(op: str, tmp_path) -> None:
    spec = OpSpec(op=op, c=C, h=H, w=W, c_out=16, kernel=3, precision="int8")
    ops = _optimized_ops(model_from_op(spec), tmp_path)
    # On x86 ORT rewrites it to the NHWC com.microsoft QLinearConv between Transposes.
    assert "QLinearConv" in ops, ops
    assert not {"Conv", "FusedConv", "Relu", "DequantizeLinear", "QuantizeLinear"} & set(ops), ops


@pytest.mark.parametrize(("spec", "kernel"), [(INT8_SPECS[2], "QLinearAdd"), (INT8_SPECS[3], "QLinearConcat")], ids=["add", "concat"])
def test_ort_fuses_int8_elementwise(spec: OpSpec, kernel: str, tmp_path) -> None:
    ops = _optimized_ops(model_from_op(spec), tmp_path)
    assert ops == [kernel]


# --------------------------------------------------------------------------- OpenVINO
@pytest.mark.parametrize("precision", PRECISIONS)
def test_openvino_reads_and_runs(precision: str) -> None:
    ov = pytest.importorskip("openvino")
    spec = OpSpec(op="conv+relu", c=C, h=H, w=W, c_out=C, kernel=3, precision=precision)
    model = model_from_op(spec)
    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(model.SerializeToString(), b""), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    feeds = inputs_for(model)
    got = compiled(feeds)[compiled.output(0)]
    assert got.shape == spec.output_shape
    want = _run(model, feeds)
    assert got.dtype == want.dtype
    if precision == "fp32":
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    elif precision == "fp16":  # half precision: a few ulps apart between runtimes
        np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=1e-2, atol=1e-2)
    else:
        # Different integer kernels round differently; stay within a quantization step.
        steps = np.abs(got.astype(int) - want.astype(int))
        from oplat.fingerprint import cpu_isa

        if "vnni" in cpu_isa():
            assert steps.max() <= 1
        else:
            # Without VNNI, OpenVINO's u8×s8 kernels add product pairs in 16 bits and
            # saturate (ORT here runs exact, see exact_session): most outputs still agree.
            assert np.mean(steps <= 1) >= 0.9 and np.median(steps) <= 1
        conv_precisions = {
            op.get_rt_info()["runtimePrecision"].astype(str)
            for op in compiled.get_runtime_model().get_ordered_ops()
            if op.get_rt_info()["layerType"].astype(str) == "Convolution"
        }
        assert conv_precisions <= {"u8", "i8"}, conv_precisions


def test_an_nhwc_spec_builds_the_op_between_transposes_ort_cancels():
    """``layout = "nhwc"``: the NCHW op's model taking and returning NHWC tensors; ORT
    pushes the Transposes through a layout-agnostic op and cancels them, and the result is
    the NCHW op's, transposed. The NCHW key is what it always was."""

    from oplat.backends.ort import runs_without_transposes

    nchw, nhwc = OpSpec("add", 8, 6, 10, precision="int8"), OpSpec("add", 8, 6, 10, precision="int8", layout="nhwc")
    assert '"layout":"nchw"' in nchw.key and nhwc.key != nchw.key and nhwc.label().endswith("int8 nhwc")
    a, b = model_from_op(nchw), model_from_op(nhwc)
    onnx.checker.check_model(b, full_check=True)
    assert [d.dim_value for d in b.graph.input[0].type.tensor_type.shape.dim] == [1, 6, 10, 8]
    assert runs_without_transposes(b) and runs_without_transposes(a)
    feeds = inputs_for(a)
    run = lambda m, f: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, f)[0]  # noqa: E731
    wrapped = {i.name: np.ascontiguousarray(feeds[i.name[:-5]].transpose(0, 2, 3, 1)) for i in b.graph.input}
    np.testing.assert_array_equal(run(b, wrapped), run(a, feeds).transpose(0, 2, 3, 1))
