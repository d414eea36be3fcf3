"""Graph reading, table lookup and fallback, composition fit, calibrate and validate on real ORT."""

from __future__ import annotations

import itertools
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from oplat.arch import ABPN, ArchSpec, Layer, arch_ops, model_from_arch, quantize_qdq
from oplat.devices import get_device
from oplat.errors import OplatError
from oplat.graph import net_graph
from oplat.measure import measure_specs
from oplat.predict import Composition, Predictor, compose_path, fit_composition
from oplat.space import space_from_dict
from oplat.spec import OpSpec
from oplat.records import FusionVerdict
from oplat.table import SCHEMA_VERSION
from oplat.timing import TimingPolicy
from oplat.report.validation import report_markdown
from oplat.validate import ValidationReport, calibrate, sample_networks, validate


def fake_row(spec: OpSpec, compute: float, layout: float = 0.0) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "key": spec.key,
        "spec": spec.as_dict(),
        "label": spec.label(),
        "status": "ok",
        "device": {"name": "fake"},
        "median_ms": compute + layout,
        "p10_ms": compute + layout,
        "kernel_ms": compute,
        "layout_ms": layout,
    }


SMALL = ArchSpec(scale=3, in_h=12, in_w=16, layers=(Layer(8), Layer(8), Layer(27, act="relu"), Layer(27, act="none")))


def test_abpn_graph_reads_as_the_published_network():
    fp32 = net_graph(model_from_arch(ABPN))
    assert fp32.params == 42_539 and round(fp32.macs / 1e9, 2) == 9.76
    assert [k.spec.op for k in fp32.kernels].count("conv+relu") == 6
    assert [k.spec.op for k in fp32.kernels].count("conv") == 1
    assert {k.spec.op for k in fp32.kernels} == {"conv+relu", "conv", "concat", "add", "depth_to_space", "clip"}
    assert fp32.precision == "fp32" and not fp32.boundary_nodes
    # peak live activations: at least input + two 28-channel feature maps (float32)
    assert fp32.peak_activation_bytes >= 4 * (3 + 2 * 28) * 360 * 640


def test_qdq_graph_reads_as_int8_kernels():
    net = net_graph(quantize_qdq(model_from_arch(SMALL)))
    assert net.precision == "int8"
    assert all(k.spec.precision == "int8" for k in net.kernels)
    assert sum(k.spec.op.startswith("conv") for k in net.kernels) == 4
    assert len(net.boundary_nodes) == 2  # quantize the input, dequantize the output
    assert net.params == net_graph(model_from_arch(SMALL)).params


def test_arch_ops_match_the_graph_kernels():
    got = [k.spec for k in net_graph(model_from_arch(SMALL)).kernels]
    assert sorted(s.key for s in got) == sorted(s.key for s in arch_ops(SMALL, "fp32"))


