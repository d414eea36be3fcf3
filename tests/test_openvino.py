"""The openvino device (skipped where the extra is not installed)."""

from __future__ import annotations

import pytest

pytest.importorskip("openvino")

from oplat.devices import get_device  # noqa: E402
from oplat.measure import measure_specs  # noqa: E402
from oplat.spec import OpSpec  # noqa: E402
from oplat.table import read_table  # noqa: E402
from oplat.timing import TimingPolicy  # noqa: E402


def test_openvino_rows_have_explicit_f32_and_layer_counters(tmp_path):
    out = tmp_path / "ov.jsonl"
    specs = [
        OpSpec("conv+relu", 16, 32, 32, c_out=16, kernel=3),
        OpSpec("conv+relu", 16, 32, 32, c_out=16, kernel=3, precision="int8"),
    ]
    measure_specs(specs, get_device("openvino"), opset="t", out=out, policy=TimingPolicy.quick(), progress=False)
    latest = {k: r.to_json() for k, r in read_table(out).latest().items()}
    fp32, int8 = (latest[s.key] for s in specs)
    for row in (fp32, int8):
        assert row["status"] == "ok" and row["median_ms"] > 0
        assert row["device"]["runtime"] == "openvino" and row["device"]["options"]["precision"] == "f32"
        assert row["kernel_ms"] > 0
        assert any(k["layout"] and k["op_type"] == "Reorder" for k in row["kernels"])
    assert any("f32" in k["exec_type"] for k in fp32["kernels"] if k["op_type"] == "Convolution")
    assert not any("bf16" in k["exec_type"] for k in fp32["kernels"])
    assert any("I8" in k["exec_type"].upper() for k in int8["kernels"] if k["op_type"] == "Convolution")
