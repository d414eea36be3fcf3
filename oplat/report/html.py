"""Self-contained HTML: review tables as documents, and review pages with figures.

A page is one ``.html`` file that opens offline: the style is inline, every figure is a
PNG in a ``data:`` URI, nothing is fetched. Each figure is also written beside the page
as SVG (``<page stem>-<figure>.svg``, linked under the figure) for zooming and slides.
A page reads top to bottom: provenance first (device, runtime and version, CPU and ISA,
threads, when the table was measured, oplat version, the statistic), then the figures,
then the tables. A tiny inline script marks ``<body data-images="loaded N">`` once every
image has decoded (``broken K/N`` otherwise), so a headless browser can check the page.

:func:`review_page` builds the page of ``oplat report`` (tables, validation reports, a
network's prediction); :func:`prediction_page` the page of ``oplat predict --html``.
matplotlib (the ``report`` extra) is needed for pages, not for :func:`document` and
:func:`html_table`, which ``oplat table --format html`` uses.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import oplat
from oplat.errors import OplatError
from oplat.report.provenance import provenance_line

__all__ = [
    "CSS", "ReviewPage", "ValidationSource", "document", "html_table", "load_validation", "paragraphs",
    "prediction_page", "review_page",
]

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1b1b1b;
       margin: 1.5em auto; max-width: 1400px; padding: 0 1em; }
h1 { font-size: 1.5em; margin: 0 0 .4em; } h2 { font-size: 1.2em; margin: 1.6em 0 .5em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05em; margin: 1.2em 0 .4em; }
p.provenance, p.legend, p.note { color: #444; margin: .2em 0; font-size: .92em; }
p.provenance { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .85em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .86em; }
th, td { border: 1px solid #d9d9d9; padding: 2px 7px; vertical-align: top; }
th { background: #f3f3f3; position: sticky; top: 0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.group td { background: #eef3fa; font-weight: 600; border-top: 2px solid #9ab; }
tr.predicted td { background: #fff7df; }
td.flag { color: #a0522d; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: .9em; margin-top: .3em; }
details summary { cursor: pointer; color: #245; }
"""

#: Marks the body once every image decoded (``naturalWidth > 0``), for headless checks.
IMAGES_SCRIPT = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  document.body.setAttribute("data-images", bad.length ? "broken " + bad.length + "/" + imgs.length : "loaded " + imgs.length);
});
</script>"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def document(title: str, body: str, *, script: str = "") -> str:
    """A complete HTML5 document: doctype, ``<head>`` with charset, title and the inline style."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<meta name=\"generator\" content=\"oplat {_e(oplat.__version__)}\">\n"
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body data-images=\"pending\">\n{body}\n{script}\n</body>\n</html>\n"
    )


def paragraphs(lines: Sequence[str], *, cls: str = "") -> str:
    attr = f' class="{_e(cls)}"' if cls else ""
    return "".join(f"<p{attr}>{_e(line)}</p>\n" for line in lines)


def html_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    align: Sequence[str] | None = None,
    row_classes: Sequence[str] | None = None,
    cell_class: Callable[[int, str], str] | None = None,
    cls: str = "review",
) -> str:
    """A ``<table>``: escaped cells, ``align`` "right" columns get ``class="num"``;
    ``row_classes`` name each ``<tr>``'s class ("row" gets none)."""
    align = list(align) if align is not None else ["left"] * len(headers)
    num = [a == "right" for a in align]
    out = [f'<table class="{_e(cls)}">', "<thead><tr>"]
    out += [("<th class=\"num\">" if n else "<th>") + f"{_e(h)}</th>" for h, n in zip(headers, num)]
    out.append("</tr></thead>\n<tbody>")
    for index, row in enumerate(rows):
        kind = row_classes[index] if row_classes else "row"
        tr = f'<tr class="{_e(kind)}">' if kind and kind != "row" else "<tr>"
        tds = []
        for column, value in enumerate(row):
            text = "" if value is None else str(value)
            classes = " ".join(c for c in ("num" if column < len(num) and num[column] else "",
                                            cell_class(column, text) if cell_class else "") if c)
            tds.append((f'<td class="{classes}">' if classes else "<td>") + f"{_e(text)}</td>")
        out.append(tr + "".join(tds) + "</tr>")
    out.append("</tbody>\n</table>\n")
    return "\n".join(out)