def test_an_op_the_table_lacks_is_an_error_naming_it():
    """Any ONNX op is read (as a node kernel of its exact signature); a table without its
    row refuses it with the node's name and the way to measure it."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    g = helper.make_graph([helper.make_node("Sigmoid", ["x"], ["y"], name="gate")], "g", [x], [y])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    (kernel,) = net_graph(model).kernels
    assert kernel.spec.kind == "Sigmoid" and kernel.nodes == ("gate",)
    relu = OpSpec("relu", 3, 8, 8)
    with pytest.raises(OplatError, match="Sigmoid 3×8×8 fp32 at gate: no row of this exact kernel.*measure --model"):
        Predictor([fake_row(relu, 1.0)], source="t").predict(model)


def _rows_for(arch, precision="fp32", scale_ms=1.0):
    rows = []
    for spec in set(arch_ops(arch, precision)):
        rows.append(fake_row(spec, scale_ms * (spec.macs / 1e6 + spec.elements_moved / 1e5), 0.01))
    return rows


def test_exact_lookup_is_marked_measured_and_sums():
    rows = _rows_for(SMALL)
    pred = Predictor(rows, source="fake").predict(model_from_arch(SMALL))
    assert all(k.source == "measured" for k in pred.kernels)
    expected = sum(r["kernel_ms"] for r in rows for k in pred.kernels if k.kernel.spec.key == r["key"])
    assert pred.compute_ms == pytest.approx(expected)
    assert not pred.calibrated and pred.total_ms == pytest.approx(pred.compute_ms)


def test_missing_key_is_predicted_from_neighbours_and_says_so():
    rows = [fake_row(OpSpec("conv", c, 16, 16, c_out=c, kernel=3), c * c * 0.01) for c in (16, 32, 48)]
    p = Predictor(rows, source="fake")
    from oplat.graph import Kernel

    cost = p.kernel_cost(Kernel(OpSpec("conv", 40, 16, 16, c_out=40, kernel=3), ("n",)))
    assert cost.source == "predicted" and "conv3x3 32→32" in cost.basis
    assert 32 * 32 * 0.01 < cost.compute_ms < 48 * 48 * 0.01


def test_missing_family_names_the_op_and_what_to_add():
    rows = [fake_row(OpSpec("conv", 8, 16, 16, c_out=8, kernel=3), 1.0)]
    from oplat.graph import Kernel

    with pytest.raises(OplatError, match=r'no fp32 depth_to_space ×3 rows.*op = "depth_to_space".*block = 3'):
        Predictor(rows, source="fake").kernel_cost(Kernel(OpSpec("depth_to_space", 27, 16, 16, block=3), ("d",)))


def test_composition_fit_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(10):
        f = {"compute_ms": rng.uniform(10, 100), "layout_ms": rng.uniform(1, 10), "boundary_melem": rng.uniform(0.5, 5)}
        samples.append((f, 1.05 * f["compute_ms"] + 2.0 * f["boundary_melem"] + 3.0))
    c = fit_composition(samples)
    assert c.compute == pytest.approx(1.05, rel=1e-6) and c.layout == 0.0
    assert c.boundary_per_melem_ms == pytest.approx(2.0, rel=1e-5) and c.const_ms == pytest.approx(3.0, rel=1e-4)
    assert c.fit_mape_pct < 1e-6 and c.loo_mape_pct < 1e-6
    with pytest.raises(OplatError, match="at least 3"):
        fit_composition(samples[:2])


def test_composition_fit_prefers_the_plain_sum_on_noise():
    """Networks that are their kernels' sum plus ±4% noise: no term earns its place, so the
    fit stays at 1×compute (the old free fit bought 0.6×compute + 4×layout here)."""
    rng = np.random.default_rng(1)
    samples = []
    for _ in range(8):
        f = {"compute_ms": rng.uniform(50, 1000), "layout_ms": rng.uniform(5, 100), "boundary_melem": 6.912}
        samples.append((f, f["compute_ms"] * rng.uniform(0.96, 1.04)))
    c = fit_composition(samples)
    assert c.layout == 0.0 and c.boundary_per_melem_ms == 0.0
    assert 0.95 < c.compute < 1.05 and c.const_ms < 0.05 * min(f["compute_ms"] for f, _ in samples)
    assert c.loo_mape_pct < 5.0


def test_composition_fit_scales_a_one_size_shortfall_with_the_image():
    """Networks measured at one input size, each 8 ms over its kernels' sum: a constant and
    a boundary term fit them alike, and the fit takes the boundary, so a network at half
    the pixels is charged half (a per-call constant carried 7.6 ms to every 272×480
    network of an off-grid run and over-priced small ones by up to +14 %)."""
    samples = [({"compute_ms": c, "layout_ms": 0.0, "boundary_melem": 6.912}, c + 8.0) for c in (60, 120, 250, 400, 700, 1000)]
    c = fit_composition(samples)
    assert c.const_ms == 0.0 and c.boundary_per_melem_ms == pytest.approx(8.0 / 6.912, rel=1e-6)
    half = {"compute_ms": 100.0, "layout_ms": 0.0, "boundary_melem": 6.912 / 2}
    assert c.total(half) == pytest.approx(104.0)
    # at several sizes a real per-call constant is told apart and kept
    varied = [({"compute_ms": c, "layout_ms": 0.0, "boundary_melem": b}, c + 8.0)
              for c, b in [(60, 1.0), (120, 6.9), (250, 2.5), (400, 12.0), (700, 4.0), (1000, 9.0)]]
    v = fit_composition(varied)
    assert v.const_ms == pytest.approx(8.0, rel=1e-4) and v.boundary_per_melem_ms < 1e-6


def test_p10_statistic_scales_the_wall_time_by_the_kernel_share():
    spec = OpSpec("conv", 8, 16, 16, c_out=8, kernel=3)
    row = fake_row(spec, 10.0)
    row.update(p10_ms=8.0, kernel_ms=6.0, layout_ms=2.0,
               kernels=[{"name": "c", "median_ms": 6.0, "layout": False}, {"name": "t", "median_ms": 2.0, "layout": True}])
    from oplat.graph import Kernel

    kernel = Kernel(spec, ("c",))
    assert Predictor([row], stat="median").kernel_cost(kernel).compute_ms == pytest.approx(6.0)
    cost = Predictor([row], stat="p10").kernel_cost(kernel)
    assert cost.compute_ms == pytest.approx(8.0 * 6.0 / 8.0) and cost.layout_ms == pytest.approx(8.0 * 2.0 / 8.0)
    with pytest.raises(OplatError, match="unknown statistic"):
        Predictor([row], stat="mean")


def test_calibrated_prediction_uses_the_composition():
    rows = _rows_for(SMALL)
    comp = {"fp32": Composition(compute=2.0, const_ms=1.0, networks=5, fit_mape_pct=1.0)}
    pred = Predictor(rows, composition=comp, source="fake").predict(model_from_arch(SMALL))
    assert pred.calibrated and pred.total_ms == pytest.approx(2 * pred.compute_ms + 1.0)


TINY_SPACE = {"name": "tiny", "scale": 3, "in_h": 24, "in_w": 32, "depth_min": 1, "depth_max": 3,
              "channels": [8, 16, 24], "channel_align": 8, "residuals": ["anchor", "none"]}


@pytest.fixture(scope="module")
def small_table(tmp_path_factory):
    """A real cpu table holding every kernel of a tiny search space's networks."""
    space = space_from_dict(TINY_SPACE)
    specs = set()
    for precision in ("fp32", "int8"):
        for arch in sample_networks(space, 60, seed=5):
            specs.update(arch_ops(arch, precision))
    out = tmp_path_factory.mktemp("t") / "tiny.jsonl"
    specs = sorted(specs, key=lambda s: s.key)
    measure_specs(specs, get_device("cpu"), opset="tiny", out=out, policy=TimingPolicy.quick(), progress=False)
    return space, out


def test_calibrate_then_validate_on_real_onnxruntime(small_table):
    space, table = small_table
    predictor = Predictor.from_table(table)
    comps = calibrate(predictor=predictor, device=get_device("cpu"), space=space, precisions=["fp32", "int8"],
                      networks=4, seed=1000, policy=TimingPolicy.quick(), progress=False)
    assert set(comps) == {"fp32", "int8"} and all(c.networks == 4 for c in comps.values())
    stored = json.loads(compose_path(table).read_text())
    assert set(stored["composition"]) == {"fp32", "int8"} and len(stored["networks"]["fp32"]) == 4
    again = Predictor.from_table(table)
    assert again.composition["fp32"] == comps["fp32"]
    report = validate(predictor=again, device=get_device("cpu"), space=space, precision="fp32",
                      networks=3, seed=0, policy=TimingPolicy.quick(), progress=False)
    assert report.calibrated and 1 <= len(report.results) <= 3
    calibration_archs = {n["arch"] for n in stored["networks"]["fp32"]}
    assert not calibration_archs & {r.arch for r in report.results}
    for r in report.results:
        assert r.predicted_ms > 0 and r.measured_ms > 0 and np.isfinite(r.error_pct)
        assert r.measured_share == 1.0  # every kernel of these networks is in the table
    kerr = report.kernel_errors()
    assert kerr["conv+relu"][1] > 0  # the whole-network profile was attributed to kernels
    # The measured side is the networks' wall times split by their profiles: it adds up.
    assert sum(m for _, m, _ in kerr.values()) == pytest.approx(sum(r.measured_ms for r in report.results), rel=1e-9)
    again_report = ValidationReport.from_dict(json.loads(json.dumps(report.as_dict())))
    assert {op: v[:2] for op, v in again_report.kernel_errors().items()} == {op: v[:2] for op, v in kerr.items()}
    md = report_markdown(again_report, device="cpu", space=space.name, table=str(table), seed=0)
    assert f"within ±10%: {report.share_within(10):.0f}%" in md and "| conv+relu" in md


