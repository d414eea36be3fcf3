"""Review pages: figures (data in, Figure out), self-contained HTML, a real headless browser."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import REPO, run_python

CPU = REPO / "results" / "cpu" / "sr-core.jsonl"
OPENVINO = REPO / "results" / "openvino" / "sr-core.jsonl"
VALIDATE = [REPO / "results" / "validate" / "cpu" / "abpn-fp32.json", REPO / "results" / "validate" / "cpu" / "abpn-int8.json"]
CHROMIUM = Path("/usr/bin/chromium")


def test_report_without_matplotlib_says_how_to_install(tmp_path):
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"  # import matplotlib -> ImportError
        "from oplat.cli import main\n"
        f"sys.exit(main(['report', {str(CPU)!r}, '--out', {str(tmp_path / 'p.html')!r}]))\n"
    )
    r = run_python(code)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'oplat[report]'" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "p.html").exists()
    # the tables stay usable without it, html included
    code = code.replace("['report', ", "['table', ").replace(f", '--out', {str(tmp_path / 'p.html')!r}", ", '--format', 'html'")
    assert run_python(code).returncode == 0


#: The figures and pages need the report extra; the install-hint test above runs without it.
needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                                      reason="the report extra (matplotlib) is not installed")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Small cpu and openvino tables cut from the committed ones (3×3 convs at 180×320, adds)."""
    out = tmp_path_factory.mktemp("tables")
    paths = []
    for src in (CPU, OPENVINO):
        lines = []
        for line in src.read_text().splitlines():
            spec = json.loads(line)["spec"]
            if spec["op"] == "add" or (spec["op"] == "conv" and spec["kernel"] == 3 and spec["h"] == 180):
                lines.append(line)
        path = out / f"{src.parent.name}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


# ---------------------------------------------------------------- figures
@needs_matplotlib
def test_figures_are_figures_made_without_pyplot():
    code = """
import sys
from matplotlib.figure import Figure
from oplat.report import figures as F
figs = [
    F.latency_vs_macs([F.LatencyPoint("conv3x3", "fp32", 1e8, 2.0, 1e6), F.LatencyPoint("add", "int8", 0, 0.3, 3e5)]),
    F.ratio_heatmap([("conv3x3 →8 fp32", "8×180×320", 1.5), ("add fp32", "2× 8×180×320", 0.5)]),
    F.predicted_vs_measured([("fp32", [(100.0, 101.0), (200.0, 190.0)])]),
    F.kernel_breakdown([("conv", 3.0, False), ("add", 1.0, True)]),
    F.pareto_front([dict(latency_ms=10, quality=1, feasible=True, on_front=True)], budget_ms=20),
]
assert all(isinstance(f, Figure) for f in figs)
for f in figs:
    assert F.png_bytes(f)[:8] == b"\\x89PNG\\r\\n\\x1a\\n" and F.svg_text(f).lstrip().startswith("<?xml")
assert "matplotlib.pyplot" not in sys.modules, "figures must not touch pyplot"
print("ok")
"""
    r = run_python(code)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@needs_matplotlib
def test_svg_is_reproducible():
    from oplat.report import figures as F

    make = lambda: F.kernel_breakdown([("conv3x3 8→8", 3.0, False), ("add c8", 1.0, True)], title="t")  # noqa: E731
    assert F.svg_text(make()) == F.svg_text(make())


@needs_matplotlib
def test_pareto_front_draws_budget_front_and_greys_infeasible():
    from matplotlib.colors import to_hex

    from oplat.report.figures import pareto_front

    points = [
        dict(latency_ms=10.0, quality=1.0, feasible=True, on_front=True, label="a"),
        dict(latency_ms=20.0, quality=2.0, feasible=True, on_front=True),
        dict(latency_ms=25.0, quality=1.5, feasible=True, on_front=False),
        dict(latency_ms=60.0, quality=3.0, feasible=False, on_front=False),
    ]
    fig = pareto_front(points, budget_ms=40.0, quality_label="capacity proxy")
    ax = fig.axes[0]
    budget = [l for l in ax.lines if list(l.get_xdata()) == [40.0, 40.0]]
    assert budget and budget[0].get_linestyle() == "--"
    labels = {c.get_label(): c for c in ax.collections}
    grey = labels["infeasible (1)"]
    assert to_hex(grey.get_facecolor()[0]) == "#b0b0b0" and grey.get_offsets().tolist() == [[60.0, 3.0]]
    assert labels["Pareto front (2)"].get_offsets().tolist() == [[10.0, 1.0], [20.0, 2.0]]
    assert ax.get_ylabel() == "capacity proxy" and any(t.get_text() == "a" for t in ax.texts)
    assert pareto_front([], budget_ms=None).axes  # no trials yet: an empty figure, not an error


