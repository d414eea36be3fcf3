"""Any network, any op: node kernels, extraction, `measure --model`, all problems at once.

Networks are built here from the published descriptions the tool exists for (small
sizes so the suite stays fast): an ECBSR-style Conv+PReLU stack, a UNet-style
MaxPool / strided-conv / ConvTranspose / skip-concat net, a classic classifier export
(BatchNormalization, Dropout, constant sub-graphs, Gemm, Softmax), each in FP32 and as
ONNX Runtime's QDQ INT8.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import assert_one_line_error
from oplat.arch import ABPN, model_from_arch, quantize_qdq
from oplat.backends.ort import exact_session
from oplat.build import inputs_for
from oplat.extract import extract_kernels
from oplat.graph import net_graph
from oplat.nodespec import NodeSpec
from oplat.predict import MissingKernels, Predictor

RNG = np.random.default_rng(0)


def _w(name, *shape, scale=0.1):
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _model(nodes, inits, in_shape, out_name, out_shape=None, extra_outputs=()):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))
    y = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)
    g = helper.make_graph(nodes, "net", [x], [y, *extra_outputs], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.checker.check_model(m)
    return m


def ecbsr(c=16, blocks=2, h=24, w=32, scale=2):
    """ECBSR-M{blocks}C{c} deploy form: conv3x3 + PReLU stacks, conv to 3·s², depth-to-space."""
    nodes, inits, t, cin = [], [], "x", 3
    for i in range(blocks + 1):
        inits += [_w(f"w{i}", c, cin, 3, 3), _w(f"b{i}", c), numpy_helper.from_array(np.full((c, 1, 1), 0.25, np.float32), f"a{i}")]
        nodes += [helper.make_node("Conv", [t, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                  helper.make_node("PRelu", [f"c{i}", f"a{i}"], [f"p{i}"], name=f"prelu{i}")]
        t, cin = f"p{i}", c
    inits += [_w("wt", 3 * scale * scale, c, 3, 3), _w("bt", 3 * scale * scale)]
    nodes += [helper.make_node("Conv", [t, "wt", "bt"], ["tail"], name="tail", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
              helper.make_node("DepthToSpace", ["tail"], ["y"], name="d2s", blocksize=scale, mode="CRD")]
    return _model(nodes, inits, (1, 3, h, w), "y", (1, 3, h * scale, w * scale))


def unet(c=8, h=32, w=32):
    """Down by MaxPool and by a stride-2 conv, up by ConvTranspose and Resize, skip concats."""
    inits = [_w("w0", c, 3, 3, 3), _w("w1", 2 * c, c, 3, 3), _w("w2", 2 * c, 2 * c, 3, 3), _w("wt", 2 * c, c, 2, 2),
             _w("w3", c, 2 * c, 3, 3), _w("w4", 3, 2 * c, 1, 1), numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w0"], ["e0"], name="enc0", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Relu", ["e0"], ["r0"], name="enc0_relu"),
        n("MaxPool", ["r0"], ["m0"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        n("Conv", ["m0", "w1"], ["e1"], name="enc1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("LeakyRelu", ["e1"], ["r1"], name="enc1_act", alpha=0.2),
        n("Conv", ["r1", "w2"], ["e2"], name="down", kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        n("Resize", ["e2", "", "scales"], ["u2"], name="up_resize", mode="nearest"),
        n("ConvTranspose", ["u2", "wt"], ["u1"], name="up_convt", kernel_shape=[2, 2], strides=[2, 2]),
        n("Concat", ["u1", "r0"], ["cat"], name="skip", axis=1),
        n("Conv", ["cat", "w3"], ["d0"], name="dec0", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Concat", ["d0", "r0"], ["cat2"], name="skip2", axis=1),
        n("Conv", ["cat2", "w4"], ["y"], name="head", kernel_shape=[1, 1]),
    ]
    return _model(nodes, inits, (1, 3, h, w), "y", (1, 3, h, w))


def classifier():
    """A classic export: BatchNormalization after conv, Dropout, a weight reshaped by a
    constant sub-graph, Gemm, Softmax."""
    n = helper.make_node
    inits = [_w("w0", 8, 3, 3, 3), _w("fc_w_flat", 10 * 8 * 4 * 4),
             numpy_helper.from_array(np.ones(8, np.float32), "g"), numpy_helper.from_array(np.zeros(8, np.float32), "bb"),
             numpy_helper.from_array(np.zeros(8, np.float32), "mean"), numpy_helper.from_array(np.ones(8, np.float32), "var"),
             _w("fc_b", 10)]
    nodes = [
        n("Conv", ["x", "w0"], ["c0"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("BatchNormalization", ["c0", "g", "bb", "mean", "var"], ["bn"], name="bn"),
        n("Relu", ["bn"], ["r0"], name="relu"),
        n("MaxPool", ["r0"], ["m0"], name="pool", kernel_shape=[4, 4], strides=[4, 4]),
        n("Dropout", ["m0"], ["d0"], name="drop"),
        n("Flatten", ["d0"], ["f0"], name="flatten"),
        n("Constant", [], ["shape"], name="shape_const", value=numpy_helper.from_array(np.array([10, 128], np.int64))),
        n("Reshape", ["fc_w_flat", "shape"], ["fc_w"], name="reshape_w"),
        n("Gemm", ["f0", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
        n("Softmax", ["logits"], ["y"], name="softmax", axis=1),
    ]
    return _model(nodes, inits, (1, 3, 16, 16), "y", (1, 10))


def _measure_and_predict(cli, model, tmp_path, name):
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    table = tmp_path / f"{name}.jsonl"
    empty = cli("predict", str(path), "--table", str(_seed_table(tmp_path)))
    assert empty.code == 2 and "cannot price" in empty.err
    r = cli("measure", "--model", str(path), "--out", str(table), "--quick-policy", "--no-progress")
    assert r.code == 0, r.err
    r = cli("predict", str(path), "--table", str(table), "--format", "json")
    assert r.code == 0, r.err
    return json.loads(r.out)


def _seed_table(tmp_path):
    """A one-row table (a relu) that prices none of the test networks."""
    table = tmp_path / "seed.jsonl"
    if not table.exists():
        toml = tmp_path / "seed.toml"
        toml.write_text('name = "seed"\nhw = [[4, 4]]\n[[entry]]\nop = "relu"\nc = 1\n')
        from oplat.cli import main

        assert main(["measure", "--opset", str(toml), "--out", str(table), "--quick-policy", "--no-progress"]) == 0
    return table


# ------------------------------------------------------------------ signatures
def test_the_same_node_in_two_models_has_one_key_and_another_attribute_another():
    a = {k.nodes: k.spec for k in net_graph(unet()).kernels}
    b = {k.nodes: k.spec for k in net_graph(unet()).kernels}  # other weights (the generator moved on)
    assert a == b and all(a[n].key == b[n].key for n in a)
    assert isinstance(a[("pool",)], NodeSpec) and a[("pool",)].kind == "MaxPool"
    other = unet()
    for node in other.graph.node:
        if node.name == "enc1_act":
            node.attribute[0].f = 0.1  # LeakyRelu alpha 0.2 → 0.1
    c = {k.nodes: k.spec for k in net_graph(other).kernels}
    assert c[("enc1", "enc1_act")].key != a[("enc1", "enc1_act")].key
    assert c[("pool",)].key == a[("pool",)].key
    assert net_graph(unet(h=64, w=64)).kernels[2].spec.key != a[("pool",)].key  # another shape
    # the strided conv, the Conv+LeakyRelu pair and ConvTranspose are node kernels, plain convs stay built-in
    kinds = {k.nodes: getattr(k.spec, "kind", k.spec.op) for k in net_graph(unet()).kernels}
    assert kinds[("down",)] == "Conv" and kinds[("enc1", "enc1_act")] == "Conv+LeakyRelu" and kinds[("up_convt",)] == "ConvTranspose"
    assert kinds[("enc0", "enc0_relu")] == "conv+relu" and kinds[("skip",)] == "concat"


def test_dilated_conv_is_its_own_kernel_not_a_plain_conv():
    n = helper.make_node("Conv", ["x", "w"], ["y"], name="dil", kernel_shape=[3, 3], pads=[2, 2, 2, 2], dilations=[2, 2])
    model = _model([n], [_w("w", 8, 3, 3, 3)], (1, 3, 16, 16), "y", (1, 8, 16, 16))
    (kernel,) = net_graph(model).kernels
    assert isinstance(kernel.spec, NodeSpec) and kernel.spec.attrs[0]["dilations"] == [2, 2]
    assert "dilation 2×2" in kernel.spec.label()


def test_abpn_reads_as_before():
    net = net_graph(model_from_arch(ABPN))
    assert net.params == 42_539 and round(net.macs / 1e9, 2) == 9.76
    assert all(not isinstance(k.spec, NodeSpec) for k in net.kernels)
    assert all(not isinstance(k.spec, NodeSpec) for k in net_graph(quantize_qdq(model_from_arch(ABPN))).kernels)


# ------------------------------------------------------------------ extraction
@pytest.mark.parametrize("make", [ecbsr, unet], ids=["ecbsr", "unet"])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_cut_kernel_computes_what_it_computes_inside_the_network(make, precision):
    model = make()
    if precision == "int8":
        model = quantize_qdq(model)
    kernels = extract_kernels(model)
    assert kernels
    # every cut tensor, taken from the whole network on the same input
    probe = onnx.shape_inference.infer_shapes(model)
    names = [o for k in kernels for o in k.kernel.outputs]
    from oplat.extract import _real_values, _typed

    typed = _typed(model)
    inside = _real_values(typed, names)
    for km in kernels:
        alone = exact_session(km.model).run(list(km.kernel.outputs), km.feeds)
        for name, value in zip(km.kernel.outputs, alone):
            np.testing.assert_array_equal(value, inside[name], err_msg=f"{km.spec.label()} ({name})")
    assert probe is not None


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_repeated_kernel_is_timed_on_the_inputs_of_all_its_occurrences(precision):
    """ORT's PRelu runs at a speed that depends on its data (10.6 ms on the first ECBSR
    PReLU's inputs, 13.0 ms on all five's, FP32 16×360×640): a kernel of one key that
    occurs several times is timed on one band of image rows from each occurrence's real
    inputs; INT8 codes are re-expressed in the first occurrence's scale and zero point
    (the cut keeps its DequantizeLinear), so each band decodes to that occurrence's
    values. Its ``feeds`` stay the first occurrence's (the cut computes that node)."""
    from oplat.extract import _real_values, _typed

    model = ecbsr(blocks=3, h=24, w=32)
    if precision == "int8":
        model = quantize_qdq(model)
    typed = _typed(model)
    net = net_graph(typed)
    (km,) = [k for k in extract_kernels(model) if "PRelu" in k.spec.key]
    occurrences = [k for k in net.kernels if k.spec.key == km.spec.key]
    assert len(occurrences) == 4 and km.mixed is not None and km.timing_feeds is km.mixed
    (name,) = km.kernel.inputs
    inside = _real_values(typed, [k.inputs[0] for k in occurrences])
    np.testing.assert_array_equal(km.feeds[name], inside[name])
    mixed = km.mixed[name]
    assert mixed.shape == km.feeds[name].shape and mixed.dtype == km.feeds[name].dtype
    dq = {n.input[0]: n for n in typed.graph.node if n.op_type == "DequantizeLinear"}
    consts = {i.name: numpy_helper.to_array(i) for i in typed.graph.initializer}

    def real(codes, tensor):
        """(real values, scale, representable range) of ``codes`` as ``tensor``'s DequantizeLinear reads them."""
        if precision == "fp32":
            return codes.astype(np.float64), 0.0, (-np.inf, np.inf)
        node = dq[tensor]
        scale, zero = float(consts[node.input[1]]), int(consts[node.input[2]])
        return (codes.astype(np.float64) - zero) * scale, scale, ((0 - zero) * scale, (255 - zero) * scale)

    _, first_scale, (lo, hi) = real(mixed, name)
    for i, k in enumerate(occurrences):
        band = slice(6 * i, 6 * (i + 1))
        want = real(inside[k.inputs[0]][:, :, band], k.inputs[0])[0]
        got = real(mixed[:, :, band], name)[0]
        # values outside the first occurrence's codes clip to its range
        np.testing.assert_allclose(got, np.clip(want, lo, hi), atol=0.51 * first_scale + 1e-12)
    assert not np.array_equal(mixed, km.feeds[name])  # the other occurrences' data is in it
    single = [k for k in extract_kernels(model) if k.spec.op == "depth_to_space"]
    assert single and all(k.mixed is None and k.timing_feeds is k.feeds for k in single)


