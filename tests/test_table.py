from __future__ import annotations

import json

import pytest

from oplat.errors import OplatError
from oplat.spec import OpSpec
from oplat.records import Row
from oplat.table import SCHEMA_VERSION, TableWriter, read_table


def _row(c: int, median: float = 1.0, status: str = "ok") -> Row:
    return Row.from_json(_row_json(c, median, status))


def _row_json(c: int, median: float = 1.0, status: str = "ok") -> dict:
    spec = OpSpec("relu", c, 4, 4)
    return {
        "schema_version": SCHEMA_VERSION,
        "key": spec.key,
        "spec": spec.as_dict(),
        "status": status,
        "device": {"name": "cpu"},
        "median_ms": median,
    }


def test_roundtrip_and_last_row_wins(tmp_path):
    path = tmp_path / "t.jsonl"
    with TableWriter(path) as w:
        w.append(_row(1))
        w.append(_row(2))
        w.append(_row(1, median=5.0))
    table = read_table(path)
    assert len(table.rows) == 3
    assert table.latest()[OpSpec("relu", 1, 4, 4).key].stats.median_ms == 5.0


def test_torn_last_line_is_tolerated_and_cut_before_appending(tmp_path, capsys):
    path = tmp_path / "t.jsonl"
    with TableWriter(path) as w:
        w.append(_row(1))
    with open(path, "a") as f:
        f.write(json.dumps(_row_json(2))[:25])  # a write cut short by a kill
    table = read_table(path)
    assert len(table.rows) == 1 and table.torn_tail
    assert "torn last line" in capsys.readouterr().err
    with TableWriter(path) as w:
        w.append(_row(3))
    table = read_table(path)
    assert [r.spec.c for r in table.rows] == [1, 3] and not table.torn_tail


@pytest.mark.parametrize(
    "line, needle",
    [
        ("{not json", "corrupt table line"),
        ('["a list"]', "must be a JSON object"),
        ('{"key": "x"}', "row lacks"),
    ],
)
def test_corrupt_line_in_the_middle_names_file_and_line(tmp_path, line, needle):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(_row_json(1)) + "\n" + line + "\n" + json.dumps(_row_json(2)) + "\n")
    with pytest.raises(OplatError) as info:
        read_table(path)
    assert f"{path}:2" in str(info.value) and needle in str(info.value)


def test_key_must_match_spec_and_schema_version(tmp_path):
    path = tmp_path / "t.jsonl"
    bad = _row_json(1)
    bad["key"] = OpSpec("relu", 2, 4, 4).key
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(OplatError, match="key does not match"):
        read_table(path)
    old = _row_json(1)
    old["schema_version"] = 0
    path.write_text(json.dumps(old) + "\n")
    with pytest.raises(OplatError, match="schema_version"):
        read_table(path)


def test_unwritable_path_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OplatError, match="cannot write table .* --out"):
        TableWriter(blocker / "sub" / "t.jsonl")


def test_missing_table_says_so(tmp_path):
    with pytest.raises(OplatError, match="no such table file"):
        read_table(tmp_path / "nope.jsonl")


def test_setup_diff_compares_cpu_isa_only_when_both_rows_have_it():
    from oplat.fingerprint import setup_diff

    old = {"name": "cpu", "cpu": "AMD EPYC"}
    avx2 = {**old, "cpu_isa": "avx2 fma"}
    vnni = {**old, "cpu_isa": "avx2 fma avx512f avx512_vnni"}
    assert setup_diff(old, avx2, ("name", "cpu", "cpu_isa")) is None  # a row from before cpu_isa existed
    assert setup_diff(avx2, vnni, ("name", "cpu", "cpu_isa")) == ("cpu_isa='avx2 fma'", "cpu_isa='avx2 fma avx512f avx512_vnni'")