@needs_matplotlib
def test_predicted_vs_measured_has_identity_and_bands():
    from oplat.report.figures import predicted_vs_measured

    fig = predicted_vs_measured([("cpu fp32", [(104.0, 100.0), (186.0, 200.0), (360.0, 300.0)])], stat="p10")
    ax = fig.axes[0]
    identity = next(l for l in ax.lines if l.get_label() == "predicted = measured")
    assert list(identity.get_xdata()) == pytest.approx(list(identity.get_ydata()))
    bands = {c.get_label() for c in ax.collections}
    assert {"±5 %", "±10 %"} <= bands
    assert any("33% within ±5%, 67% within ±10%" in label for label in bands)
    assert ax.get_xscale() == ax.get_yscale() == "log" and "p10" in ax.get_xlabel()


@needs_matplotlib
def test_kernel_breakdown_marks_predicted_kernels():
    from oplat.report.figures import kernel_breakdown

    fig = kernel_breakdown([("conv3x3 3→28", 11.0, False), ("conv3x3 28→30", 39.0, True), ("add c27", 1.0, False)])
    ax = fig.axes[0]
    bars = ax.patches[:3]
    assert [b.get_width() for b in bars] == [11.0, 39.0, 1.0]
    assert [bool(b.get_hatch()) for b in bars] == [False, True, False]
    assert [t.get_text().strip() for t in ax.texts] == ["11.00 ms", "39.00 ms  PREDICTED", "1.00 ms"]


@needs_matplotlib
def test_ratio_heatmap_places_each_ratio():
    from oplat.report.figures import ratio_heatmap

    cells = [("conv fp32", "8×180×320", 2.0), ("conv fp32", "16×180×320", 0.5), ("add fp32", "8×180×320", 1.0)]
    fig = ratio_heatmap(cells, a_label="cpu", b_label="openvino")
    grid = fig.axes[0].images[0].get_array()
    assert grid[0, 0] == 2.0 and grid[0, 1] == 0.5 and grid[1, 0] == 1.0 and bool(grid.mask[1, 1])
    assert "openvino / cpu" in fig.axes[1].get_ylabel()  # the colour bar says which way round


# ---------------------------------------------------------------- pages
class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.decl, self.starts, self.text, self.h2 = None, [], [], []
        self._in_h2 = False

    def handle_decl(self, decl):
        self.decl = decl

    def handle_starttag(self, tag, attrs):
        self.starts.append((tag, dict(attrs)))
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag):
        self._in_h2 = False if tag == "h2" else self._in_h2

    def handle_data(self, data):
        self.text.append(data)
        if self._in_h2:
            self.h2.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def _assert_self_contained(page: _Page, figures: int) -> None:
    assert page.decl and page.decl.lower() == "doctype html"
    tags = [t for t, _ in page.starts]
    assert tags[:2] == ["html", "head"] and "style" in tags and "link" not in tags
    assert any(t == "meta" and a.get("charset", "").lower() == "utf-8" for t, a in page.starts)
    imgs = [a for t, a in page.starts if t == "img"]
    assert len(imgs) == figures
    for img in imgs:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1])[:4] == b"\x89PNG"
    for t, a in page.starts:
        for k in ("src", "href"):
            assert not str(a.get(k, "")).startswith(("http:", "https:", "//")), (t, a)
        if t == "script":
            assert "src" not in a


@needs_matplotlib
def test_report_page_for_tables_and_validation(cli, small, tmp_path):
    cpu, ov = small
    out = tmp_path / "review" / "page.html"
    r = cli("report", str(cpu), str(ov), "--validate", *map(str, VALIDATE), "--out", str(out))
    assert r.code == 0, r.err
    page = _parse(out)
    _assert_self_contained(page, figures=4)  # (1) ×2, (2) ×1, (3) ×1
    assert page.h2[0] == "Provenance" and page.h2[1] == "Figures"
    assert page.h2.index("Figures") < next(i for i, h in enumerate(page.h2) if h.startswith("Latency tables"))
    assert page.h2[-1].startswith("Validation")
    text = "".join(page.text)
    first = min(json.loads(line)["measured_at"] for line in cpu.read_text().splitlines() if line.strip())[:16]
    for needle in ("onnxruntime 1.32.0", "openvino 2026.4.1", "AMD EPYC [avx2 fma]", first, "oplat 0.1.0",
                   "statistic p10", "geo-mean of", "within ±5%", "worst cases", "error by kernel type"):
        assert needle in text, needle
    # the validation reports' provenance comes from the table their Markdown names
    assert text.count("table results/cpu/sr-core.jsonl: cpu (onnxruntime 1.32.0") == 2
    svgs = sorted(p.name for p in out.parent.glob("*.svg"))
    assert svgs == sorted([
        "page-latency-vs-macs-cpu.svg", "page-latency-vs-macs-openvino.svg", "page-ratio-openvino-vs-cpu.svg",
        "page-predicted-vs-measured.svg",
    ])
    for svg in svgs:
        assert ET.parse(out.parent / svg).getroot().tag.endswith("svg")
        assert f'href="{svg}"' in out.read_text()