# ------------------------------------------------------------------ the three commands
@pytest.mark.parametrize("make", [ecbsr, unet, classifier], ids=["ecbsr", "unet", "classifier"])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_predict_lists_measure_model_fills_predict_prices_all(cli, tmp_path, make, precision):
    model = make()
    if precision == "int8":
        if make is classifier:
            pytest.skip("the classifier's 10-way output is no image: quantize_qdq calibrates on images")
        model = quantize_qdq(model)
    report = _measure_and_predict(cli, model, tmp_path, f"{make.__name__}-{precision}")
    assert report["predicted_ms"] > 0 and report["fps"] > 0
    assert all(k["source"] == "measured" for k in report["kernels"])


def test_all_problems_at_once_and_the_missing_opset_closes_the_gap(cli, tmp_path):
    net = tmp_path / "ecbsr.onnx"
    onnx.save(ecbsr(), net)
    table = _seed_table(tmp_path)
    before = table.read_bytes()
    missing = tmp_path / "missing.toml"
    r = cli("predict", str(net), "--table", str(table), "--missing-opset", str(missing))
    assert_one_line_error(r, "cannot price 8 kernels (5 distinct)", "prelu0", "prelu1", "prelu2", "tail", "d2s", str(missing))
    assert table.read_bytes() == before
    r = cli("measure", "--opset", str(missing), "--out", str(table), "--quick-policy", "--no-progress")
    assert r.code == 0 and "5 measured" in r.out, r.err
    r = cli("predict", str(net), "--table", str(table))
    assert r.code == 0 and "all 8 kernels measured" in r.out, r.err