def test_validate_refuses_a_table_of_another_device(small_table, tmp_path):
    space, table = small_table
    rows = [json.loads(line) for line in table.read_text().splitlines()]
    for row in rows:
        row["device"]["threads"] = 4
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(OplatError, match="threads=4.*--device"):
        validate(predictor=Predictor.from_table(other), device=get_device("cpu"), space=space, precision="fp32",
                 networks=1, policy=TimingPolicy.quick(), progress=False)


def test_predict_cli(small_table, cli, tmp_path):
    space, table = small_table
    arch = sample_networks(space, 1, seed=3)[0]
    path = tmp_path / "net.onnx"
    onnx.save(model_from_arch(arch), path)
    r = cli("predict", str(path), "--table", str(table))
    assert r.code == 0, r.err
    assert "predicted latency (p10):" in r.out and "peak activation memory" in r.out and "measured" in r.out
    r = cli("predict", str(path), "--table", str(table), "--format", "json")
    data = json.loads(r.out)
    assert data["predicted_ms"] > 0 and data["params"] > 0 and data["kernels"][0]["source"] in ("measured", "predicted")
    assert abs(sum(k["compute_ms"] for k in data["kernels"]) - data["compute_ms"]) < 1e-9


def test_predict_cli_bad_inputs(small_table, cli, tmp_path):
    from conftest import assert_one_line_error

    _, table = small_table
    big = ArchSpec(scale=2, in_h=24, in_w=32, layers=(Layer(8), Layer(12)))
    path = tmp_path / "x2.onnx"
    onnx.save(model_from_arch(big), path)
    assert_one_line_error(cli("predict", str(path), "--table", str(table)), "concat of 4", "to the op set")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    assert_one_line_error(cli("predict", str(junk), "--table", str(table)), "not a readable ONNX model")


def test_pair_model_runs_and_fusion_verdicts_are_measured():
    import onnxruntime as ort

    from oplat.build import inputs_for
    from oplat.fusion import detect_fusions, model_from_pair

    a = OpSpec("conv", 8, 16, 16, c_out=8, kernel=3)
    b = OpSpec("add", 8, 16, 16)
    model = model_from_pair(a, b)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, inputs_for(model))
    assert y.shape == (1, 8, 16, 16)
    verdicts = detect_fusions(get_device("cpu"), "fp32", h=32, w=32, policy=TimingPolicy.quick())
    assert set(verdicts) == {"conv+relu", "conv+add"}
    for v in verdicts.values():
        assert v.a_ms > 0 and v.b_ms > 0 and v.ab_ms > 0 and v.b_share >= 0
        assert v.to_json()["fused"] == (v.b_share < 0.5)
        assert FusionVerdict.from_json(json.loads(json.dumps(v.to_json()))) == v
    # ORT folds a ReLU into the conv before it (the profile of A→B has no Relu kernel);
    # a lone Add after a conv stays its own kernel. Structural, so no timing noise.
    assert verdicts["conv+relu"].fused and verdicts["conv+relu"].b_kernels == ()
    assert not verdicts["conv+add"].fused and verdicts["conv+add"].b_kernels


def test_fusion_verdict_without_a_profiler_falls_back_to_timings():
    from oplat.fusion import FusionVerdict

    assert FusionVerdict("conv+add", "fp32", 10.0, 2.0, 10.2, "s").fused  # 10% of B remains
    assert not FusionVerdict("conv+add", "fp32", 10.0, 2.0, 11.9, "s").fused


def test_fused_verdict_discounts_the_add_after_a_conv():
    rows = _rows_for(SMALL)
    # b_share (ab - a) / b = (10.5 - 10) / 2 = 0.25: a timing verdict (no profiler)
    fusion = {"fp32": {"conv+add": FusionVerdict("conv+add", "fp32", 10.0, 2.0, 10.5, "s")}}
    plain = Predictor(rows, source="fake").predict(model_from_arch(SMALL))
    fused = Predictor(rows, fusion=fusion, source="fake").predict(model_from_arch(SMALL))
    add_plain = next(k for k in plain.kernels if k.kernel.spec.op == "add")
    add_fused = next(k for k in fused.kernels if k.kernel.spec.op == "add")
    assert set(add_fused.kernel.after) == {"conv", "concat"}
    assert add_fused.compute_ms == pytest.approx(0.25 * add_plain.compute_ms)
    assert "fused into the preceding conv" in add_fused.basis
    concat = next(k for k in fused.kernels if k.kernel.spec.op == "concat")
    assert concat.compute_ms == next(k for k in plain.kernels if k.kernel.spec.op == "concat").compute_ms


def test_cli_stat_choices_are_the_predictors():
    from oplat.cli import STAT_CHOICES
    from oplat.predict import STATS

    assert set(STAT_CHOICES) == set(STATS)


def test_composition_fit_needs_a_gain_beyond_one_standard_error():
    """Kernel sums with ±10% noise (plus a constant too small to tell from it): across 20
    draws of 8 networks, a term bought with a gain inside the noise would be kept in 5;
    the one-standard-error rule keeps the plain sum in all but the 2 draws whose noise
    happens to line up."""
    extra = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        samples = []
        for _ in range(8):
            f = {"compute_ms": rng.uniform(100, 1000), "layout_ms": 0.0, "boundary_melem": 6.912}
            samples.append((f, f["compute_ms"] * rng.uniform(0.90, 1.10) + 8.0))
        c = fit_composition(samples)
        extra += (c.compute, c.boundary_per_melem_ms, c.const_ms) != (1.0, 0.0, 0.0)
    assert extra <= 2


