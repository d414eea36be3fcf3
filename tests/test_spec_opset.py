from __future__ import annotations

import pytest

from oplat.errors import OplatError
from oplat.opset import builtin_opsets, load_opset
from oplat.spec import OpSpec

from conftest import write_opset


def test_spec_key_is_canonical_and_roundtrips():
    a = OpSpec("conv", 8, 16, 16, c_out=16, kernel=3)
    b = OpSpec.from_dict(a.as_dict())
    assert a == b and a.key == b.key
    assert OpSpec("conv", 8, 16, 16, c_out=16, kernel=3, precision="int8").key != a.key
    assert '"kernel":3' in a.key and "block" not in a.key


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(op="depth_to_space", c=28, h=8, w=8, block=3), "divisible by 9"),
        (dict(op="conv", c=8, h=8, w=8, kernel=3), "c_out"),
        (dict(op="conv", c=8, h=8, w=8, c_out=8, kernel=2), "odd"),
        (dict(op="resize", c=3, h=8, w=8, mode="bicubic", scale=2), "mode"),
        (dict(op="add", c=3, h=8, w=8, kernel=3), "takes no kernel"),
        (dict(op="pool", c=3, h=8, w=8), "unknown op"),
        (dict(op="relu", c=3, h=0, w=8), "h must be a positive integer"),
        (dict(op="relu", c=3, h=8, w=8, precision="int4"), "unknown precision"),
    ],
)
def test_impossible_specs_say_why(kwargs, needle):
    with pytest.raises(OplatError, match=needle):
        OpSpec(**kwargs)


def test_shapes_and_work():
    d2s = OpSpec("depth_to_space", 27, 10, 20, block=3)
    assert d2s.output_shape == (1, 3, 30, 60)
    conv = OpSpec("conv+relu", 28, 360, 640, c_out=28, kernel=3)
    assert conv.macs == 28 * 28 * 9 * 360 * 640
    assert OpSpec("concat", 3, 4, 4, arity=9).output_shape == (1, 27, 4, 4)


def test_sr_core_covers_the_brief():
    specs = load_opset("sr-core").specs
    ops = {s.op for s in specs}
    assert {"conv", "conv+relu", "add", "concat", "resize", "relu", "clip", "depth_to_space"} <= ops
    assert {s.precision for s in specs} == {"fp32", "int8"}
    body = {s.c for s in specs if s.op == "conv+relu" and s.c == s.c_out}
    assert {8, 16, 32, 64} <= body
    assert {12, 27, 48} <= {s.c_out for s in specs if s.op == "conv"}
    assert (360, 640) in {(s.h, s.w) for s in specs} and (180, 320) in {(s.h, s.w) for s in specs}
    assert {(m, k) for s in specs if s.op == "resize" for m, k in [(s.mode, s.scale)]} == {
        (m, k) for m in ("nearest", "bilinear") for k in (2, 3, 4)
    }
    assert {s.kernel for s in specs if s.op == "conv"} == {1, 3}
    assert len({s.key for s in specs}) == len(specs)


def test_builtins_resolve_by_name_and_path(tmp_path):
    assert {"sr-core", "quick"} <= set(builtin_opsets())
    path = write_opset(tmp_path / "mine.toml", '[[entry]]\nop = "relu"\nc = [4, 8]\n')
    s = load_opset(str(path))
    assert s.name == "mine" and [x.c for x in s.specs] == [4, 8]
    assert [x.precision for x in load_opset("quick", precisions=["int8"]).specs] == ["int8"] * len(
        load_opset("quick", precisions=["int8"]).specs
    )


def test_grid_expansion(tmp_path):
    path = write_opset(
        tmp_path / "g.toml",
        '[[entry]]\nop = ["conv", "conv+relu"]\nkernel = 3\nchannels = [8, 16]\nhw = [[8, 8], [4, 4]]\n',
        precisions='["fp32", "int8"]',
    )
    specs = load_opset(str(path)).specs
    assert len(specs) == 2 * 2 * 2 * 2
    assert all(s.c == s.c_out for s in specs)


@pytest.mark.parametrize(
    "body, needles",
    [
        ("[[entry]\nop = 'relu'", ["malformed TOML"]),
        ('[[entry]]\nop = "softmax"\nc = 3\n', ["entry 1 (softmax)", "unknown op"]),
        ('[[entry]]\nop = "relu"\nc = 3\ncolour = 1\n', ["entry 1 (relu)", "unknown field(s) colour"]),
        ('[[entry]]\nop = "depth_to_space"\nc = 28\nblock = 3\n', ["entry 1 (depth_to_space)", "divisible by 9"]),
        ('[[entry]]\nop = "relu"\nc = 3\nhw = [[8]]\n', ["hw must be"]),
        ('[[entry]]\nc = 3\n', ["missing field 'op'"]),
        ('[[entry]]\nop = "relu"\n', ["missing field 'c'"]),
        ('[[entry]]\nop = "relu"\nc = "eight"\n', ["c must be a positive integer"]),
    ],
)
def test_bad_opset_files_name_file_entry_and_problem(tmp_path, body, needles):
    path = write_opset(tmp_path / "bad.toml", body)
    with pytest.raises(OplatError) as info:
        load_opset(str(path))
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message


def test_unknown_opset_name_lists_builtins():
    with pytest.raises(OplatError, match="built-in sets: .*sr-core"):
        load_opset("no-such-set")