def srcnn(h=8, w=12):
    """SRCNN-style: a cubic Resize (an omitted roi input, "") in front of convs."""
    n = helper.make_node
    inits = [_w("w0", 8, 3, 5, 5), _w("w1", 3, 8, 3, 3), numpy_helper.from_array(np.array([1, 1, 3, 3], np.float32), "scales")]
    nodes = [
        n("Resize", ["x", "", "scales"], ["up"], name="bicubic", mode="cubic"),
        n("Conv", ["up", "w0"], ["c0"], name="conv0", kernel_shape=[5, 5], pads=[2, 2, 2, 2]),
        n("Relu", ["c0"], ["r0"], name="relu0"),
        n("Conv", ["r0", "w1"], ["y"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    ]
    return _model(nodes, inits, (1, 3, h, w), "y", (1, 3, 3 * h, 3 * w))


def test_an_omitted_optional_input_reads_builds_and_round_trips_its_missing_opset(cli, tmp_path):
    """Resize(x, "", scales) in cubic mode is a node kernel with an empty slot: it has MACs 0
    (no KeyError), builds as a one-kernel model, and the entry --missing-opset writes for it
    measures the same key."""
    net = net_graph(srcnn())
    (resize,) = [k.spec for k in net.kernels if isinstance(k.spec, NodeSpec)]
    assert resize.kind == "Resize" and resize.macs == 0 and {"op": 0, "slot": 1, "empty": True} in resize.consts
    from oplat.build import model_from_nodespec

    built = model_from_nodespec(resize)
    assert [i for i in built.graph.node[-1].input][1] == ""
    path = tmp_path / "srcnn.onnx"
    onnx.save(srcnn(), path)
    table, missing = _seed_table(tmp_path), tmp_path / "missing.toml"
    r = cli("predict", str(path), "--table", str(table), "--missing-opset", str(missing))
    assert r.code == 2 and "cannot price 3 kernels (3 distinct)" in r.err, r.err
    own = tmp_path / "own.jsonl"
    r = cli("measure", "--opset", str(missing), "--out", str(own), "--quick-policy", "--no-progress")
    assert r.code == 0 and "3 measured" in r.out, r.err
    r = cli("predict", str(path), "--table", str(own))
    assert r.code == 0 and "all 3 kernels measured" in r.out, r.err


def test_a_mul_or_add_by_a_constant_after_a_conv_is_folded_into_it():
    """ESRGAN's `conv(x) * 0.2 + x`: the runtime folds the Mul into the conv (ORT's
    ConvMulFusion), so the network has no Mul kernel; the folded graph computes the same.
    A conv with another reader keeps its Mul."""
    from oplat.fold import prepare

    n = helper.make_node
    inits = [_w("w0", 8, 8, 3, 3), _w("b0", 8), numpy_helper.from_array(np.array(0.2, np.float32), "k"),
             numpy_helper.from_array(np.full((8, 1, 1), 0.5, np.float32), "shift"), _w("w1", 8, 8, 3, 3)]
    nodes = [
        n("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Mul", ["c0", "k"], ["m0"], name="scale0"),
        n("Add", ["shift", "m0"], ["a0"], name="shift0"),
        n("Add", ["a0", "x"], ["r0"], name="residual"),
        n("Conv", ["r0", "w1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Mul", ["c1", "k"], ["m1"], name="scale1"),
        n("Add", ["m1", "c1"], ["y"], name="reuse"),  # conv1 has two readers: its Mul stays
    ]
    model = _model(nodes, inits, (1, 8, 6, 7), "y", (1, 8, 6, 7))
    kinds = [getattr(k.spec, "kind", k.spec.op) for k in net_graph(model).kernels]
    assert kinds == ["conv", "add", "conv", "Mul", "add"], kinds
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the original, unfused
    plain = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    folded = ort.InferenceSession(prepare(model).SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = inputs_for(model)
    np.testing.assert_allclose(folded.run(None, feeds)[0], plain.run(None, feeds)[0], rtol=1e-5, atol=1e-5)
    for km in extract_kernels(model):  # the cut kernels are the folded ones
        assert "scale0" not in km.kernel.nodes and "shift0" not in km.kernel.nodes


def test_missing_kernels_name_every_node():
    with pytest.raises(MissingKernels) as info:
        Predictor([], source="empty").predict(unet())
    text = str(info.value)
    for node in ("enc0", "pool", "down", "up_resize", "up_convt", "skip", "dec0", "head"):
        assert node in text


def test_float_islands_and_interior_qdq_are_priced_as_they_run():
    """The quantizer leaves the last PReLU in float: it is an fp32 kernel, and the
    Dequantize feeding it is a kernel of its own."""
    net = net_graph(quantize_qdq(ecbsr()))
    by_node = {k.nodes: k.spec for k in net.kernels}
    precisions = {k.nodes[0]: k.spec.precision for k in net.kernels}
    assert precisions["conv0"] == "int8"
    interior = [s for s in by_node.values() if isinstance(s, NodeSpec) and s.kind in ("DequantizeLinear", "QuantizeLinear")]
    assert all(s.precision == "fp32" for s in interior)
    floats = [n for n, p in precisions.items() if p == "fp32" and not n.endswith("Linear")]
    assert floats == [] or interior, (floats, interior)


# ------------------------------------------------------------------ precision, batch, bad files
def test_fp16_rows_and_no_fp16_priced_from_fp32(cli, tmp_path):
    toml = tmp_path / "h.toml"
    toml.write_text('name = "h"\nhw = [[16, 16]]\n[[entry]]\nop = "conv"\nc = 8\nc_out = 8\nkernel = 3\nprecision = ["fp32", "fp16"]\n')
    table = tmp_path / "h.jsonl"
    assert cli("measure", "--opset", str(toml), "--out", str(table), "--quick-policy", "--no-progress").code == 0
    rows = [json.loads(l) for l in table.read_text().splitlines()]
    assert sorted(r["spec"]["precision"] for r in rows) == ["fp16", "fp32"]
    assert all(r["status"] in ("ok", "unsupported") for r in rows)
    from oplat.build import model_from_op
    from oplat.spec import OpSpec

    fp32_only = tmp_path / "f.jsonl"
    fp32_only.write_text("".join(l + "\n" for l in table.read_text().splitlines() if '"precision":"fp32"' in l))
    half = tmp_path / "half.onnx"
    onnx.save(model_from_op(OpSpec("conv", 8, 16, 16, c_out=8, kernel=3, precision="fp16")), half)
    assert_one_line_error(cli("predict", str(half), "--table", str(fp32_only)), "no fp16 conv 3x3 rows")


def test_infer_precision_is_refused_where_the_device_does_not_honour_it(cli, tmp_path):
    r = cli("measure", "--device", "cpu", "--infer-precision", "f16", "--opset", "quick", "--out", str(tmp_path / "t.jsonl"))
    assert_one_line_error(r, "--infer-precision is an OpenVINO option", "refused rather than recorded")


def test_batch_is_in_labels_keys_and_fps(cli, tmp_path):
    from oplat.spec import OpSpec

    four = OpSpec("relu", 8, 16, 16, n=4)
    assert "n4" in four.label() and four.key != OpSpec("relu", 8, 16, 16).key
    net = tmp_path / "b.onnx"
    n = helper.make_node("Relu", ["x"], ["y"], name="r")
    onnx.save(_model([n], [], (4, 8, 16, 16), "y", (4, 8, 16, 16)), net)
    table = tmp_path / "b.jsonl"
    assert cli("measure", "--model", str(net), "--out", str(table), "--quick-policy", "--no-progress").code == 0
    report = json.loads(cli("predict", str(net), "--table", str(table), "--format", "json").out)
    assert report["batch"] == 4 and report["fps"] == pytest.approx(4 * 1000 / report["predicted_ms"])
    assert "n4" in report["kernels"][0]["kernel"]


def test_int64_and_empty_models_are_refused_with_one_line(cli, tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.INT64, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [1, 4])
    m = helper.make_model(helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "i64.onnx"
    onnx.save(m, path)
    table = _seed_table(tmp_path)
    assert_one_line_error(cli("predict", str(path), "--table", str(table)), "graph input 'x' is int64")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert_one_line_error(cli("predict", str(empty), "--table", str(table)), "no nodes")


def test_an_op_set_entry_names_any_onnx_op_checked_against_its_schema(cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[[entry]]\nop = "MaxPool"\ninputs = [[1, 8, 16, 16]]\nattrs = {kernel_shape = [2, 2], strieds = [2, 2]}\n')
    assert_one_line_error(cli("measure", "--opset", str(bad), "--out", str(tmp_path / "t.jsonl")), "entry 1", "attrs", "strieds")
    bad.write_text('name = "bad"\n[[entry]]\nop = "MaxPoool"\ninputs = [[1, 8, 16, 16]]\n')
    assert_one_line_error(cli("measure", "--opset", str(bad), "--out", str(tmp_path / "t.jsonl")), "entry 1", "not an ONNX operator")


# ------------------------------------------------------------------ runtime layout context
def test_a_kernel_ort_runs_in_nhwc_inside_the_network_is_cut_and_priced_so():
    """In an INT8 network ORT runs the float PRelu between two NHWC QLinearConvs on NHWC
    data (1.3× slower here than alone in NCHW). `measure --model` on cpu cuts it a second
    time between Transposes ORT cancels, so it runs as in the network; `predict` prices
    it from that row, and says so where the table has only the NCHW one."""
    import onnxruntime as ort
    from dataclasses import replace

    from oplat.backends.ort import inner_reorders
    from oplat.devices import get_device

    model = quantize_qdq(ecbsr())
    assert {"prelu0", "prelu1", "prelu2"} <= inner_reorders(model).nhwc
    assert not inner_reorders(ecbsr()).nhwc  # FP32: blocked NCHWc, no NHWC region
    kms = extract_kernels(model, device=get_device("cpu"))
    nhwc = [km for km in kms if km.spec.layout == "nhwc"]
    assert nhwc and all(km.spec.kind == "PRelu" for km in nhwc) and len(nhwc) < len(kms)
    assert all(km.spec.layout == "nchw" for km in extract_kernels(model))  # no device: the NCHW cuts only
    plain = {km.spec.key: km for km in kms if km.spec.layout == "nchw"}
    for km in nhwc:
        onnx.checker.check_model(km.model, full_check=True)
        base = plain[replace(km.spec, layout="nchw").key]
        (a,) = exact_session(km.model).run(None, km.feeds)
        (b,) = exact_session(base.model).run(None, base.feeds)
        np.testing.assert_array_equal(a, b.transpose(0, 2, 3, 1))
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.optimized_model_filepath = str(Path(tempfile.mkdtemp()) / "opt.onnx")
        ort.InferenceSession(km.model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        assert "Transpose" not in {n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node}
        assert km.spec.label().endswith("int8 nhwc") and km.spec.key != base.spec.key

    device = {"name": "cpu", "runtime": "onnxruntime", "options": {"graph_optimization": "all", "threads": 1}}

    def row(spec, ms):
        return {"schema_version": 1, "key": spec.key, "spec": spec.as_dict(), "label": spec.label(), "status": "ok",
                "device": device, "median_ms": ms, "p10_ms": ms, "kernel_ms": ms, "layout_ms": 0.0}

    rows = [row(km.spec, 1.3 if km.spec.layout == "nhwc" else 1.0) for km in kms]
    pred = Predictor(rows, stat="median").predict(model)
    prelus = [c for c in pred.kernels if getattr(c.kernel.spec, "kind", "") == "PRelu"]
    assert len(prelus) == 3 and all(c.compute_ms == pytest.approx(1.3) and c.source == "measured" for c in prelus)
    assert all(c.compute_ms == pytest.approx(1.0) for c in pred.kernels if getattr(c.kernel.spec, "kind", "") != "PRelu")
    older = Predictor([r for r in rows if r["spec"].get("layout") != "nhwc"], stat="median").predict(model)
    prelus = [c for c in older.kernels if getattr(c.kernel.spec, "kind", "") == "PRelu"]
    assert all(c.compute_ms == pytest.approx(1.0) and "runs in NHWC inside the network" in c.basis for c in prelus)


def test_a_uint8_maxpool_ort_runs_as_nhwcmaxpool_in_the_network_is_timed_as_that_node():
    """Alone, a uint8 MaxPool stays an NCHW MaxPool even between Transposes; between INT8
    convs ORT runs it as its contrib NhwcMaxPool (20–30× faster here). Its nhwc variant
    is that node from ORT's optimized network, alone at the kernel's shapes: it computes
    what the cut computes, and is faster by a wide margin, as in the network."""
    import time

    from oplat.backends.ort import inner_reorders
    from oplat.devices import get_device

    model = quantize_qdq(unet(c=32, h=192, w=192))
    assert inner_reorders(model).native["pool"][0].op_type == "NhwcMaxPool"
    kms = extract_kernels(model, device=get_device("cpu"))
    pools = {km.spec.layout: km for km in kms if getattr(km.spec, "kind", "") == "MaxPool"}
    assert set(pools) == {"nchw", "nhwc"}
    native, cut = pools["nhwc"], pools["nchw"]
    assert [(n.domain, n.op_type) for n in native.model.graph.node] == [("com.microsoft", "NhwcMaxPool")]
    onnx.checker.check_model(native.model, full_check=True)
    (a,) = exact_session(native.model).run(None, native.feeds)
    (b,) = exact_session(cut.model).run(None, cut.feeds)
    assert a.dtype == np.uint8 and np.ptp(b) > 0
    np.testing.assert_array_equal(a, b.transpose(0, 2, 3, 1))

    def p10(km):
        session = exact_session(km.model)
        times = []
        for _ in range(40):
            t0 = time.perf_counter()
            session.run(None, km.feeds)
            times.append(time.perf_counter() - t0)
        return float(np.percentile(times, 10))

    p10(native), p10(cut)  # warm both
    assert p10(native) * 4 < p10(cut)
