"""oplat.attribution: a runtime's profiled nodes, renamed, fused and folded, land on the
kernels of the prediction they ran (the split validate and seed_nets compare with)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from oplat.arch import ABPN, model_from_arch
from oplat.attribution import attribute_profile, kernel_type
from oplat.predict import Predictor
from test_search import fake_rows, tiny_space


def _node(name: str, op_type: str, ms: float, layout: bool = False) -> dict:
    return {"name": name, "op_type": op_type, "exec_type": "", "median_ms": ms, "layout": layout}


def test_profiled_nodes_land_on_their_kernels():
    arch = ABPN.with_input(24, 32)
    pred = Predictor(fake_rows(tiny_space(channels=(8, 16, 24, 28, 32), channel_align=4)), source="fake").predict(model_from_arch(arch))
    kinds = {kernel_type(c.kernel.spec, "fp32") for c in pred.kernels}
    assert {"conv+relu", "conv", "add"} <= kinds
    profile = SimpleNamespace(nodes=[
        _node("conv0_nchwc", "Conv", 1.0),             # ORT's suffix: conv0, a conv+relu
        _node("Multiply_13485", "Convolution", 2.0),   # OpenVINO's own name: the first conv no node is named after
        _node("add_anchor", "FusedConv", 4.0),         # a conv named after the Add it absorbed: the conv upstream
        _node("Reorder_1", "Reorder", 8.0, layout=True),
        _node("mystery", "Foo", 16.0),
    ])
    out = attribute_profile(pred, profile, "fp32")
    assert out["conv+relu"][1] == pytest.approx(3.0)
    assert out["conv"][1] == pytest.approx(4.0)  # conv4, the linear tail conv feeding the anchor Add
    assert out["add"][1] == 0.0 and out["add"][0] > 0  # absorbed: predicted, nothing measured under its name
    assert out["(layout)"] == [0.0, 8.0] and out["(unattributed)"] == [0.0, 16.0]
    assert sum(p for p, _ in out.values()) == pytest.approx(pred.compute_ms)
    assert attribute_profile(pred, None, "fp32").keys() == kinds


def test_kernel_type_names_float_islands():
    spec = SimpleNamespace(kind="PRelu", op="onnx", precision="fp32")
    assert kernel_type(spec, "fp32") == "PRelu"
    assert kernel_type(spec, "int8") == "PRelu (fp32)"
    assert kernel_type(SimpleNamespace(op="conv+relu", precision="int8"), "int8") == "conv+relu"
