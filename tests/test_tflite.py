"""ONNX → TFLite conversion and the litert device (skipped where LiteRT is not installed).

Every converted model runs in LiteRT (XNNPACK) and is compared with ONNX Runtime on the
same inputs: FP32 to float rounding, INT8 to within a couple of quantization steps.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("ai_edge_litert")

from ai_edge_litert import schema_py_generated as fb  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from oplat.arch import ArchSpec, Layer, calibration_images, model_from_arch, quantize_qdq  # noqa: E402
from oplat.backends import litert  # noqa: E402
from oplat.backends.ort import exact_session  # noqa: E402
from oplat.build import inputs_for, model_from_op  # noqa: E402
from oplat.errors import OplatError  # noqa: E402
from oplat.spec import OPS, OpSpec  # noqa: E402
from oplat.tflite import onnx_like_output, tflite_feeds, tflite_from_onnx, write_tflite  # noqa: E402

_OP_NAMES = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
_INT8, _INT32, _FLOAT32 = fb.TensorType.INT8, fb.TensorType.INT32, fb.TensorType.FLOAT32


# ---------------------------------------------------------------------- helpers
def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    sess = exact_session(model)
    return sess.run(None, feeds)[0]


def _litert(data: bytes, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """(raw first output, NHWC; op names in the interpreter, DELEGATE included)."""
    it = Interpreter(model_content=data, num_threads=1)
    it.allocate_tensors()
    tfl = tflite_feeds(feeds)
    for d in it.get_input_details():
        it.set_tensor(d["index"], tfl[d["name"]])
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]), [o["op_name"] for o in it._get_ops_details()]


def _parse(data: bytes):
    """(ModelT, [(op name, [input TensorT], [output TensorT])])."""
    m = fb.ModelT.InitFromPackedBuf(data, 0)
    g = m.subgraphs[0]
    ops = [
        (
            _OP_NAMES[m.operatorCodes[op.opcodeIndex].builtinCode],
            [g.tensors[i] for i in op.inputs],
            [g.tensors[i] for i in op.outputs],
            op,
        )
        for op in g.operators
    ]
    return m, ops


def _spec(op: str, precision: str, **kw) -> OpSpec:
    base = {
        "conv": dict(c=8, h=12, w=16, c_out=8, kernel=3),
        "conv+relu": dict(c=8, h=12, w=16, c_out=16, kernel=5),
        "add": dict(c=8, h=12, w=16),
        "concat": dict(c=3, h=12, w=16, arity=9),
        "resize": dict(c=8, h=12, w=16, mode="bilinear", scale=2),
        "relu": dict(c=8, h=12, w=16),
        "clip": dict(c=8, h=12, w=16, lo=0.0, hi=1.0),
        "depth_to_space": dict(c=27, h=12, w=16, block=3),
    }[op]
    base.update(kw)
    return OpSpec(op, precision=precision, **base)


_CASES = [(op, {}) for op in OPS] + [
    ("conv", dict(kernel=1, c_out=5)),  # pads 0: VALID
    ("resize", dict(mode="bilinear", scale=3)),
    ("resize", dict(mode="nearest", scale=2)),
    ("resize", dict(mode="nearest", scale=3)),
    ("clip", dict(lo=0.2, hi=0.7)),  # MAXIMUM + MINIMUM
    ("clip", dict(lo=-1.0, hi=1.0)),
    ("clip", dict(lo=0.0, hi=6.0)),
]


def _case_id(case) -> str:
    op, kw = case
    return op + "".join(f"-{k}{v}" for k, v in kw.items())


# ---------------------------------------------------------------------- one-op models
@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("case", _CASES, ids=_case_id)
def test_op_matches_onnxruntime(case, precision):
    op, kw = case
    spec = _spec(op, precision, **kw)
    model = model_from_op(spec)
    feeds = inputs_for(model)
    ref = _ort(model, feeds)
    raw, _ = _litert(tflite_from_onnx(model), feeds)
    n, c, h, w = spec.output_shape
    assert raw.shape == (n, h, w, c)  # NHWC
    out = onnx_like_output(raw)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    if precision == "fp32":
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5 * max(1.0, float(np.ptp(ref))))
    else:
        assert raw.dtype == np.int8  # uint8 ONNX I/O → int8 .tflite I/O, no boundary ops
        steps = np.abs(out.astype(np.int32) - ref.astype(np.int32))
        assert steps.max() <= 2, f"{spec.label()}: {steps.max()} quantization steps off"


def test_int8_conv_is_full_integer_per_channel():
    spec = _spec("conv+relu", "int8")
    model = model_from_op(spec)
    m, ops = _parse(tflite_from_onnx(model))
    assert [name for name, *_ in ops] == ["CONV_2D"]
    _, (x, w, b), (y,), op = ops[0]
    assert op.builtinOptions.fusedActivationFunction == fb.ActivationFunctionType.RELU
    assert (x.type, w.type, b.type, y.type) == (_INT8, _INT8, _INT32, _INT8)
    assert list(w.shape) == [spec.c_out, spec.kernel, spec.kernel, spec.c]  # OHWI
    assert w.quantization.quantizedDimension == 0 and len(w.quantization.scale) == spec.c_out
    assert set(np.asarray(w.quantization.zeroPoint).tolist()) == {0}
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    # uint8 zero point z ↔ int8 zero point z − 128, same scale.
    assert list(x.quantization.zeroPoint) == [int(inits["x_zero"]) - 128]
    np.testing.assert_allclose(x.quantization.scale, [inits["x_scale"]], rtol=1e-7)
    np.testing.assert_allclose(b.quantization.scale, np.float32(inits["x_scale"]) * inits["W_scale"], rtol=1e-6)
    assert m.version == 3


def test_fp32_conv_relu_fuses_and_file_is_tfl3(tmp_path):
    model = model_from_op(_spec("conv+relu", "fp32"))
    data = tflite_from_onnx(model)
    assert data[4:8] == b"TFL3"
    assert data == tflite_from_onnx(model)  # deterministic
    _, ops = _parse(data)
    assert [name for name, *_ in ops] == ["CONV_2D"]
    assert ops[0][3].builtinOptions.fusedActivationFunction == fb.ActivationFunctionType.RELU
    path = write_tflite(model, tmp_path / "m.tflite")
    assert (tmp_path / "m.tflite").read_bytes() == data and str(path).endswith("m.tflite")


def test_constant_buffers_are_16_byte_aligned():
    data = tflite_from_onnx(model_from_op(_spec("conv", "fp32", c_out=7)))
    base = np.frombuffer(data, np.uint8).ctypes.data
    model = fb.Model.GetRootAs(data, 0)
    starts = [
        model.Buffers(i).DataAsNumpy().ctypes.data - base
        for i in range(model.BuffersLength())
        if model.Buffers(i).DataLength()
    ]
    assert len(starts) == 2 and all(s % 16 == 0 for s in starts)


@pytest.mark.parametrize(
    "lo, hi, ops",
    [(0.0, 1.0, ["RELU_0_TO_1"]), (-1.0, 1.0, ["RELU_N1_TO_1"]), (0.0, 6.0, ["RELU6"]),
     (0.2, 0.7, ["MAXIMUM", "MINIMUM"])],
)
def test_clip_mapping(lo, hi, ops):
    _, parsed = _parse(tflite_from_onnx(model_from_op(_spec("clip", "fp32", lo=lo, hi=hi))))
    assert [name for name, *_ in parsed] == ops


def test_resize_and_depth_to_space_options():
    _, ops = _parse(tflite_from_onnx(model_from_op(_spec("resize", "fp32", mode="bilinear", scale=3))))
    (name, (_, size), _, op), = ops
    assert name == "RESIZE_BILINEAR" and op.builtinOptions.halfPixelCenters and not op.builtinOptions.alignCorners
    _, ops = _parse(tflite_from_onnx(model_from_op(_spec("resize", "fp32", mode="nearest", scale=3))))
    (name, _, _, op), = ops
    assert name == "RESIZE_NEAREST_NEIGHBOR" and not op.builtinOptions.halfPixelCenters
    _, ops = _parse(tflite_from_onnx(model_from_op(_spec("depth_to_space", "int8"))))
    (name, _, _, op), = ops
    assert name == "DEPTH_TO_SPACE" and op.builtinOptions.blockSize == 3


# ---------------------------------------------------------------------- whole networks
_ARCH_LAYERS = (Layer(8), Layer(8, kernel=1), Layer(27, act="none"))


@pytest.fixture(scope="module", params=["anchor", "none", "folded"])
def network(request):
    arch = ArchSpec(scale=3, in_h=12, in_w=16, layers=_ARCH_LAYERS, residual=request.param)
    fp32 = model_from_arch(arch)
    return arch, fp32, quantize_qdq(fp32)


def test_network_fp32_matches_onnxruntime(network):
    arch, fp32, _ = network
    x = {"x": calibration_images(arch.in_h, arch.in_w, 1, seed=7)[0]}
    raw, ops = _litert(tflite_from_onnx(fp32), x)
    assert raw.shape == (1, arch.out_h, arch.out_w, 3) and raw.dtype == np.float32
    assert ops.count("CONV_2D") == len(arch.layers) and "RELU" not in ops  # ReLUs fused
    assert "DELEGATE" in ops  # XNNPACK took (part of) the graph
    np.testing.assert_allclose(onnx_like_output(raw), _ort(fp32, x), rtol=0, atol=1e-5)


def test_network_int8_matches_onnxruntime(network):
    arch, _, qdq = network
    x = {"x": calibration_images(arch.in_h, arch.in_w, 1, seed=7)[0]}
    data = tflite_from_onnx(qdq)
    raw, _ = _litert(data, x)
    assert raw.shape == (1, arch.out_h, arch.out_w, 3) and raw.dtype == np.float32  # float I/O kept
    ref = _ort(qdq, x)
    # The output is pinned to [0, 1] in uint8: one step is 1/255.
    steps = np.abs(onnx_like_output(raw) - ref) * 255.0
    assert np.mean(steps <= 2.01) >= 0.99 and steps.max() <= 4.01

    m, ops = _parse(data)
    names = [name for name, *_ in ops]
    assert names[0] == "QUANTIZE" and names[-1] == "DEQUANTIZE"
    assert m.subgraphs[0].tensors[m.subgraphs[0].inputs[0]].type == _FLOAT32
    convs = [(ins, outs) for name, ins, outs, _ in ops if name == "CONV_2D"]
    assert len(convs) == len(arch.layers)
    for (x_t, w_t, b_t), (y_t,) in convs:
        assert (x_t.type, w_t.type, b_t.type, y_t.type) == (_INT8, _INT8, _INT32, _INT8)
        assert len(w_t.quantization.scale) == w_t.shape[0]
    inner = [t for name, ins, outs, _ in ops[1:-1] for t in ins + outs if name != "CONV_2D"]
    assert all(t.type == _INT8 for t in inner)  # all int8 between the boundaries


def _qdq_model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()]
    return _model(nodes, inputs, outputs, inits)


def test_int8_concat_requantizes_inputs_at_other_scales():
    """TFLite's int8 CONCATENATION copies bytes, so inputs at another scale get a QUANTIZE."""
    dq = helper.make_node
    model = _qdq_model(
        [
            dq("DequantizeLinear", ["a", "sa", "za"], ["a_f"]),
            dq("DequantizeLinear", ["b", "sb", "zb"], ["b_f"]),
            dq("Concat", ["a_f", "b_f"], ["c_f"], axis=1),
            dq("QuantizeLinear", ["c_f", "sc", "zc"], ["y"]),
        ],
        [_vi("a", [1, 4, 6, 5], TensorProto.UINT8), _vi("b", [1, 2, 6, 5], TensorProto.UINT8)],
        [_vi("y", [1, 6, 6, 5], TensorProto.UINT8)],
        {"sa": np.float32(1 / 255), "za": np.uint8(0), "sb": np.float32(2 / 255), "zb": np.uint8(128),
         "sc": np.float32(3 / 255), "zc": np.uint8(170)},
    )
    feeds = inputs_for(model)
    data = tflite_from_onnx(model)
    _, ops = _parse(data)
    assert [name for name, *_ in ops] == ["QUANTIZE", "QUANTIZE", "CONCATENATION"]
    raw, _ = _litert(data, feeds)
    steps = np.abs(onnx_like_output(raw).astype(np.int32) - _ort(model, feeds).astype(np.int32))
    assert steps.max() <= 1