@needs_matplotlib
def test_predict_html_writes_the_breakdown_page(cli, tmp_path):
    import onnx

    from oplat.arch import ArchSpec, Layer, model_from_arch

    model = tmp_path / "net.onnx"
    onnx.save(model_from_arch(ArchSpec(scale=3, in_h=360, in_w=640, layers=(Layer(28), Layer(30), Layer(27, act="none")))), model)
    page_path = tmp_path / "pred.html"
    r = cli("predict", str(model), "--table", str(CPU), "--html", str(page_path))
    assert r.code == 0, r.err
    assert "predicted latency" in r.out and "wrote" in r.err
    page = _parse(page_path)
    _assert_self_contained(page, figures=1)
    html = page_path.read_text()
    assert '<tr class="predicted">' in html and "PREDICTED from" in html and "cpu (onnxruntime 1.32.0" in html
    assert (tmp_path / "pred-breakdown-net.svg").exists()
    # the same section through `oplat report --model`
    out = tmp_path / "report.html"
    r = cli("report", "--model", str(model), "--table-for-model", str(CPU), "--out", str(out))
    assert r.code == 0, r.err
    assert "Prediction: net.onnx" in out.read_text()


@needs_matplotlib
def test_report_bad_inputs(cli, tmp_path):
    from conftest import assert_one_line_error

    assert_one_line_error(cli("report", "--out", str(tmp_path / "p.html")), "nothing to review")
    assert_one_line_error(cli("report", "--model", "x.onnx", "--out", str(tmp_path / "p.html")), "--table-for-model")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert_one_line_error(cli("report", "--validate", str(bad), "--out", str(tmp_path / "p.html")), "not a validation report")


# ---------------------------------------------------------------- a real browser
def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", *args],
        capture_output=True, text=True, timeout=180,
    )


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is missing (apt-get install chromium)")
@needs_matplotlib
def test_page_renders_in_headless_chromium(cli, small, tmp_path):
    cpu, ov = small
    out = tmp_path / "page.html"
    assert cli("report", str(cpu), str(ov), "--validate", str(VALIDATE[0]), "--out", str(out)).code == 0
    figures = out.read_text().count("<img ")
    r = _chromium(tmp_path, "--dump-dom", out.as_uri())
    assert r.returncode == 0, r.stderr[-2000:]
    body = re.search(r"<body[^>]*>", r.stdout)
    assert body, r.stdout[:500]
    # the page's own inline script: every image complete with naturalWidth > 0
    assert f'data-images="loaded {figures}"' in body.group(0), body.group(0)
    shot = tmp_path / "shot.png"
    r = _chromium(tmp_path, "--hide-scrollbars", "--window-size=1280,2400", f"--screenshot={shot}", out.as_uri())
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.std() > 0.05  # not blank
    figure_area = pixels[600:1400, 40:900]  # the first figure sits below the provenance
    assert (figure_area.mean(axis=2) < 0.5).mean() > 0.005  # dark marks (axes, points, text) in it


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is missing (apt-get install chromium)")
@needs_matplotlib
def test_search_page_renders_in_headless_chromium(cli, tmp_path):
    """`oplat search` writes report.html: the Pareto front (budget line, infeasible trials
    grey) and the winner's per-kernel breakdown load in a real browser; the page names
    the table's provenance and says the latencies on its axis are predictions."""
    from test_search import fake_rows, tiny_space, write_space, write_table

    space = tiny_space()
    table = write_table(tmp_path / "fake.jsonl", fake_rows(space))
    space_file = write_space(tmp_path / "tiny.toml", space)
    r = cli("search", "--budget", "0.2ms", "--table", str(table), "--space", str(space_file), "--trials", "40",
            "--name", "s", "--results", str(tmp_path), "--no-progress")
    assert r.code == 0, r.err
    page = tmp_path / "search" / "s" / "report.html"
    assert str(page) in r.out
    text = page.read_text(encoding="utf-8")
    assert "PREDICTED from the table" in text and "Provenance" in text and "capacity proxy" in text
    assert sorted(p.name for p in page.parent.glob("report-*.svg")) == ["report-breakdown-best-int8.svg", "report-pareto.svg"]
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-images="loaded 2"' in re.search(r"<body[^>]*>", dom.stdout).group(0)
