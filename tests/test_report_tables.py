"""`oplat table` for reviewers: machine formats, --stat, --group, HTML documents, flags."""

from __future__ import annotations

import csv
import io
import json
import math
from html.parser import HTMLParser

import pytest

from conftest import REPO
from oplat.records import Row
from oplat.report.provenance import provenance_line
from oplat.report.tables import family, render_tables, review_table, runtime_kernel
from oplat.table import read_table

CPU = REPO / "results" / "cpu" / "sr-core.jsonl"
OPENVINO = REPO / "results" / "openvino" / "sr-core.jsonl"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Two small tables cut from the committed ones: every 3×3 conv at 180×320, the adds
    and the concats, cpu and openvino (the same keys, the openvino file in another order)."""
    out = tmp_path_factory.mktemp("tables")
    keep = []
    for line in CPU.read_text().splitlines():
        spec = json.loads(line)["spec"]
        if spec["op"] in ("add", "concat") or (spec["op"] == "conv" and spec["kernel"] == 3 and spec["h"] == 180):
            keep.append(json.loads(line)["key"])
    paths = []
    for src in (CPU, OPENVINO):
        lines = [l for l in src.read_text().splitlines() if json.loads(l)["key"] in keep]
        if src is OPENVINO:
            lines.reverse()
        path = out / f"{src.parent.name}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


def test_machine_formats_are_numbers_with_key_and_device(cli, small):
    cpu, ov = small
    r = cli("table", str(cpu), "--format", "json")
    assert r.code == 0, r.err
    rows = json.loads(r.out)
    assert rows and all(isinstance(d["key"], str) and d["device"] == "cpu" for d in rows)
    for d in rows:
        assert d["op"] in ("conv", "add", "concat") and d["precision"] in ("fp32", "int8")
        assert isinstance(d["c"], int) and isinstance(d["h"], int) and isinstance(d["w"], int)
        for name in ("median_ms", "p10_ms", "p90_ms", "mean_ms", "std_ms", "latency_ms"):
            assert isinstance(d[name], float) and math.isfinite(d[name]), name
        assert isinstance(d["noisy"], bool) and isinstance(d["macs"], int)
        assert (d["gmac_s"] is None) == (d["macs"] == 0)
    r = cli("table", str(cpu), str(ov), "--format", "json")
    both = json.loads(r.out)
    assert {d["key"] for d in both} == {d["key"] for d in rows}
    for d in both:
        assert d["cpu.device"] == "cpu" and d["openvino.device"] == "openvino"
        assert isinstance(d["cpu.p10_ms"], float) and isinstance(d["openvino.p10_ms"], float)
        assert d["openvino/cpu"] == pytest.approx(d["openvino.p10_ms"] / d["cpu.p10_ms"])
        assert isinstance(d["cpu.noisy"], bool)
    r = cli("table", str(cpu), str(ov), "--format", "csv")
    records = list(csv.DictReader(io.StringIO(r.out)))
    assert len(records) == len(both)
    for rec in records:
        assert rec["key"] and rec["cpu.device"] == "cpu" and rec["openvino.device"] == "openvino"
        float(rec["cpu.p10_ms"]), float(rec["openvino/cpu"]), int(rec["macs"])  # numbers, not "12.3 ± 0.4"
    r = cli("table", str(cpu), "--format", "csv")
    records = list(csv.DictReader(io.StringIO(r.out)))
    assert all(rec["device"] == "cpu" and float(rec["mean_ms"]) > 0 and float(rec["std_ms"]) >= 0 for rec in records)


def test_stat_changes_the_numbers(cli, small):
    cpu, ov = small
    p10 = json.loads(cli("table", str(cpu), str(ov), "--format", "json").out)
    median = json.loads(cli("table", str(cpu), str(ov), "--format", "json", "--stat", "median").out)
    by_key = {d["key"]: d for d in median}
    assert len(p10) == len(median)
    for d in p10:
        m = by_key[d["key"]]
        assert d["cpu.p10_ms"] <= m["cpu.median_ms"] and d["openvino.p10_ms"] <= m["openvino.median_ms"]
    assert any(d["cpu.p10_ms"] < by_key[d["key"]]["cpu.median_ms"] for d in p10)
    # the header names the statistic; the single table's GMAC/s follow it too
    r = cli("table", str(cpu), str(ov), "--stat", "median")
    assert "cpu median [ms]" in r.out and "openvino median [ms]" in r.out and "cpu p10 [ms]" not in r.out
    assert "cpu p10 [ms]" in cli("table", str(cpu), str(ov)).out
    single = {s: json.loads(cli("table", str(cpu), "--format", "json", "--stat", s).out) for s in ("p10", "median", "p90")}
    for a, b, c in zip(single["p10"], single["median"], single["p90"]):
        assert a["latency_ms"] == a["p10_ms"] and b["latency_ms"] == b["median_ms"] and c["latency_ms"] == c["p90_ms"]
        assert a["latency_ms"] <= b["latency_ms"] <= c["latency_ms"]
        if a["macs"]:
            assert a["gmac_s"] == pytest.approx(a["macs"] / (a["p10_ms"] * 1e-3) / 1e9) and a["gmac_s"] >= b["gmac_s"]


def test_group_keeps_families_together_with_the_geomean_ratio(cli, small):
    cpu, ov = small
    records = json.loads(cli("table", str(cpu), str(ov), "--format", "json", "--group").out)
    families = [r["family"] for r in records]
    assert set(families) == {"conv3x3", "add", "concat"}
    # every family is one contiguous run, in the documented order, its summary first
    runs = [f for i, f in enumerate(families) if i == 0 or families[i - 1] != f]
    assert runs == ["conv3x3", "add", "concat"]
    for name in runs:
        group = [r for r in records if r["family"] == name]
        assert group[0]["record"] == "group" and group[0]["key"] == f"group:{name}"
        rows = [r for r in group if r["record"] == "row"]
        assert group[0]["rows"] == len(rows) and all(r["record"] == "row" for r in group[1:])
        ratios = [r["openvino/cpu"] for r in rows]
        expected = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
        assert group[0]["openvino/cpu"] == pytest.approx(expected, rel=1e-12)
        # inside a family: precision, then shape
        keys = [(r["precision"] != "fp32", r["c"], r["h"], r["w"], r["c_out"] or 0, r["arity"] or 0) for r in rows]
        assert keys == sorted(keys)
    # the text formats show the same: a geo-mean line per family, conv3x3 rows together
    text = cli("table", str(cpu), str(ov), "--format", "github", "--group").out
    lines = [l for l in text.splitlines() if l.startswith("| conv3x3") or l.startswith("| add") or l.startswith("| concat")]
    conv = [i for i, l in enumerate(lines) if l.startswith("| conv3x3")]
    assert conv == list(range(conv[0], conv[0] + len(conv))) and "geo-mean of" in lines[conv[0]]
    geo = float(lines[conv[0]].strip("|").split("|")[-1])
    assert geo == pytest.approx(records[0]["openvino/cpu"], abs=0.005)
    # a single table groups too (no ratios there)
    single = json.loads(cli("table", str(cpu), "--format", "json", "--group").out)
    fams = [r["family"] for r in single]
    assert fams == sorted(fams, key=["conv3x3", "add", "concat"].index)


class _Doc(HTMLParser):
    def __init__(self):
        super().__init__()
        self.decl, self.tags, self.text, self.attrs = None, [], [], []

    def handle_decl(self, decl):
        self.decl = decl

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def test_html_is_a_full_document_with_provenance(cli, small):
    cpu, ov = small
    r = cli("table", str(cpu), str(ov), "--format", "html", "--group")
    assert r.code == 0, r.err
    doc = _Doc()
    doc.feed(r.out)
    doc.close()
    assert doc.decl and doc.decl.lower() == "doctype html"
    assert doc.tags[:2] == ["html", "head"] and "body" in doc.tags and "table" in doc.tags
    assert any(tag == "meta" and a.get("charset", "").lower() == "utf-8" for tag, a in doc.attrs)
    assert "style" in doc.tags and "link" not in doc.tags and "script" not in doc.tags
    for tag, a in doc.attrs:  # nothing fetched from anywhere
        assert not any(str(v).startswith(("http:", "https:", "//")) for k, v in a.items() if k in ("src", "href")), (tag, a)
    text = "".join(doc.text)
    for path in (cpu, ov):
        table = read_table(path)
        assert provenance_line(table.device, measured_between=table.measured_between, stat="p10", source=str(path)) in text
    assert text.index("table " + str(cpu)) < text.index("geo-mean of")  # provenance above the table
    # numbers right-aligned, family lines marked
    assert 'class="num"' in r.out and '<tr class="group">' in r.out


def test_numbers_are_right_aligned_in_text_formats(cli, small):
    cpu, ov = small
    md = cli("table", str(cpu), str(ov), "--format", "markdown").out
    header, rule = [l for l in md.splitlines() if l.startswith("|")][:2]
    names = [h.strip() for h in header.strip("|").split("|")]
    aligns = [c.strip() for c in rule.strip("|").split("|")]
    for name, align in zip(names, aligns):
        numeric = name.endswith(("[ms]", "GMAC/s", "[M]")) or "/" in name
        assert align.endswith(":") == numeric, (name, align)
    term = cli("table", str(cpu), "--op", "conv").out.splitlines()
    body = [l for l in term if "conv3x3" in l]
    head = next(l for l in term if "Median [ms]" in l)
    end = head.index("Median [ms]") + len("Median [ms]")
    assert all(l[end - 1] != " " and l[end] == " " for l in body)  # each median ends under its header's end


def test_noisy_flag_appears_for_noisy_rows(cli, small):
    cpu, ov = small
    rows = {r.key: r for r in read_table(cpu).rows}
    ov_rows = {r.key: r for r in read_table(ov).rows}
    assert any(r.noisy for r in rows.values()) and any(not r.noisy for r in rows.values())
    records = json.loads(cli("table", str(cpu), str(ov), "--format", "json").out)
    for d in records:
        assert d["cpu.noisy"] == rows[d["key"]].noisy and d["openvino.noisy"] == ov_rows[d["key"]].noisy
    review = review_table([read_table(cpu), read_table(ov)])
    col = review.headers.index("Noisy")
    for record, cells in zip(review.records, review.cells):
        flagged = cells[col].split(", ") if cells[col] else []
        assert ("cpu" in flagged) == rows[record["key"]].noisy and ("openvino" in flagged) == ov_rows[record["key"]].noisy
    single = review_table([read_table(cpu)])
    status = single.headers.index("Status")
    for record, cells in zip(single.records, single.cells):
        assert cells[status].startswith("noisy (rounds ±") == record["noisy"] == rows[record["key"]].noisy


def test_runtime_kernel_names_the_runtimes_kernels(cli, small):
    cpu, ov = small
    text = cli("table", str(ov), "--op", "conv").out
    assert "Runtime kernel" in text and ("jit_avx2_I8" in text or "brgconv" in text)
    records = json.loads(cli("table", str(cpu), "--format", "json").out)
    int8_conv = [d for d in records if d["op"] == "conv" and d["precision"] == "int8"]
    assert int8_conv and all(d["runtime_kernel"] == "QLinearConv" for d in int8_conv)
    # layout nodes (reorders, transposes) are left out; no profile: nothing to show
    row = read_table(ov).rows[0]
    assert all(node["exec_type"] not in runtime_kernel(row).split("+") for node in row.kernels if node["layout"])
    bare = Row.from_json({k: v for k, v in row.data.items() if k not in ("kernels", "kernel_ms", "layout_ms")})
    assert runtime_kernel(bare) == ""


def test_family_names():
    assert family({"op": "conv", "kernel": 3}) == "conv3x3"
    assert family({"op": "conv", "kernel": 1}) == "conv1x1"
    assert family({"op": "conv+relu", "kernel": 3}) == "conv+relu"
    assert family({"op": "resize", "mode": "bilinear"}) == "resize bilinear"
    assert family({"op": "depth_to_space", "block": 2}) == "depth_to_space"


def test_committed_tables_render_in_every_format():
    tables = [read_table(CPU), read_table(OPENVINO)]
    for fmt in ("terminal", "markdown", "github", "html", "csv", "json"):
        for group in (False, True):
            assert render_tables(tables, fmt=fmt, group=group)
    records = json.loads(render_tables(tables, fmt="json", group=True))
    assert {r["family"] for r in records if r["record"] == "group"} == {
        "conv3x3", "conv1x1", "conv+relu", "add", "concat", "resize nearest", "resize bilinear", "relu", "clip",
        "depth_to_space",
    }


def test_side_by_side_of_two_hosts_says_so(cli, tmp_path):
    import json

    from conftest import write_opset

    opset = write_opset(tmp_path / "t.toml", '[[entry]]\nop = "relu"\nc = 2\n', hw="[[8, 8]]")
    a = tmp_path / "a.jsonl"
    assert cli("measure", "--opset", str(opset), "--out", str(a), "--quick-policy", "--no-progress").code == 0
    rows = [json.loads(l) for l in a.read_text().splitlines()]
    for r in rows:
        r["device"]["cpu"] = "Another CPU"
    b = tmp_path / "b.jsonl"
    b.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = cli("table", str(a), str(b))
    assert r.code == 0 and "measured on different hosts" in r.err
    assert "different hosts" not in cli("table", str(a), str(a)).err