def test_qdq_op_left_in_float_stays_float():
    """An op whose output is not quantized runs in float after a DEQUANTIZE, as in ONNX."""
    model = _qdq_model(
        [
            helper.make_node("DequantizeLinear", ["x", "s", "z"], ["x_f"]),
            helper.make_node("Relu", ["x_f"], ["y"]),
        ],
        [_vi("x", [1, 3, 4, 4], TensorProto.UINT8)],
        [_vi("y", [1, 3, 4, 4])],
        {"s": np.float32(0.01), "z": np.uint8(100)},
    )
    feeds = inputs_for(model)
    data = tflite_from_onnx(model)
    _, ops = _parse(data)
    assert [name for name, *_ in ops] == ["DEQUANTIZE", "RELU"]
    raw, _ = _litert(data, feeds)
    np.testing.assert_allclose(onnx_like_output(raw), _ort(model, feeds), rtol=0, atol=1e-6)


def test_feed_helpers_round_trip():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.uint8).reshape(2, 3, 4, 5)
    t = tflite_feeds({"x": x})["x"]
    assert t.dtype == np.int8 and t.shape == (2, 4, 5, 3) and t[0, 0, 0, 0] == -128
    np.testing.assert_array_equal(onnx_like_output(t), x)
    f = np.random.default_rng(0).random((1, 3, 4, 5), dtype=np.float32)
    np.testing.assert_array_equal(onnx_like_output(tflite_feeds({"f": f})["f"]), f)