def test_calibrate_keeps_what_it_measured_when_a_later_step_fails(small_table, tmp_path):
    """The FP32 fit is written even when the INT8 step then fails, and the message says
    which step failed (the litert INT8 failure once left no composition file at all)."""
    space, table = small_table
    fp32_only = tmp_path / "fp32.jsonl"
    fp32_only.write_text("".join(l + "\n" for l in table.read_text().splitlines() if '"precision":"int8"' not in l))
    predictor = Predictor.from_table(fp32_only)
    with pytest.raises(OplatError, match=r"calibrate failed at the int8 networks .*no int8 .*results so far \(fp32\)"):
        calibrate(predictor=predictor, device=get_device("cpu"), space=space, precisions=["fp32", "int8"],
                  networks=3, seed=1000, policy=TimingPolicy.quick(), progress=False)
    stored = json.loads(compose_path(fp32_only).read_text())
    assert set(stored["composition"]) == {"fp32"} and len(stored["networks"]["fp32"]) == 3
    assert Predictor.from_table(fp32_only).composition["fp32"].networks == 3


def test_off_grid_validation_prices_by_neighbours_and_reports_apart(small_table):
    """Networks at an input size and widths the op set does not hold: every conv is a
    neighbour estimate (measured share < 1), and the report says it is off the grid."""
    from oplat.validate import off_grid_space

    space, table = small_table
    two = space_from_dict({"name": "tiny2", "scale": 3, "in_h": 24, "in_w": 32, "depth_min": 1, "depth_max": 3,
                           "channels": [8, 24], "channel_align": 8, "residuals": ["anchor", "none"]})
    off = off_grid_space(two)
    assert off.channels == (16,) and (off.in_h, off.in_w) == (16, 24) and off.name == "tiny2-offgrid"
    report = validate(predictor=Predictor.from_table(table), device=get_device("cpu"), space=two, precision="fp32",
                      networks=3, seed=0, policy=TimingPolicy.quick(), progress=False, off_grid=True)
    assert report.off_grid and report.results
    assert all(r.measured_share < 1.0 for r in report.results)
    again = ValidationReport.from_dict(json.loads(json.dumps(report.as_dict())))
    assert again.off_grid and again.refused == report.refused
    assert "OFF THE GRID" in report_markdown(report, device="cpu", space=off.name, table=str(table), seed=0)
    with pytest.raises(OplatError, match="no widths between"):
        off_grid_space(space)


def test_a_network_too_far_from_the_table_is_refused_not_priced(small_table):
    from oplat.validate import _predictable

    space, table = small_table
    far = space_from_dict({"name": "far", "scale": 3, "in_h": 384, "in_w": 512, "depth_min": 1, "depth_max": 1,
                           "channels": [16], "channel_align": 8, "residuals": ["none"]})
    archs = sample_networks(far, 1, seed=0)
    ok, refused = _predictable(archs, Predictor.from_table(table), "fp32")
    assert ok == [] and len(refused) == 1 and "too far to extrapolate" in refused[0]["reason"]