# ---------------------------------------------------------------------------- pages
@dataclass
class _PageFigure:
    slug: str
    title: str
    caption: str
    fig: object  # matplotlib.figure.Figure


@dataclass
class _Provenance:
    source: str
    device: dict
    measured_between: tuple[str, str] | None
    stat: str
    note: str = ""
    table: str = ""  # the table the numbers come from (the source itself when empty)


@dataclass
class ReviewPage:
    """A review page being built: provenance entries, figures, table sections, in the
    order they are added; :meth:`write` renders and writes it (and the SVGs)."""

    title: str
    intro: list[str] = field(default_factory=list)
    provenance: list[_Provenance] = field(default_factory=list)
    figures: list[_PageFigure] = field(default_factory=list)
    sections: list[tuple[str, str]] = field(default_factory=list)

    def add_provenance(self, source: str, device: dict, *, measured_between=None, stat: str, note: str = "",
                       table: str = "") -> None:
        """One line of the provenance section: ``source`` (a table, report or model) and
        the fingerprint of the ``table`` its numbers come from (``source`` itself by default)."""
        self.provenance.append(_Provenance(source, dict(device or {}), measured_between, stat, note, table))

    def add_figure(self, slug: str, title: str, fig, caption: str = "") -> None:
        slug = re.sub(r"[^a-z0-9]+", "-", slug.lower()).strip("-") or "figure"
        taken = {f.slug for f in self.figures}
        base, n = slug, 2
        while slug in taken:
            slug, n = f"{base}-{n}", n + 1
        self.figures.append(_PageFigure(slug, title, caption, fig))

    def add_section(self, title: str, body_html: str) -> None:
        self.sections.append((title, body_html))

    # ------------------------------------------------------------------ rendering
    def _provenance_html(self) -> str:
        headers = ["Source", "Table", "Device", "Runtime", "CPU [ISA]", "Threads", "Measured (UTC)", "oplat", "Statistic"]
        rows, lines = [], []
        for p in self.provenance:
            d = p.device
            measured = ""
            if p.measured_between:
                first, last = (t.replace("+00:00", "")[:16] for t in p.measured_between)
                measured = first if first == last else f"{first} … {last}"
            rows.append([
                p.source, p.table or p.source, d.get("name", "?"), f"{d.get('runtime', '?')} {d.get('runtime_version', '')}".strip(),
                f"{d.get('cpu', '?')}" + (f" [{d['cpu_isa']}]" if d.get("cpu_isa") else ""),
                d.get("threads", "?"), measured or "?", d.get("oplat_version") or oplat.__version__, p.stat,
            ])
            line = provenance_line(d, measured_between=p.measured_between, stat=p.stat, source=p.table or p.source) \
                if d.get("runtime") else f"{p.source}: device {d.get('name', '?')}; statistic {p.stat}"
            lines.append(line + (f" ({p.note})" if p.note else ""))
        return (html_table(headers, rows, align=["left"] * 5 + ["right"] + ["left"] * 3, cls="provenance")
                + paragraphs(lines, cls="provenance"))

    def render(self, svg_names: dict[str, str] | None = None) -> str:
        """The page's HTML; ``svg_names`` maps a figure's slug to its SVG file name (linked)."""
        from oplat.report.figures import png_bytes

        svg_names = svg_names or {}
        parts = [f"<h1>{_e(self.title)}</h1>", paragraphs(self.intro, cls="note")]
        if self.provenance:
            parts += ["<h2>Provenance</h2>", self._provenance_html()]
        if self.figures:
            parts.append("<h2>Figures</h2>")
        for number, f in enumerate(self.figures, start=1):
            data = base64.b64encode(png_bytes(f.fig)).decode("ascii")
            width, height = (int(round(v * 100)) for v in f.fig.get_size_inches())
            link = f' · <a href="{_e(svg_names[f.slug])}">SVG</a>' if f.slug in svg_names else ""
            parts.append(
                f'<figure id="{_e(f.slug)}"><img src="data:image/png;base64,{data}" width="{width}" height="{height}" '
                f'alt="{_e(f.title)}">\n<figcaption><b>Figure {number}.</b> {_e(f.title)}'
                + (f" — {_e(f.caption)}" if f.caption else "") + f"{link}</figcaption></figure>"
            )
        for title, body in self.sections:
            parts += [f"<h2>{_e(title)}</h2>", body]
        return document(self.title, "\n".join(parts), script=IMAGES_SCRIPT)

    def write(self, path: str | Path) -> list[Path]:
        """Write the page and one SVG per figure beside it; returns the paths written."""
        from oplat.report.figures import svg_text

        path = Path(path)
        names = {f.slug: f"{path.stem}-{f.slug}.svg" for f in self.figures}
        written = []
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            for f in self.figures:
                svg = path.with_name(names[f.slug])
                svg.write_text(svg_text(f.fig), encoding="utf-8")
                written.append(svg)
            path.write_text(self.render(names), encoding="utf-8")
        except OSError as exc:
            raise OplatError(f"cannot write the review page {path} ({exc.strerror}); choose a writable --out") from None
        return [path, *written]