# ---------------------------------------------------------------------- errors
def _model(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def test_unsupported_op_names_it():
    model = _model([helper.make_node("Sigmoid", ["x"], ["y"], name="s")], [_vi("x", [1, 3, 4, 4])],
                   [_vi("y", [1, 3, 4, 4])])
    with pytest.raises(OplatError, match="Sigmoid"):
        tflite_from_onnx(model)


def test_unsupported_attributes_name_the_op():
    crd = _model(
        [helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, mode="CRD")],
        [_vi("x", [1, 12, 4, 4])], [_vi("y", [1, 3, 8, 8])],
    )
    with pytest.raises(OplatError, match="DepthToSpace.*CRD"):
        tflite_from_onnx(crd)
    cubic = _model(
        [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic")],
        [_vi("x", [1, 3, 4, 4])], [_vi("y", [1, 3, 8, 8])],
        [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")],
    )
    with pytest.raises(OplatError, match="Resize.*cubic"):
        tflite_from_onnx(cubic)
    grouped = _model(
        [helper.make_node("Conv", ["x", "W"], ["y"], group=3, pads=[1, 1, 1, 1])],
        [_vi("x", [1, 3, 4, 4])], [_vi("y", [1, 3, 4, 4])],
        [numpy_helper.from_array(np.ones((3, 1, 3, 3), np.float32), "W")],
    )
    with pytest.raises(OplatError, match="Conv.*group"):
        tflite_from_onnx(grouped)


# ---------------------------------------------------------------------- the litert backend
def test_backend_contract():
    assert litert.available() is None
    name, version = litert.runtime()
    assert name == "litert" and version[0].isdigit()


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("options", [{"threads": 1}, {"threads": 2, "xnnpack": False}], ids=["xnnpack", "builtin"])
def test_backend_session_runs_and_matches(precision, options):
    model = model_from_op(_spec("conv+relu", precision))
    feeds = inputs_for(model)
    ref = _ort(model, feeds)
    with litert.open(model, feeds, options) as session:
        session.run()
        session.run()
        (out,) = session.output()
        assert session.profile(5) is None
    assert out.shape == ref.shape and out.dtype == ref.dtype  # ONNX layout and dtype
    if precision == "fp32":
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5 * max(1.0, float(np.ptp(ref))))
    else:
        assert np.abs(out.astype(np.int32) - ref.astype(np.int32)).max() <= 2


def test_backend_network_session():
    arch = ArchSpec(scale=2, in_h=12, in_w=16, layers=(Layer(8), Layer(12, act="none")))
    model = quantize_qdq(model_from_arch(arch))
    feeds = {"x": calibration_images(12, 16, 1, seed=3)[0]}
    with litert.open(model, feeds, {"threads": 1}) as session:
        session.run()
        (out,) = session.output()
    assert out.shape == (1, 3, 24, 32)
    assert np.mean(np.abs(out - _ort(model, feeds)) * 255.0 <= 2.01) >= 0.99


def test_backend_reports_missing_litert(monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    reason = litert.available()
    assert reason and "pip install 'oplat[litert]'" in reason


def test_imports_are_lazy():
    code = (
        "import sys, oplat.tflite, oplat.backends.litert as b\n"
        "assert not [m for m in sys.modules if m.startswith('ai_edge_litert')], 'imported at module level'\n"
        "assert b.available() is None\n"
        "assert 'ai_edge_litert.interpreter' not in sys.modules, 'available() loaded the interpreter'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_every_fusion_pair_converts_and_runs_for_every_converting_device(precision):
    """calibrate's A→B pair models must run on every device, not only on ONNX Runtime:
    an INT8 pair carries one set of quantization parameters across its seam."""
    from oplat.fusion import PAIRS, _pair_specs, model_from_pair

    for a_op, b_op in PAIRS:
        a, b = _pair_specs(a_op, b_op, 8, 12, 16, precision)
        model = model_from_pair(a, b)
        seam = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
        if precision == "int8":
            assert seam["a_y_scale"] == seam["b_x_scale"] and seam["a_y_zero"] == seam["b_x_zero"]
        flat = tflite_from_onnx(model)
        feeds = inputs_for(model)
        got, _ = _litert(flat, feeds)
        want = _ort(model, feeds)
        got = onnx_like_output(got, want.dtype)
        if precision == "int8":
            assert np.abs(got.astype(np.int32) - want.astype(np.int32)).max() <= 2
        else:
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_calibrate_on_litert_completes_for_fp32_and_int8(tmp_path, cli):
    """`oplat calibrate --device litert` on a table measured on litert: the INT8 fusion
    pairs convert (one set of quantization parameters at each seam), both precisions are
    fitted on networks measured in LiteRT, and the composition file holds both."""
    import json

    from oplat.arch import arch_ops
    from oplat.devices import get_device
    from oplat.measure import measure_specs
    from oplat.predict import compose_path
    from oplat.space import space_from_dict
    from oplat.timing import TimingPolicy
    from oplat.validate import sample_networks

    space_dict = {"name": "tiny", "scale": 3, "in_h": 24, "in_w": 32, "depth_min": 1, "depth_max": 2,
                  "channels": [8, 16], "channel_align": 8, "residuals": ["anchor", "none"]}
    space = space_from_dict(space_dict)
    specs = sorted({s for p in ("fp32", "int8") for a in sample_networks(space, 30, seed=5) for s in arch_ops(a, p)},
                   key=lambda s: s.key)
    table = tmp_path / "tiny.jsonl"
    measure_specs(specs, get_device("litert"), opset="tiny", out=table, policy=TimingPolicy.quick(), progress=False)
    space_file = tmp_path / "tiny.toml"
    space_file.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in space_dict.items()))  # JSON values are TOML
    r = cli("calibrate", "--device", "litert", "--table", str(table), "--space", str(space_file),
            "--precision", "fp32,int8", "--networks", "3", "--no-progress")
    assert r.code == 0, r.err
    stored = json.loads(compose_path(table).read_text())
    assert set(stored["composition"]) == {"fp32", "int8"}
    assert all(len(stored["networks"][p]) == 3 and all(n["measured_ms"] > 0 for n in stored["networks"][p]) for p in ("fp32", "int8"))
