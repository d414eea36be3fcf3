"""oplat.arch: ABPN counts, ONNX building, residual modes, QDQ INT8."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest

from oplat.backends.ort import exact_session
from oplat.arch import (
    ABPN,
    RESIDUALS,
    ArchSpec,
    Layer,
    arch_ops,
    calibration_images,
    convs,
    describe,
    macs,
    model_from_arch,
    optimized_op_counts,
    params,
    quantize_qdq,
)
from oplat.errors import OplatError

H, W = 24, 32
SMALL = ABPN.with_input(H, W)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = exact_session(model)
    return sess.run(None, {"x": x})[0]


def _psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


@pytest.fixture(scope="module")
def abpn_int8() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    fp32 = model_from_arch(SMALL)
    return fp32, quantize_qdq(fp32)


# ---------------------------------------------------------------------- counting
def test_abpn_params_and_macs() -> None:
    # 3·28·9+28 + 4·(28·28·9+28) + 28·27·9+27 + 27·27·9+27 = 42,539: the published 42.54 K.
    assert params(ABPN) == 42_539
    assert round(params(ABPN) / 1e3, 2) == 42.54
    assert macs(ABPN) == 360 * 640 * 9 * (3 * 28 + 4 * 28 * 28 + 28 * 27 + 27 * 27)
    assert round(macs(ABPN) / 1e9, 2) == 9.76


def test_folded_counts_include_carried_channels() -> None:
    folded = replace(ABPN, residual="folded")
    assert [c.c_out for c in convs(folded)] == [31, 31, 31, 31, 31, 30, 27]
    assert params(folded) > params(ABPN)
    assert params(replace(ABPN, residual="none")) == params(ABPN)


def test_describe() -> None:
    assert describe(ABPN) == "3→28, 28→28 ×4, 28→27, 27→27 linear; anchor; D2S×3; clip; 360×640"


def test_arch_ops() -> None:
    ops = arch_ops(ABPN, "int8")
    assert [o.op for o in ops] == ["concat"] + ["conv+relu"] * 6 + ["conv", "add", "depth_to_space", "clip"]
    assert all(o.precision == "int8" for o in ops)
    assert ops[0].arity == 9 and ops[0].c == 3
    assert ops[-1].output_shape == (1, 3, 1080, 1920) and (ops[-1].lo, ops[-1].hi) == (0.0, 1.0)
    assert sum(o.macs for o in ops) == macs(ABPN)
    folded = arch_ops(replace(ABPN, residual="folded"))
    assert {o.op for o in folded} == {"conv+relu", "conv", "depth_to_space", "clip"}
    assert [o.op for o in arch_ops(replace(ABPN, residual="none", clip=False))][-1] == "depth_to_space"


def test_invalid_specs() -> None:
    with pytest.raises(OplatError, match="3·scale² = 27"):
        ArchSpec(3, H, W, (Layer(28), Layer(12)))
    with pytest.raises(OplatError, match="scale"):
        ArchSpec(5, H, W, (Layer(75),))
    with pytest.raises(OplatError, match="residual"):
        replace(SMALL, residual="skip")
    with pytest.raises(OplatError, match="odd"):
        Layer(8, kernel=2)
    with pytest.raises(OplatError, match="act"):
        Layer(8, act="gelu")


# ---------------------------------------------------------------------- building
@pytest.mark.parametrize("residual", RESIDUALS)
@pytest.mark.parametrize("clip", [True, False])
def test_modes_build_check_and_run(residual: str, clip: bool) -> None:
    arch = replace(SMALL, residual=residual, clip=clip)
    model = model_from_arch(arch)
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    assert model.opset_import[0].version == 17 and model.ir_version == 9
    ops = {n.op_type for n in model.graph.node}
    assert ("Concat" in ops and "Add" in ops) == (residual == "anchor")
    assert ("Clip" in ops) == clip
    y = _run(model, calibration_images(H, W, 1, seed=3)[0])
    assert y.shape == (1, 3, 3 * H, 3 * W) and y.dtype == np.float32
    assert np.isfinite(y).all()
    if clip:
        assert y.min() >= 0.0 and y.max() <= 1.0


def test_anchor_is_nearest_upsampling() -> None:
    """With the convs' contribution removed, anchor + DCR depth-to-space is nearest ×s."""
    x = calibration_images(H, W, 1, seed=4)[0]
    model = model_from_arch(SMALL)
    for t in model.graph.initializer:
        if t.name.startswith("conv6."):
            t.CopyFrom(onnx.numpy_helper.from_array(np.zeros_like(onnx.numpy_helper.to_array(t)), t.name))
    want = np.repeat(np.repeat(x, 3, axis=2), 3, axis=3)
    np.testing.assert_allclose(_run(model, x), want, atol=1e-6)