# ---------------------------------------------------------------------- channel tiles
def _tiled_rows(tile: int, precision: str = "fp32", ops: tuple[str, ...] = ("conv+relu",)) -> list[dict]:
    """conv3x3 rows (of each of ``ops``) whose time is MACs with the output channels padded
    to ``tile`` (as a runtime with ``tile``-lane vectors runs them), on a grid of channel
    counts."""
    from oplat.spec import OpSpec

    rows = []
    for c in (8, 16, 24, 32, 40, 48, 56, 64):
        for c_out in (8, 16, 24, 32, 40, 48, 56, 64):
            for (h, w), op in itertools.product(((90, 160), (180, 320)), ops):
                s = OpSpec(op, c=c, h=h, w=w, c_out=c_out, kernel=3, precision=precision)
                padded = -(-c_out // tile) * tile
                rows.append({"schema_version": 1, "key": s.key, "spec": s.as_dict(), "label": s.label(), "status": "ok",
                             "device": {"name": "fake"}, "median_ms": s.macs / c_out * padded / 1e9})
    return rows


@pytest.mark.parametrize("tile", [1, 16, 32])
def test_channel_tile_is_inferred_from_the_table(tile):
    """A conv family whose rows cost padded work reveals its tile: an off-grid 36- or
    20-channel conv is priced at its padded work (a tile-less neighbour model misses them by
    up to 15–25 %), and a family without padding keeps the plain per-MAC model."""
    from oplat.graph import Kernel
    from oplat.spec import OpSpec

    predictor = Predictor(_tiled_rows(tile), source="fake")
    for c_out in (20, 36, 60):
        spec = OpSpec("conv+relu", c=32, h=120, w=240, c_out=c_out, kernel=3, precision="fp32")
        cost = predictor.kernel_cost(Kernel(spec=spec, nodes=("conv",)))
        truth = spec.macs / c_out * (-(-c_out // tile) * tile) / 1e9
        assert cost.source == "predicted" and cost.compute_ms == pytest.approx(truth, rel=0.02), (c_out, cost.basis)
        assert (f"padded to {tile}s" in cost.basis) == (tile > 1)


def test_leave_one_out_leaves_a_rows_twin_out_too():
    """INT8 conv and conv+relu of one shape time the same kernel, so a table holds both
    at every point: leaving one row out must leave its twin out too, or the twin prices it
    and every tile seems to fit (the tile is inferred from these errors)."""
    for tile in (1, 16):
        once = Predictor(_tiled_rows(tile, "int8", ("conv+relu",)), source="fake")
        twice = Predictor(_tiled_rows(tile, "int8", ("conv", "conv+relu")), source="fake")
        [family_once] = [f for k, f in once._families.items() if k[0] == "conv+relu"]
        family_twice = [e for k, f in sorted(twice._families.items(), key=repr) for e in f]
        wrong = 17 - tile  # the other tile: a rate law these rows do not follow
        assert once._loo_error(family_once, tile) == twice._loo_error(family_twice, tile) == pytest.approx(0, abs=1e-9)
        # a twin standing in (weight 20 at distance 0) hid the misfit: 0.021 against 0.09
        assert twice._loo_error(family_twice, wrong) == pytest.approx(once._loo_error(family_once, wrong), rel=0.1)
        assert once._loo_error(family_once, wrong) > 0.05


def test_int8_twins_off_the_grid_are_priced_alike_whichever_asks():
    """A twin's family, tile and neighbours do not depend on which twin is priced: on the
    committed cpu table an off-grid 36→36 INT8 conv was priced at 67.1 ms as conv+relu and
    47.3 ms as conv (the family's rows in another order tipped its tile from 1 to 32);
    the network's 36→36 convs ran about 43 ms each at 272×480."""
    from pathlib import Path

    from oplat.graph import Kernel
    from oplat.spec import OpSpec

    predictor = Predictor.from_table(Path(__file__).resolve().parents[1] / "results" / "cpu" / "sr-core.jsonl")
    costs = [predictor.kernel_cost(Kernel(spec=OpSpec(op, c=36, h=272, w=480, c_out=36, kernel=3, precision="int8"), nodes=("conv",)))
             for op in ("conv", "conv+relu")]
    assert costs[0].compute_ms == pytest.approx(costs[1].compute_ms, rel=1e-9) and costs[0].basis == costs[1].basis


def _conv_prelu_model(prelu: bool) -> onnx.ModelProto:
    """x(16 ch) -> conv 16→32 -> PRelu or Relu -> conv 32→16 -> y, at 24×32."""
    rng = np.random.default_rng(0)
    inits = [
        onnx.numpy_helper.from_array(rng.standard_normal((32, 16, 3, 3)).astype(np.float32) * 0.1, "w1"),
        onnx.numpy_helper.from_array(np.zeros(32, np.float32), "b1"),
        onnx.numpy_helper.from_array(rng.standard_normal((16, 32, 3, 3)).astype(np.float32) * 0.1, "w2"),
        onnx.numpy_helper.from_array(np.zeros(16, np.float32), "b2"),
        onnx.numpy_helper.from_array(np.full((32, 1, 1), 0.25, np.float32), "slope"),
    ]
    act = helper.make_node("PRelu", ["t", "slope"], ["a"], name="act") if prelu else helper.make_node("Relu", ["t"], ["a"], name="act")
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["t"], name="conv1", pads=[1, 1, 1, 1]),
        act,
        helper.make_node("Conv", ["a", "w2", "b2"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 24, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 24, 32])
    g = helper.make_graph(nodes, "g", [x], [y], initializer=inits if prelu else inits[:4])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _ort_row(spec, compute: float, reorder_in: float, reorder_out: float) -> dict:
    """A cpu (ORT) row whose lone-op profile shows the conv run blocked: a ReorderInput
    and a ReorderOutput around it (median statistic: these are the prices)."""
    row = fake_row(spec, compute, reorder_in + reorder_out)
    row["device"] = {"name": "cpu", "runtime": "onnxruntime", "options": {"graph_optimization": "all", "threads": 1}}
    row["kernels"] = [
        {"name": "r_in", "op_type": "ReorderInput", "median_ms": reorder_in, "layout": True},
        {"name": "k", "op_type": "Conv", "median_ms": compute, "layout": False},
        {"name": "r_out", "op_type": "ReorderOutput", "median_ms": reorder_out, "layout": True},
    ]
    return row


def test_reorders_inside_the_network_are_priced_where_ort_runs_them():
    """ORT keeps its blocked NCHWc layout between a conv and a fused Relu and the next
    conv, but reorders to NCHW and back around a PRelu (no NCHWc kernel): read from ORT's
    own optimized graph, the predictor charges exactly those reorders, each at the lone
    row's ReorderInput / ReorderOutput share."""
    from oplat.backends.ort import inner_reorders

    chain, prelu = _conv_prelu_model(False), _conv_prelu_model(True)
    assert inner_reorders(chain).count == 2  # the graph input in, the graph output out
    plan = inner_reorders(prelu)
    assert plan.count == 4 and "t" in plan.outputs and plan.inputs.get("a") == 1

    rows = []
    for model, first in ((chain, (0.1, 0.2)), (prelu, (0.1, 0.2))):
        for kernel in net_graph(model).kernels:
            spec = kernel.spec
            if spec.op in ("conv", "conv+relu"):
                rin, rout = first if spec.c == 16 else (0.4, 0.8)
                rows.append(_ort_row(spec, 1.0, rin, rout))
            else:  # the PRelu: a node kernel without reorders
                row = fake_row(spec, 0.5)
                row["device"] = rows[0]["device"]
                rows.append(row)
    predictor = Predictor(rows, stat="median")
    a, b = predictor.predict(chain), predictor.predict(prelu)
    assert a.reorder_ms == pytest.approx(0.1 + 0.8)  # conv1's input, conv2's output
    assert b.reorder_ms == pytest.approx(0.1 + 0.2 + 0.4 + 0.8)  # and both around the PRelu
    assert a.total_ms == pytest.approx(a.compute_ms + 0.9) and not a.calibrated
    assert "4 in-network reorders / transposes from ONNX Runtime's optimized graph" in b.reorder_note
    assert a.layout_ms == b.layout_ms == pytest.approx(1.5)  # lone-op reorders: all of them, never added
    # a NetGraph alone has no model for ORT to optimize: said, not guessed
    assert predictor.predict(net_graph(prelu)).reorder_ms == 0.0
    assert "not priced" in predictor.predict(net_graph(prelu)).reorder_note
    # another runtime's table: nothing is read from ORT
    other = Predictor([{**r, "device": {"name": "fake"}} for r in rows], stat="median")
    assert other.predict(prelu).reorder_ms == 0.0 and other.predict(prelu).reorder_note == ""


def test_composition_files_from_before_reorders_were_priced_weigh_them_zero():
    """A fit scales the priced sum (compute + in-network reorders) as one; a stored fit
    without the term absorbed the reorders in its compute scale and must not add them."""
    assert Composition.from_json({"compute": 1.03, "const_ms": 0.0}).reorder == 0.0
    samples = [({"compute_ms": c, "reorder_ms": r, "layout_ms": 0.0, "boundary_melem": 1.0}, 1.2 * (c + r))
               for c, r in [(10, 1), (20, 4), (30, 2), (40, 8), (50, 5), (60, 3)]]
    comp = fit_composition(samples)
    assert comp.compute == pytest.approx(1.2) and comp.reorder == comp.compute
    assert comp.total(samples[3][0]) == pytest.approx(1.2 * 48)


def test_a_fit_from_before_reorders_were_priced_says_it_leaves_them_out():
    from oplat.report.prediction import composition_text

    model = _conv_prelu_model(True)
    rows = []
    for kernel in net_graph(model).kernels:
        row = _ort_row(kernel.spec, 1.0, 0.1, 0.2) if kernel.spec.op == "conv" else fake_row(kernel.spec, 0.5)
        row["device"] = _ort_row(kernel.spec, 1.0, 0.1, 0.2)["device"]
        rows.append(row)
    legacy = {"fp32": Composition.from_json({"compute": 1.0, "networks": 8, "fit_mape_pct": 1.0})}
    pred = Predictor(rows, composition=legacy, stat="median").predict(model)
    assert pred.reorder_ms > 0 and pred.total_ms == pytest.approx(pred.compute_ms)
    assert "fitted before in-network reorders were priced" in composition_text(pred)
    fresh = Predictor(rows, composition={"fp32": Composition(networks=8, fit_mape_pct=1.0)}, stat="median").predict(model)
    assert fresh.total_ms == pytest.approx(fresh.compute_ms + fresh.reorder_ms)
    assert "fitted before" not in composition_text(fresh)


def test_narrow_tails_are_their_own_family():
    """ORT times a conv to 1–4 outputs by its input channels alone (FP32 64→1 like 64→4),
    so a 48→2 tail is priced from the narrow rows, not at the per-MAC rate of wide ones,
    which keep their tile (an off-grid 36-wide conv stays priced at its 48-padded work)."""
    from oplat.graph import Kernel

    rows = _tiled_rows(16)
    for c in (16, 32, 64):  # narrow tails: time by input channels only
        for c_out in (1, 3, 4):
            s = OpSpec("conv+relu", c=c, h=180, w=320, c_out=c_out, kernel=3, precision="fp32")
            rows.append(fake_row(s, c * 0.01))
    for c in (1, 2):  # tiny heads: 40× the padded per-MAC time, 2× more per input channel
        for c_out in (16, 32, 64):
            s = OpSpec("conv+relu", c=c, h=180, w=320, c_out=c_out, kernel=3, precision="fp32")
            rows.append(fake_row(s, 40 * s.macs / 1e9 * (2 if c == 1 else 1)))
    predictor = Predictor(rows, source="fake")
    tail = OpSpec("conv+relu", c=48, h=180, w=320, c_out=2, kernel=3, precision="fp32")
    cost = predictor.kernel_cost(Kernel(spec=tail, nodes=("tail",)))
    assert cost.source == "predicted" and "→1" in cost.basis and "→16" not in cost.basis
    assert cost.compute_ms == pytest.approx(0.48, rel=0.35)  # the wide per-MAC rate says 0.0008 ms
    wide = OpSpec("conv+relu", c=32, h=120, w=240, c_out=36, kernel=3, precision="fp32")
    cost = predictor.kernel_cost(Kernel(spec=wide, nodes=("conv",)))
    assert cost.compute_ms == pytest.approx(wide.macs / 36 * 48 / 1e9, rel=0.02) and "padded to 16s" in cost.basis
    empty = Predictor(_tiled_rows(16), source="fake")  # no narrow rows: refused, naming what to add
    with pytest.raises(Exception, match="4 or fewer outputs"):
        empty.kernel_cost(Kernel(spec=tail, nodes=("tail",)))


def test_the_committed_cpu_tables_tiny_rows_leave_the_wide_families_tiles_alone():
    """sr-core's tiny-channel heads (1–2 inputs) sit in the head family of 3→c convs, and
    narrow tails in their own: every wide conv family of the committed cpu table keeps
    the channel tile its rows show without them (with them voting, INT8 conv+relu went
    from 16 to 1 and off-grid 52–60-wide INT8 convs would be priced unpadded)."""
    from pathlib import Path

    from oplat.table import read_table

    rows = read_table(Path(__file__).resolve().parents[1] / "results" / "cpu" / "sr-core.jsonl").rows
    tiny = {r.key for r in rows if r.ok and r.spec.op in ("conv", "conv+relu") and (r.spec.c < 3 or (r.spec.c_out or 99) <= 4)}
    assert len(tiny) >= 30  # the op set's tiny heads and narrow tails were measured
    full, wide = Predictor(rows), Predictor([r for r in rows if r.key not in tiny])
    keys = [k for k in wide._families if k[0] in ("conv", "conv+relu")]
    assert keys and {k: full._tile((k,)) for k in keys} == {k: wide._tile((k,)) for k in keys}
    assert any(wide._tile((k,)) > 1 for k in keys)


def _conv_model(c_in: int, c_out: int, k: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weight = onnx.numpy_helper.from_array(rng.standard_normal((c_out, c_in, k, k)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[k // 2] * 4)], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_the_nchwc_rule_is_what_onnx_runtime_does_on_this_host(tmp_path):
    """oplat's NCHWc rule (which FP32 convs ORT blocks, at which padded channels) against
    the weights of the NCHWc conv in ORT's own optimized graph, for channel pairs on and
    off the block, 1×1 and 3×3."""
    import onnxruntime as ort

    from oplat.backends.ort import nchwc_block, nchwc_channels
    from oplat.fingerprint import cpu_isa

    block = nchwc_block(cpu_isa())
    if block is None:
        pytest.skip("this CPU has no AVX2: ORT's MLAS runs no NCHWc convs here")
    seen = set()
    for c_in, c_out in [(1, 16), (3, 27), (5, 5), (7, 16), (8, 3), (10, 10), (11, 30), (12, 12), (14, 14), (16, 1),
                        (20, 20), (27, 27), (28, 28), (30, 27), (36, 36), (60, 60), (64, 27)]:
        for k in (1, 3):
            so = ort.SessionOptions()
            so.optimized_model_filepath = str(tmp_path / "opt.onnx")
            ort.InferenceSession(_conv_model(c_in, c_out, k).SerializeToString(), so, providers=["CPUExecutionProvider"])
            optimized = onnx.load(so.optimized_model_filepath)
            weights = {t.name: tuple(t.dims) for t in optimized.graph.initializer}
            conv = next(n for n in optimized.graph.node if n.op_type == "Conv")
            ran = (weights[conv.input[1]][1], weights[conv.input[1]][0]) if conv.domain == "com.microsoft.nchwc" else None
            assert nchwc_channels(c_in, c_out, block) == ran, (c_in, c_out, k)
            seen.add(ran is None)
    assert seen == {True, False}  # both regimes were met


def test_fp32_convs_are_priced_at_the_channels_ort_pads_them_to():
    """ORT computes a 28→28 FP32 conv as 32→32 (its NCHWc block is 8 here): left out of
    the committed cpu table, that row is priced from the 32-wide rows within 5 % (by plain
    MACs it was 0.86×), while 27→27, which ORT runs plain, is priced from plain rows only."""
    from pathlib import Path

    from oplat.graph import Kernel
    from oplat.table import read_table

    rows = read_table(Path(__file__).resolve().parents[1] / "results" / "cpu" / "sr-core.jsonl").rows
    if "avx2" not in rows[0].device.get("cpu_isa", "").split():
        pytest.skip("the committed cpu table is not of an AVX2 host")
    row = next(r for r in rows if r.ok and r.spec.op == "conv+relu" and r.spec.precision == "fp32"
               and (r.spec.c, r.spec.c_out, r.spec.h) == (28, 28, 360))
    predictor = Predictor([r for r in rows if r.key != row.key])
    assert predictor.channels(row.spec) == ((32, 32), "nchwc")
    cost = predictor.kernel_cost(Kernel(spec=row.spec, nodes=("c",), inputs=(), outputs=()))
    assert cost.source == "predicted" and "32→32" in cost.basis
    assert 0.95 < (cost.compute_ms + cost.layout_ms) / row.stat_ms("p10") < 1.05
    plain = OpSpec("conv+relu", c=27, h=272, w=480, c_out=27, kernel=3, precision="fp32")
    assert predictor.channels(plain) == ((27, 27), "plain")
    family = predictor._families[predictor.family(plain)]
    assert family and all(predictor.channels(s)[1] == "plain" for s, _ in family)


def test_int8_convs_split_by_output_channels_in_eights():
    """ORT's INT8 convs (QLinearConv, NHWC) run output channels that are not a multiple of
    8 at their own, slower rate whatever the input (28→28 at 30 µs per 16-padded MMAC,
    28→48 at 22, like 32→48): 16→16 left out of the committed cpu table was priced 2.3×
    its row from the 12-wide ones when a multiple of 4 was "aligned"; now within 15 %."""
    from pathlib import Path

    from oplat.graph import Kernel
    from oplat.table import read_table

    rows = read_table(Path(__file__).resolve().parents[1] / "results" / "cpu" / "sr-core.jsonl").rows
    int8 = lambda c, c_out: OpSpec("conv+relu", c=c, h=360, w=640, c_out=c_out, kernel=3, precision="int8")  # noqa: E731
    full = Predictor(rows)
    assert full.family(int8(28, 28)) != full.family(int8(32, 32))
    assert full.family(int8(28, 48)) == full.family(int8(32, 48)) == full.family(int8(24, 24))
    left_out = {int8(16, 16).key, *(t.key for t in int8(16, 16).twins)}
    row = next(r for r in rows if r.key == int8(16, 16).key)
    cost = Predictor([r for r in rows if r.key not in left_out]).kernel_cost(
        Kernel(spec=int8(16, 16), nodes=("c",), inputs=(), outputs=()))
    assert cost.source == "predicted" and "→12 " not in cost.basis
    assert 0.85 < (cost.compute_ms + cost.layout_ms) / row.stat_ms("p10") < 1.15


def test_a_table_whose_rows_contradict_the_nchwc_rule_is_priced_by_plain_macs():
    """The rule is taken only where the table's own profiles agree with it (another ORT,
    optimizations off): one 32→32 FP32 row that ran plain turns it off."""
    spec = OpSpec("conv+relu", c=32, h=90, w=160, c_out=32, kernel=3, precision="fp32")
    row = fake_row(spec, 5.0) | {"device": {"name": "cpu", "runtime": "onnxruntime", "cpu_isa": "avx2 fma"}}
    blocked = [{"name": "y_nchwc", "op_type": "Conv", "median_ms": 4.6, "layout": False},
               {"name": "ReorderOutput", "op_type": "ReorderOutput", "median_ms": 0.4, "layout": True}]
    assert Predictor([row | {"kernels": blocked}]).channels(spec)[1] == "nchwc"
    ran_plain = [{"name": "Conv_0", "op_type": "FusedConv", "median_ms": 5.0, "layout": False}]
    assert Predictor([row | {"kernels": ran_plain}]).channels(spec) == ((32, 32), None)



def _with_a_row_of_1ms(table, tmp_path):
    """(a copy of ``table`` with one more row of at least 1 ms — the only kind drift checks
    re-time —, that row's spec)."""
    import shutil

    copy = tmp_path / "tiny.jsonl"
    shutil.copy(table, copy)
    big = OpSpec("conv+relu", c=16, h=180, w=320, c_out=16, kernel=3, precision="fp32")
    measure_specs([big], get_device("cpu"), opset="tiny", out=copy, policy=TimingPolicy.quick(), progress=False,
                  accept_drift=True)
    return copy, big


def test_validate_re_times_table_rows_among_the_networks_and_reports_drift(small_table, tmp_path):
    """A table holds for the window it was measured in: validate re-times a few of its
    rows (those of at least 1 ms) in every batch, interleaved with the networks, and the
    report says how far they moved; beyond 10 % it says DRIFT and that the errors include it."""
    space, table = small_table
    copy, _ = _with_a_row_of_1ms(table, tmp_path)
    report = validate(predictor=Predictor.from_table(copy), device=get_device("cpu"), space=space, precision="fp32",
                      networks=2, seed=0, policy=TimingPolicy.quick(), progress=False)
    assert len(report.drift) == 1 and 0.3 < report.drift[0] < 3.0  # the one row of >= 1 ms, once per batch
    again = ValidationReport.from_dict(json.loads(json.dumps(report.as_dict())))
    assert again.drift == report.drift
    md = report_markdown(again, device="cpu", space=space.name, table=str(copy), seed=0)
    assert "table drift: 1 re-timings of the table's rows, interleaved with the networks" in md
    slow = ValidationReport.from_dict({**report.as_dict(), "drift": [1.31, 1.24, 1.40]})
    steady = ValidationReport.from_dict({**report.as_dict(), "drift": [1.04, 0.97, 1.02]})
    assert slow.drifted and not steady.drifted
    assert "DRIFT: more than 10 % off" in report_markdown(slow, device="cpu", space="tiny", table="t", seed=0)
    assert "DRIFT" not in report_markdown(steady, device="cpu", space="tiny", table="t", seed=0)


def test_calibrate_refuses_a_fit_while_the_table_s_rows_have_drifted(small_table, tmp_path, cli):
    """A fit made while the machine runs unlike the table's window would absorb the move
    (a scale of 2× for a table measured on a faster day). Calibrate re-times the table's
    rows among its networks and refuses that fit, one line saying why, keeping nothing
    fitted on drifted timings. Here the table's one row of >= 1 ms is edited to half its
    measured time, as a table of another window would hold it."""
    space, table = small_table
    copy, big = _with_a_row_of_1ms(table, tmp_path)
    rows = [json.loads(line) for line in copy.read_text().splitlines() if line.strip()]
    for row in rows:
        if row["key"] == big.key:
            for field in ("median_ms", "p10_ms", "p90_ms", "mean_ms"):
                row[field] = row[field] / 2
            row["samples_ms"] = [t / 2 for t in row["samples_ms"]]
            row["round_medians_ms"] = [t / 2 for t in row["round_medians_ms"]]
            row["kernel_ms"] = row["kernel_ms"] / 2 if row.get("kernel_ms") else row.get("kernel_ms")
            row["layout_ms"] = row["layout_ms"] / 2 if row.get("layout_ms") else row.get("layout_ms")
            for k in row.get("kernels", []):
                k["median_ms"] /= 2
    copy.write_text("".join(json.dumps(r) + "\n" for r in rows))
    space_file = tmp_path / "tiny.toml"
    space_file.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in TINY_SPACE.items()))  # JSON values are TOML
    r = cli("calibrate", "--device", "cpu", "--table", str(copy), "--space", str(space_file), "--precision", "fp32",
            "--networks", "3", "--no-progress")
    assert r.code != 0 and "Traceback" not in r.err
    assert "fp32 drift check" in r.err and "× their table p10" in r.err and "re-measure the table" in r.err
    stored = compose_path(copy)
    assert not stored.exists() or "fp32" not in json.loads(stored.read_text()).get("composition", {})


def _reprice_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "reprice.py"
    spec = importlib.util.spec_from_file_location("reprice", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_committed_cpu_validate_reports_are_still_priced_as_reported(precision):
    """The committed in-grid networks run only measured kernels: re-priced by today's
    predictor from the same table (``benchmarks/reprice.py``; in-network reorders as the
    report planned them), each comes out at the prediction its report holds, so a
    predictor change cannot move the sr-core validate figures without this failing."""
    from dataclasses import replace
    from pathlib import Path

    from oplat.validate import ValidationReport

    root = Path(__file__).resolve().parents[1] / "results"
    report = ValidationReport.from_dict(json.loads((root / "validate" / "cpu" / f"abpn-{precision}.json").read_text()))
    assert len(report.results) >= 30
    # every FP32 network; 4 INT8 ones (quantizing one at 360×640 takes 4–5 s here)
    before = report if precision == "fp32" else replace(report, results=report.results[::10])
    after = _reprice_module().reprice(before, Predictor.from_table(root / "cpu" / "sr-core.jsonl", stat=before.stat))
    assert len(after.results) == len(before.results)
    for old, new in zip(before.results, after.results):
        assert new.measured_ms == old.measured_ms and new.predicted_ms == pytest.approx(old.predicted_ms, rel=1e-6), old.arch
    assert after.share_within(5) == before.share_within(5) == 100.0


@pytest.mark.parametrize("slow", [1.0, 1.6])
def test_int8_channel_alignment_is_read_from_the_tables_own_rows(slow):
    """Whether INT8 widths that are multiples of 4 but not 8 price like aligned or like
    odd ones depends on the CPU (ORT on AVX2 without VNNI: 28→28 1.6× slower per MAC than
    32→32; with VNNI at the aligned rate): the table's rows, left out one at a time,
    decide. Rows where such widths run ``slow``× per MAC split INT8 families by c_out % 8."""
    from oplat.spec import OpSpec

    rows = []
    for c, c_out in itertools.product(range(8, 68, 4), repeat=2):
        s = OpSpec("conv+relu", c=c, h=90, w=160, c_out=c_out, kernel=3, precision="int8")
        rate = slow if c_out % 8 else 1.0
        rows.append({"schema_version": 1, "key": s.key, "spec": s.as_dict(), "label": s.label(), "status": "ok",
                     "device": {"name": "fake"}, "median_ms": s.macs * rate / 1e9})
    predictor = Predictor(rows, source="fake")
    assert predictor._int8_align == (8 if slow > 1 else 4)
    spec = OpSpec("conv+relu", c=36, h=120, w=240, c_out=44, kernel=3, precision="int8")
    from oplat.graph import Kernel

    cost = predictor.kernel_cost(Kernel(spec=spec, nodes=("conv",)))
    assert cost.compute_ms == pytest.approx(spec.macs * slow / 1e9, rel=0.05)


def test_the_committed_cpu_table_splits_int8_convs_in_eights():
    """The AMD EPYC (AVX2, no VNNI) cpu table: INT8 convs split by c_out % 8 (left out one
    at a time, its INT8 conv rows are priced better so: median error 2.9 % vs 3.4 %)."""
    from pathlib import Path

    predictor = Predictor.from_table(Path(__file__).resolve().parents[1] / "results" / "cpu" / "sr-core.jsonl")
    assert predictor._int8_align == 8