# ---------------------------------------------------------------------------- tables
def add_tables(page: ReviewPage, tables, *, stat: str = "p10", group: bool = True) -> None:
    """Figure (1) for each table, figure (2) for each table against the first, and the
    review table (:mod:`oplat.report.tables`, side by side when several)."""
    from oplat.report import figures
    from oplat.report.tables import (
        family, family_rank, op_label, review_table, review_table_html, shape_label, sort_key, table_labels,
    )

    review = review_table(tables, stat=stat, group=group)
    labels = table_labels(tables)
    for label, table in zip(labels, tables):
        page.add_provenance(str(table.path), table.device, measured_between=table.measured_between, stat=stat)
    for label, table in zip(labels, tables):
        points = [
            figures.LatencyPoint(family(r.data["spec"]), r.spec.precision, float(r.spec.macs), r.stats.of(stat),
                                 float(r.spec.elements_moved))
            for r in table.latest().values() if r.ok
        ]
        page.add_figure(
            f"latency-vs-macs-{label}", f"{label}: latency ({stat}) against MACs, one colour per op family",
            figures.latency_vs_macs(points, title=f"{label} ({table.path})", stat=stat),
            "ops without MACs are plotted against the tensor elements they move",
        )
    first = tables[0].latest()
    for label, table in zip(labels[1:], tables[1:]):
        other = table.latest()
        both = [k for k in first if k in other and first[k].ok and other[k].ok]
        specs = [first[k].data["spec"] for k in both]
        row_of = lambda s: f"{op_label(s)} {s.get('precision', 'fp32')}"  # noqa: E731
        # rows: op family, precision, then the op's own fields (c_out, mode, scale, …)
        ordered = sorted(specs, key=lambda s: (family_rank(family(s)), sort_key({**s, "c": 0, "h": 0, "w": 0})))
        rows = list(dict.fromkeys(row_of(s) for s in ordered))
        families = [family(next(s for s in ordered if row_of(s) == r)) for r in rows]
        breaks = [i for i in range(1, len(rows)) if families[i] != families[i - 1]]
        shapes = sorted({(s["h"] * s["w"], s["c"], s.get("arity") or 0, shape_label(s)) for s in specs})
        cells = [(row_of(first[k].data["spec"]), shape_label(first[k].data["spec"]),
                  other[k].stats.of(stat) / first[k].stats.of(stat)) for k in both if first[k].stats.of(stat) > 0]
        page.add_figure(
            f"ratio-{label}-vs-{labels[0]}", f"{label} / {labels[0]} ({stat}) by op and input shape",
            figures.ratio_heatmap(cells, rows=rows, columns=[s[-1] for s in shapes], a_label=labels[0], b_label=label,
                                  row_breaks=breaks,
                                  title=f"{label} / {labels[0]} ({stat}), {len(cells)} keys in both tables"),
            f"red: {label} slower than {labels[0]}; blue: faster; grey: not in both tables",
        )
    legend = ""
    if len(tables) > 1:
        legend = paragraphs([f"ratios of the {stat}: b/a > 1 means slower than {labels[0]}"
                             + ("; a family's first line holds the geometric mean of its ratios" if group else "")],
                            cls="legend")
    title = "Latency table" if len(tables) == 1 else "Latency tables side by side"
    page.add_section(title + f" ({stat})", paragraphs(review.provenance, cls="provenance") + legend
                     + review_table_html(review))