@pytest.mark.parametrize(
    "arch",
    [
        SMALL,
        ArchSpec(2, H, W, (Layer(16, kernel=5), Layer(8, act="none"), Layer(12, act="none"))),
        ArchSpec(4, H, W, (Layer(48, kernel=1, act="none"),)),  # single conv: sees the input itself
    ],
    ids=["abpn", "x2-mixed", "x4-single"],
)
def test_folded_equals_anchor(arch: ArchSpec) -> None:
    anchor = model_from_arch(replace(arch, residual="anchor", clip=False), seed=7)
    folded = model_from_arch(replace(arch, residual="folded", clip=False), seed=7)
    assert not {"Concat", "Add"} & {n.op_type for n in folded.graph.node}
    for x in calibration_images(H, W, 3, seed=11):
        np.testing.assert_allclose(_run(folded, x), _run(anchor, x), rtol=0, atol=1e-5)


def test_weights_sane_and_deterministic() -> None:
    a, b = model_from_arch(SMALL), model_from_arch(SMALL)
    assert a.SerializeToString() == b.SerializeToString()
    assert model_from_arch(SMALL, seed=1).SerializeToString() != a.SerializeToString()
    x = calibration_images(H, W, 1, seed=5)[0]
    y = _run(model_from_arch(replace(SMALL, clip=False)), x)
    assert np.abs(y).max() < 4.0  # the He-init residual stays near the pixel range


def test_calibration_images() -> None:
    imgs = calibration_images(H, W, 4, seed=2)
    assert len(imgs) == 4
    for img in imgs:
        assert img.shape == (1, 3, H, W) and img.dtype == np.float32
        assert 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.02
    again = calibration_images(H, W, 4, seed=2)
    assert all(np.array_equal(p, q) for p, q in zip(imgs, again, strict=True))


# ---------------------------------------------------------------------- INT8
def test_qdq_checks_runs_and_is_close(abpn_int8: tuple[onnx.ModelProto, onnx.ModelProto]) -> None:
    fp32, int8 = abpn_int8
    onnx.checker.check_model(int8, full_check=True)
    ops = {n.op_type for n in int8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    for x in calibration_images(H, W, 2, seed=99):  # not the calibration images
        y, yq = _run(fp32, x), _run(int8, x)
        assert yq.shape == (1, 3, 3 * H, 3 * W)
        assert _psnr_db(yq, y) > 30.0


def test_qdq_fuses_to_qlinear(abpn_int8: tuple[onnx.ModelProto, onnx.ModelProto]) -> None:
    _, int8 = abpn_int8
    counts = optimized_op_counts(int8)
    assert counts.get("QLinearConv") == 7 and "Conv" not in counts
    assert counts.get("QLinearConcat") == 1 and counts.get("QLinearAdd") == 1
    # uint8 from the input's QuantizeLinear to the output's DequantizeLinear: the
    # depth-to-space runs on uint8 and the Clip is the output's saturation.
    assert counts["QuantizeLinear"] == 1 and counts["DequantizeLinear"] == 1
    assert "Clip" not in counts


def test_qdq_deterministic(abpn_int8: tuple[onnx.ModelProto, onnx.ModelProto]) -> None:
    fp32, int8 = abpn_int8
    assert quantize_qdq(fp32).SerializeToString() == int8.SerializeToString()


def test_qdq_user_calibration() -> None:
    fp32 = model_from_arch(replace(SMALL, residual="none"))
    imgs = [img[0] for img in calibration_images(H, W, 2, seed=8)]  # (3, H, W) accepted
    int8 = quantize_qdq(fp32, calibration=imgs)
    assert optimized_op_counts(int8).get("QLinearConv") == 7
    with pytest.raises(OplatError, match=r"shape \(3, 5, 5\)"):
        quantize_qdq(fp32, calibration=[np.zeros((3, 5, 5), np.float32)])
    with pytest.raises(OplatError, match=r"\[0, 1\]"):
        quantize_qdq(fp32, calibration=[np.full((1, 3, H, W), 255.0, np.float32)])
    with pytest.raises(OplatError, match="empty"):
        quantize_qdq(fp32, calibration=[])
