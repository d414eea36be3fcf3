"""measure_specs on real ONNX Runtime: rows, fingerprint, resume, failures, relations."""

from __future__ import annotations

import pytest

import oplat.measure as measure_mod
from oplat.devices import get_device
from oplat.errors import OplatError
from oplat.measure import measure_specs
from oplat.spec import OpSpec
from oplat.table import read_table
from oplat.timing import TimingPolicy

QUICK = TimingPolicy.quick()


def _specs():
    return [
        OpSpec("conv+relu", 8, 16, 16, c_out=8, kernel=3),
        OpSpec("conv", 8, 16, 16, c_out=8, kernel=3, precision="int8"),
        OpSpec("add", 8, 16, 16),
        OpSpec("depth_to_space", 27, 8, 8, block=3, precision="int8"),
    ]


def test_rows_are_self_describing(tmp_path):
    out = tmp_path / "t.jsonl"
    summary = measure_specs(_specs(), get_device("cpu"), opset="t", out=out, policy=QUICK, progress=False)
    assert summary.measured == 4 and summary.already == 0
    rows = [r.to_json() for r in read_table(out).rows]
    # Rows are written as each entry's timing becomes final: every entry once, in any order.
    assert sorted(r["key"] for r in rows) == sorted(s.key for s in _specs())
    for row in rows:
        assert row["status"] == "ok"
        assert 0 < row["p10_ms"] <= row["median_ms"] <= row["p90_ms"]
        assert len(row["samples_ms"]) * row["inner"] == row["runs"]
        dev = row["device"]
        assert dev["runtime"] == "onnxruntime" and dev["threads"] == 1
        for field in ("cpu", "os", "oplat_version", "runtime_version"):
            assert dev[field]
        assert row["opset"] == "t" and row["measured_at"]
    by_key = {r["key"]: r for r in rows}
    conv = by_key[_specs()[0].key]
    assert conv["kernel_ms"] > 0 and "layout_ms" in conv
    assert any(not k["layout"] and k["op_type"] == "Conv" for k in conv["kernels"])
    int8_conv = by_key[_specs()[1].key]
    assert any(k["op_type"] == "QLinearConv" for k in int8_conv["kernels"])


def test_resume_skips_measured_keys(tmp_path):
    out = tmp_path / "t.jsonl"
    specs = _specs()
    measure_specs(specs[:2], get_device("cpu"), opset="t", out=out, policy=QUICK, progress=False)
    summary = measure_specs(specs, get_device("cpu"), opset="t", out=out, policy=QUICK, progress=False)
    assert summary.already == 2 and summary.measured == 2
    keys = [r.key for r in read_table(out).rows]
    assert sorted(keys) == sorted(s.key for s in specs) and len(keys) == len(set(keys))


def test_a_failing_entry_writes_an_error_row_and_the_run_goes_on(tmp_path, monkeypatch):
    real_build = measure_mod.model_from_op
    bad = _specs()[2]

    def build(spec):
        model = real_build(spec)
        if spec == bad:  # a model the runtime rejects: an input name no node consumes
            model.graph.node[0].input[0] = "nowhere"
        return model

    monkeypatch.setattr(measure_mod, "model_from_op", build)
    out = tmp_path / "t.jsonl"
    summary = measure_specs(_specs(), get_device("cpu"), opset="t", out=out, policy=QUICK, progress=False)
    rows = {k: r.to_json() for k, r in read_table(out).latest().items()}
    assert summary.errors == 1
    assert rows[bad.key]["status"] == "error" and rows[bad.key]["message"]
    assert all(r["status"] == "ok" for k, r in rows.items() if k != bad.key)
    # error rows count as finished unless --retry-errors
    monkeypatch.setattr(measure_mod, "model_from_op", real_build)
    again = measure_specs(_specs(), get_device("cpu"), opset="t", out=out, policy=QUICK, progress=False)
    assert again.measured == 0
    retried = measure_specs(
        _specs(), get_device("cpu"), opset="t", out=out, policy=QUICK, progress=False, retry_errors=True
    )
    assert retried.measured == 1 and read_table(out).latest()[bad.key].status == "ok"


def test_setups_do_not_mix_in_one_table(tmp_path):
    out = tmp_path / "t.jsonl"
    measure_specs(_specs()[:1], get_device("cpu"), opset="t", out=out, policy=QUICK, progress=False)
    with pytest.raises(OplatError, match="threads=1.*threads=2.*--out"):
        measure_specs(
            _specs(), get_device("cpu").with_options(threads=2), opset="t", out=out, policy=QUICK, progress=False
        )


def _median(spec, device="cpu", **opts):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/t.jsonl"
        measure_specs([spec], get_device(device).with_options(**opts), opset="t", out=out, policy=QUICK, progress=False)
        return read_table(out).rows[0].to_json()


def test_wide_conv_is_slower_than_narrow_conv():
    wide = _median(OpSpec("conv", 64, 64, 64, c_out=64, kernel=3))["median_ms"]
    narrow = _median(OpSpec("conv", 8, 64, 64, c_out=8, kernel=3))["median_ms"]
    assert wide > 4 * narrow  # 64× the MACs; 4× leaves a wide margin for noise and overheads


def test_int8_conv_runs_as_qlinearconv_and_is_faster_than_fp32_where_the_cpu_has_vnni():
    """QDQ conv fuses into QLinearConv. With VNNI (Intel Xeon here) it runs 3× faster than
    FP32; on AVX2 without VNNI (the AMD EPYC reference host) ORT's u8×s8 kernels run about
    as fast as FP32 (43.9 vs 44.8 ms at this shape on 2026-12-04), never much slower."""
    fp32 = _median(OpSpec("conv", 64, 180, 320, c_out=64, kernel=3))
    int8 = _median(OpSpec("conv", 64, 180, 320, c_out=64, kernel=3, precision="int8"))
    assert any(k["op_type"] == "QLinearConv" for k in int8["kernels"])
    if "vnni" in int8["device"].get("cpu_isa", ""):
        assert int8["median_ms"] < 0.8 * fp32["median_ms"]
    else:
        assert int8["median_ms"] < 1.5 * fp32["median_ms"]


def test_time_networks_interleaves_a_batch_and_keeps_its_order():
    """Several whole networks timed together: one result per model, in order, each with
    its own profile; the wide network is the slower one whichever position it has."""
    from oplat.build import model_from_op
    from oplat.measure import time_networks

    narrow = model_from_op(OpSpec("conv", 8, 64, 64, c_out=8, kernel=3))
    wide = model_from_op(OpSpec("conv", 64, 64, 64, c_out=64, kernel=3))
    cpu = get_device("cpu")
    for order in ((narrow, wide), (wide, narrow)):
        t1, t2 = time_networks(list(order), cpu, QUICK, profile=True)
        assert t1.profile is not None and t2.profile is not None and t1.profile.compute_ms > 0
        assert t1.rounds == t2.rounds == QUICK.rounds or t1.noisy or t2.noisy
        assert (t1.spread_pct <= QUICK.agree_pct) == (not t1.noisy) and (t2.spread_pct <= QUICK.agree_pct) == (not t2.noisy)
        slow, fast = (t2, t1) if order[0] is narrow else (t1, t2)
        assert slow.stats.median_ms > 4 * fast.stats.median_ms