# ---------------------------------------------------------------------------- validation
@dataclass
class ValidationSource:
    """A saved ``oplat validate`` report and where its numbers came from."""

    path: Path
    report: object  # oplat.validate.ValidationReport
    device_name: str
    table_path: str | None
    table: object | None  # the TableFile, when the table named in the report's Markdown exists

    @property
    def label(self) -> str:
        return f"{self.device_name} {self.report.precision}"


_MD_HEADER = re.compile(r"^## (?P<device>\S+) (?P<precision>\S+): \d+ random \S+ networks, table (?P<table>.+?)"
                        r"(?: \(UNCALIBRATED predictions\))?$")


def load_validation(path: str | Path) -> ValidationSource:
    """Read a validate JSON; its device and table come from the Markdown saved beside it
    (``<stem>.md``, whose header names them), the table's provenance from that table."""
    from oplat.table import read_table
    from oplat.validate import ValidationReport

    path = Path(path)
    try:
        report = ValidationReport.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise OplatError(f"{path}: no such validation report; give the .json `oplat validate` saved") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OplatError(f"{path}: not a validation report ({type(exc).__name__}: {exc}); give the .json `oplat validate` saved") from None
    device, table_path, table = path.parent.name, None, None
    md = path.with_suffix(".md")
    if md.exists():
        for line in md.read_text(encoding="utf-8").splitlines():
            match = _MD_HEADER.match(line.strip())
            if match:
                device, table_path = match["device"], match["table"]
                break
    if table_path:
        candidates = [Path(table_path)] + [parent / table_path for parent in path.resolve().parents]
        found = next((c for c in candidates if c.is_file()), None)
        if found is not None:
            try:
                table = read_table(found, quiet=True)
            except OplatError:
                table = None
    return ValidationSource(path, report, device, table_path, table)


def add_validation(page: ReviewPage, sources: Sequence[ValidationSource]) -> None:
    """Figure (3) (every report's networks on one figure) and each report's numbers."""
    from oplat.report import figures

    for s in sources:
        if s.table is not None:
            page.add_provenance(str(s.path), s.table.device, measured_between=s.table.measured_between,
                                stat=s.report.stat, note=f"validation report {s.path}", table=s.table_path)
        else:
            page.add_provenance(str(s.path), {"name": s.device_name}, stat=s.report.stat,
                                note=f"table {s.table_path or 'unknown'} not found")
    stats = sorted({s.report.stat for s in sources})
    page.add_figure(
        "predicted-vs-measured", "predicted vs measured whole networks",
        figures.predicted_vs_measured(
            [(s.label, [(r.predicted_ms, r.measured_ms) for r in s.report.results]) for s in sources],
            stat="/".join(stats), title="predicted vs measured: " + ", ".join(s.label for s in sources)),
        "shaded: ±5 % (dark) and ±10 % (light) around predicted = measured",
    )
    summary = [
        [str(s.path), s.device_name, s.report.precision, len(s.report.results), s.report.stat,
         "yes" if s.report.calibrated else "UNCALIBRATED", f"{s.report.share_within(5):.0f}",
         f"{s.report.share_within(10):.0f}", f"{s.report.mape_pct:.1f}"]
        for s in sources
    ]
    body = [html_table(["Report", "Device", "Prec", "Networks", "Statistic", "Calibrated", "Within ±5 % [%]",
                        "Within ±10 % [%]", "Mean |error| [%]"], summary, align=["left"] * 3 + ["right"] + ["left"] * 2
                       + ["right"] * 3)]
    net_headers = ["Network", "Predicted [ms]", "Measured [ms]", "Error [%]", "Kernels from table [%]"]
    net_align = ["left"] + ["right"] * 4

    def net_rows(results):
        return [[r.arch, f"{r.predicted_ms:.2f}", f"{r.measured_ms:.2f}", f"{r.error_pct:+.1f}",
                 f"{100 * r.measured_share:.0f}"] for r in results]

    for s in sources:
        rep = s.report
        body.append(f"<h3>{_e(s.label)}: {len(rep.results)} networks ({_e(s.path)})</h3>")
        body.append(paragraphs([
            f"statistic: {rep.stat} of the wall time (prediction and measurement alike)"
            + ("" if rep.calibrated else "; UNCALIBRATED predictions"),
            f"within ±5%: {rep.share_within(5):.0f}%   within ±10%: {rep.share_within(10):.0f}%   "
            f"mean |error|: {rep.mape_pct:.1f}%",
        ], cls="note"))
        body.append("<p>worst cases:</p>" + html_table(net_headers, net_rows(rep.worst(5)), align=net_align))
        kerr = rep.kernel_errors()
        if any(m for _, m, _ in kerr.values()):
            body.append(
                f"<p>error by kernel type, summed over the networks (measured: each network's {_e(rep.stat)} wall time "
                "split by the runtime's per-node profile of it):</p>"
                + html_table(["Kernel type", "Predicted [ms]", "Measured [ms]", "Error [%]"],
                             [[op, f"{p:.1f}", f"{m:.1f}", f"{e:+.1f}" if m else "not in the profile (fused)"]
                              for op, (p, m, e) in sorted(kerr.items())], align=["left"] + ["right"] * 3)
            )
        body.append(f"<details><summary>all {len(rep.results)} networks</summary>"
                    + html_table(net_headers, net_rows(sorted(rep.results, key=lambda r: r.measured_ms)), align=net_align)
                    + "</details>")
    page.add_section("Validation: predicted vs measured networks", "\n".join(body))


# ---------------------------------------------------------------------------- prediction
def add_prediction(page: ReviewPage, pred, *, model: str, table: str, device: dict, measured_between=None) -> None:
    """Figure (4) and the per-kernel breakdown of one network's prediction."""
    from oplat.report import figures
    from oplat.report.prediction import BREAKDOWN_HEADERS, breakdown_rows, composition_text, network_summary, sums_line

    page.add_provenance(model, device, measured_between=measured_between, stat=pred.stat, note=f"prices {model}",
                        table=table)
    name = Path(model).name
    page.add_figure(
        f"breakdown-{Path(model).stem}", f"{name}: per-kernel compute on {device.get('name', '?')} ({pred.stat})",
        figures.kernel_breakdown([(c.label, c.compute_ms, c.source != "measured") for c in pred.kernels],
                                 title=f"{name} on {device.get('name', '?')}", total_ms=pred.total_ms, stat=pred.stat),
        "hatched: PREDICTED from neighbouring rows (the table lacks that key)",
    )
    notes = [
        f"{model} on {device.get('name', '?')} (table {table}), {pred.net.precision}",
        f"predicted latency ({pred.stat}): {pred.total_ms:.2f} ms ({composition_text(pred)})",
        sums_line(pred),
        network_summary(pred),
    ]
    rows = breakdown_rows(pred)
    kinds = ["row" if c.source == "measured" else "predicted" for c in pred.kernels]
    page.add_section(
        f"Prediction: {name}",
        paragraphs(notes, cls="note")
        + html_table(BREAKDOWN_HEADERS, rows, align=["left", "left", "right", "right", "right", "left"], row_classes=kinds),
    )


def prediction_page(pred, *, model: str, table: str, device: dict, measured_between=None) -> ReviewPage:
    """The page of ``oplat predict --html``: provenance, figure (4), the breakdown."""
    page = ReviewPage(f"oplat predict: {Path(model).name} on {device.get('name', '?')}")
    add_prediction(page, pred, model=model, table=table, device=device, measured_between=measured_between)
    return page


def review_page(
    *,
    tables: Sequence = (),
    validations: Sequence[ValidationSource] = (),
    prediction: dict | None = None,
    stat: str = "p10",
    group: bool = True,
    title: str | None = None,
) -> ReviewPage:
    """The page of ``oplat report``: ``tables`` (TableFiles), ``validations``
    (:func:`load_validation`), ``prediction`` (the keyword arguments of :func:`add_prediction`)."""
    from oplat.report.figures import require_matplotlib
    from oplat.report.tables import table_labels

    require_matplotlib()
    if not tables and not validations and not prediction:
        raise OplatError("nothing to review: give table files, --validate REPORT.json or --model NET.onnx")
    if title is None:
        what = []
        if tables:
            what.append(" vs ".join(table_labels(tables)))
        if validations:
            what.append("validation " + ", ".join(v.label for v in validations))
        if prediction:
            what.append(Path(prediction["model"]).name)
        title = "oplat review: " + "; ".join(what)
    page = ReviewPage(title, intro=[f"oplat {oplat.__version__} review page; self-contained, figures also as SVG beside it"])
    if tables:
        add_tables(page, tables, stat=stat, group=group)
    if validations:
        add_validation(page, validations)
    if prediction:
        add_prediction(page, **prediction)
    return page
