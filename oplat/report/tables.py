"""``oplat table``: render latency tables for review (terminal, markdown, github, html, csv, json).

One table: every statistic of every row, its MACs, GMAC/s at the statistic in use, the
runtime's own kernel names and the noisy flag. Several tables: side by side by key, each
table's value at the statistic in use (``--stat``, p10 by default), its GMAC/s and noisy
flag, with ratio columns against the first table (``b/a`` > 1 means slower than the
first). ``group=True`` groups rows by op family (conv3x3, conv1x1, conv+relu, add, …),
sorted inside a family by precision, then shape; side by side, each family gets a row
with the geometric mean of its ratios.

The text formats right-align numbers. ``csv`` and ``json`` are machine formats: numbers
are numbers, and every record carries its key, device name(s), precision, op, shape
fields, statistics, noisy flag and MACs (see :func:`review_table` for the fields).
``html`` is a self-contained HTML document with each table's provenance line above it.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from tabulate import tabulate

from oplat.errors import OplatError
from oplat.records import STATS, Row, spec_from_dict
from oplat.report.provenance import provenance_line
from oplat.spec import PRECISIONS
from oplat.table import TableFile

__all__ = [
    "DEFAULT_STAT", "FAMILIES", "FORMATS", "STAT_CHOICES", "ReviewTable", "family", "family_rank", "gmac_per_s",
    "op_label", "render_tables", "review_table", "review_table_html", "runtime_kernel", "shape_label", "sort_key",
    "table_labels",
]

FORMATS = {"terminal": "simple", "markdown": "pipe", "github": "github", "html": "html", "csv": None, "json": None}
#: Statistics a review can be shown on (``--stat``).
STAT_CHOICES = STATS
DEFAULT_STAT = "p10"
#: Op families, in the order ``--group`` shows them (other ops follow, by name).
FAMILIES = (
    "conv3x3", "conv1x1", "conv+relu", "add", "concat", "resize nearest", "resize bilinear", "relu", "clip",
    "depth_to_space",
)
#: Spec fields carried by every machine record (None where the op has no such field), in this order.
SPEC_FIELDS = ("c", "h", "w", "n", "c_out", "kernel", "arity", "mode", "scale", "block", "lo", "hi", "layout")
_STAT_FIELDS = ("median_ms", "p10_ms", "p90_ms", "mean_ms", "std_ms")


# ---------------------------------------------------------------------------- row facts
def family(spec: dict) -> str:
    """The op family of a spec (``conv3x3``, ``conv+relu``, ``resize bilinear``, ``add`` …)."""
    op = spec["op"]
    if op == "onnx":
        return "+".join(spec.get("ops", ["onnx"]))
    if op == "conv":
        return f"conv{spec['kernel']}x{spec['kernel']}"
    if op == "resize":
        return f"resize {spec.get('mode', '')}".strip()
    return op


def family_rank(name: str) -> tuple:
    """Sort key of a family: the order of :data:`FAMILIES`, unknown families after, by name."""
    return (FAMILIES.index(name), "") if name in FAMILIES else (len(FAMILIES), name)


def sort_key(spec: dict) -> tuple:
    """Precision, then shape: channels, height, width, then the op's own fields."""
    precision = spec.get("precision", "fp32")
    rank = PRECISIONS.index(precision) if precision in PRECISIONS else len(PRECISIONS)
    numeric = tuple(float(spec.get(f) or 0) for f in ("c", "h", "w", "c_out", "kernel", "arity", "scale", "block", "lo", "hi"))
    return (rank, precision, *numeric, str(spec.get("mode") or ""))


def gmac_per_s(macs: float | None, ms: float | None) -> float | None:
    """Throughput in GMAC/s (None for ops without MACs or without a time)."""
    if not macs or not ms:
        return None
    return macs / (ms * 1e-3) / 1e9


def runtime_kernel(row: Row) -> str:
    """The runtime's names of the op's own (non-layout) kernels, e.g. ``QLinearConv`` or
    ``brgconv_avx2_f32``: the exec type where it names a kernel, else the node's op type
    (ONNX Runtime's exec type is only its execution provider). "" when not recorded."""
    names: list[str] = []
    for node in row.kernels:
        if node.get("layout"):
            continue
        exec_type, op_type = str(node.get("exec_type") or ""), str(node.get("op_type") or "")
        name = exec_type if exec_type and not exec_type.endswith("ExecutionProvider") else op_type
        if name and name not in names:
            names.append(name)
    return "+".join(names)


def shape_label(spec: dict) -> str:
    """The input shape as shown: ``C×H×W``, with the input count for add and concat (``2× 8×180×320``)."""
    if spec["op"] == "onnx":  # any ONNX kernel: its activation inputs, batch included when not 1
        shapes = [i["shape"] for i in spec.get("inputs", [])]
        return " + ".join("×".join(str(d) for d in (s[1:] if s and s[0] == 1 else s)) for s in shapes)
    text = f"{spec['c']}×{spec['h']}×{spec['w']}"
    if spec.get("n", 1) != 1:
        text = f"n{spec['n']} {text}"
    if spec.get("arity"):
        text = f"{spec['arity']}× {text}"
    elif spec["op"] == "add":
        text = f"2× {text}"
    return text


def op_label(spec: dict) -> str:
    """The op as shown: ``conv3x3+relu →28``, ``resize bilinear ×2``, ``clip [0, 1]``, ``add``."""
    op = spec["op"]
    if op == "onnx":
        return spec_from_dict(spec).label().rsplit(" ", 1)[0]  # the label less its precision column
    if op in ("conv", "conv+relu"):
        k = spec["kernel"]
        return f"{op.replace('conv', f'conv{k}x{k}')} →{spec['c_out']}"
    if op == "resize":
        return f"resize {spec['mode']} ×{spec['scale']}"
    if op == "depth_to_space":
        return f"depth_to_space ×{spec['block']}"
    if op == "clip":
        return f"clip [{spec['lo']:g}, {spec['hi']:g}]"
    return op


def _status(row: Row) -> str:
    if not row.ok:
        return f"{row.status}: {row.message}"[:80]
    if row.noisy:
        return f"noisy (rounds ±{row.spread_pct or 0:.1f}%)"
    return "ok"


def _num(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _mmacs(macs: float | None) -> str:
    return f"{macs / 1e6:,.1f}" if macs else ""


def _matches(row: Row, ops: Sequence[str] | None, precisions: Sequence[str] | None) -> bool:
    spec = row.data["spec"]
    if precisions and spec.get("precision") not in precisions:
        return False
    if ops and not any(fnmatch.fnmatchcase(spec["op"], pattern) for pattern in ops):
        return False
    return True


def _device_label(table: TableFile) -> str:
    for row in table.rows:
        dev = row.device
        return f"{dev['name']} ({dev.get('runtime', '?')} {dev.get('runtime_version', '')}, {dev.get('threads')}T)"
    return str(table.path)


def table_labels(tables: Sequence[TableFile]) -> list[str]:
    """Short names of the tables: the device name, with the file stem where two share it."""
    short = [t.device["name"] if t.rows else str(t.path) for t in tables]
    if len(set(short)) < len(short):
        short = [f"{s}:{t.path.stem}" if short.count(s) > 1 else s for s, t in zip(short, tables)]
    if len(set(short)) < len(short):  # the same stem in two folders too: number them
        short = [f"{s}#{i + 1}" for i, s in enumerate(short)]
    return short


def _macs(row: Row) -> int:
    macs = row.data.get("macs")
    return int(macs) if isinstance(macs, (int, float)) and macs else int(row.spec.macs)


def _spec_fields(spec: dict) -> dict:
    out = {name: spec.get(name) for name in SPEC_FIELDS}
    out.update({k: v for k, v in sorted(spec.items()) if k not in out and k not in ("op", "precision")})
    return out


# ---------------------------------------------------------------------------- the review
@dataclass
class ReviewTable:
    """A review as data: text cells (``headers``, ``cells``, ``align``, ``kinds``: "row" or
    "group" per line) and machine ``records`` (one dict per line, numbers as numbers).
    ``provenance`` holds one line per table (see :func:`~oplat.report.provenance.provenance_line`)."""

    headers: list[str]
    cells: list[list[str]]
    align: list[str]
    kinds: list[str]
    records: list[dict]
    provenance: list[str]
    stat: str
    labels: list[str] = field(default_factory=list)
    ratio_headers: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return "oplat table: " + " vs ".join(self.labels) + f" ({self.stat})"


def review_table(
    tables: Sequence[TableFile],
    *,
    stat: str = DEFAULT_STAT,
    ops: Sequence[str] | None = None,
    precisions: Sequence[str] | None = None,
    group: bool = False,
) -> ReviewTable:
    """The review of one table, or of several side by side, as :class:`ReviewTable`.

    Machine records, one table: ``record`` ("row"), ``key``, ``label``, ``device``,
    ``table``, ``family``, ``op``, ``precision``, the spec fields (:data:`SPEC_FIELDS`),
    ``status``, ``message``, ``stat``, ``latency_ms`` (at ``stat``), ``median_ms`` …
    ``std_ms``, ``runs``, ``spread_pct``, ``noisy``, ``kernel_ms``, ``layout_ms``, ``macs``,
    ``gmac_s`` (at ``stat``), ``runtime_kernel``.

    Several tables (short names ``s`` from :func:`table_labels`, the first ``a``): ``record``,
    ``key``, ``label``, ``family``, ``op``, ``precision``, the spec fields, ``macs``,
    ``stat``, then per table ``s.device``, ``s.<stat>_ms``, ``s.gmac_s``, ``s.noisy``,
    ``s.status``, then the ratios ``s/a``. With ``group``, each family adds a record
    ``record`` "group", ``key`` "group:<family>", ``rows`` and its geometric-mean ratios.
    """
    if stat not in STAT_CHOICES:
        raise OplatError(f"unknown statistic {stat!r}; use one of {', '.join(STAT_CHOICES)}")
    empty = [str(t.path) for t in tables if not t.rows]
    if empty:
        raise OplatError(f"{', '.join(empty)} holds no rows yet; measure into it with `oplat measure --out {empty[0]}`")
    if not tables:
        raise OplatError("no table given")
    labels = table_labels(tables)
    provenance = [
        (f"{s}: " if len(tables) > 1 else "")
        + provenance_line(t.device, measured_between=t.measured_between, stat=stat, source=str(t.path))
        for s, t in zip(labels, tables)
    ]
    if len(tables) == 1:
        review = _single(tables[0], stat, ops, precisions, group)
    else:
        review = _side_by_side(tables, labels, stat, ops, precisions, group)
    if not review.records:
        raise OplatError("no rows match the filters; check --op / --precision against the table")
    review.provenance = provenance
    review.labels = labels
    return review


def _ordered(rows: list[Row], group: bool) -> list[Row]:
    if not group:
        return rows
    return sorted(rows, key=lambda r: (family_rank(family(r.data["spec"])), sort_key(r.data["spec"])))


def _single(table: TableFile, stat: str, ops, precisions, group: bool) -> ReviewTable:
    headers = [
        "Op", "Input (C×H×W)", "Prec", "Median [ms]", "p10 [ms]", "p90 [ms]", "Mean ± σ [ms]", "Runs",
        "Kernel [ms]", "Layout [ms]", "MACs [M]", f"GMAC/s ({stat})", "Runtime kernel", "Status",
    ]
    align = ["left"] * 3 + ["right"] * 9 + ["left", "left"]
    if group:
        headers, align = ["Family", *headers], ["left", *align]
    cells, records = [], []
    device = table.device.get("name")
    rows = _ordered([r for r in table.latest().values() if _matches(r, ops, precisions)], group)
    for row in rows:
        spec = row.data["spec"]
        st = row.stats
        value = st.of(stat) if st else None
        macs = _macs(row)
        gmacs = gmac_per_s(macs, value)
        kernel_name = runtime_kernel(row)
        line = [
            op_label(spec),
            shape_label(spec),
            spec.get("precision", "fp32"),
            _num(st.median_ms) if st else "",
            _num(st.p10_ms) if st else "",
            _num(st.p90_ms) if st else "",
            f"{st.mean_ms:.3f} ± {st.std_ms:.3f}" if st and st.mean_ms is not None and st.std_ms is not None else "",
            str(row.runs or "") if st else "",
            _num(row.kernel_ms),
            _num(row.layout_ms),
            _mmacs(macs),
            _num(gmacs, 1),
            kernel_name,
            _status(row),
        ]
        cells.append([family(spec), *line] if group else line)
        records.append(
            {
                "record": "row",
                "key": row.key,
                "label": row.label,
                "device": device,
                "table": str(table.path),
                "family": family(spec),
                "op": spec["op"],
                "precision": spec.get("precision", "fp32"),
                **_spec_fields(spec),
                "status": row.status,
                "message": row.message,
                "stat": stat,
                "latency_ms": value,
                **{name: getattr(st, name) if st else None for name in _STAT_FIELDS},
                "runs": row.runs if st else None,
                "spread_pct": row.spread_pct,
                "noisy": row.noisy,
                "kernel_ms": row.kernel_ms,
                "layout_ms": row.layout_ms,
                "macs": macs,
                "gmac_s": gmacs,
                "runtime_kernel": kernel_name or None,
            }
        )
    return ReviewTable(headers, cells, align, ["row"] * len(cells), records, [], stat)


def _geomean(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def _union_keys(latest: list, ops, precisions) -> list[str]:
    """Keys of the rows (of any table, first seen first) that pass the op/precision filter."""
    keys: list[str] = []
    seen = set()
    for table_rows in latest:
        for key, row in table_rows.items():
            if key not in seen and _matches(row, ops, precisions):
                seen.add(key)
                keys.append(key)
    return keys


def _side_by_side_columns(short: list[str], stat: str, group: bool) -> tuple[list[str], list[str], list[str]]:
    """(headers, align, ratio headers) of a side-by-side table."""
    ratio_headers = [f"{s}/{short[0]}" for s in short[1:]]
    headers = ["Op", "Input (C×H×W)", "Prec", "MACs [M]"]
    headers += [f"{s} {stat} [ms]" for s in short] + [f"{s} GMAC/s" for s in short] + ["Noisy"] + ratio_headers
    align = ["left"] * 3 + ["right"] * (1 + 2 * len(short)) + ["left"] + ["right"] * len(ratio_headers)
    if group:
        headers, align = ["Family", *headers], ["left", *align]
    return headers, align, ratio_headers


def _group_line(family_name: str, member_records: list[dict], short: list[str], devices: list,
                stat: str, ratio_headers: list[str]) -> tuple[str, list[str], dict]:
    """The ("group", cells, record) line of a family: the geometric mean of its members' ratios."""
    count = len(member_records)
    ratios = [_geomean([record[h] for record in member_records]) for h in ratio_headers]
    head = [family_name, f"geo-mean of {count} rows", "", "", ""] + [""] * (2 * len(short) + 1) + [
        f"{r:.2f}" if r is not None else "—" for r in ratios
    ]
    record = {
        "record": "group", "key": f"group:{family_name}", "label": f"{family_name}: geometric mean of {count} ratios",
        "family": family_name, "op": None, "precision": None, **dict.fromkeys(_spec_fields({})), "macs": None,
        "stat": stat, "rows": count,
    }
    for s, d in zip(short, devices):
        record.update({f"{s}.device": d, f"{s}.{stat}_ms": None, f"{s}.gmac_s": None, f"{s}.noisy": None, f"{s}.status": None})
    record.update(zip(ratio_headers, ratios))
    return ("group", head, record)


def _compare_row(key: str, first, latest: list, short: list[str], devices: list, stat: str,
                 ratio_headers: list[str]) -> tuple[list[str], dict]:
    """(cells, record) of one op across the tables; ``first`` is the row its spec comes from."""
    spec = first.data["spec"]
    rows = [t.get(key) for t in latest]
    values = [r.stats.of(stat) if r is not None and r.ok else None for r in rows]
    macs = _macs(first)
    gmacs = [gmac_per_s(macs, v) for v in values]
    ratios = [v / values[0] if v is not None and values[0] else None for v in values[1:]]
    noisy = [s for s, r in zip(short, rows) if r is not None and r.noisy]
    cells = [op_label(spec), shape_label(spec), spec.get("precision", "fp32"), _mmacs(macs)]
    cells += [_num(v) if v is not None else "—" for v in values]
    cells += [_num(g, 1) for g in gmacs]
    cells += [", ".join(noisy)]
    cells += [f"{r:.2f}" if r is not None else "—" for r in ratios]
    record = {
        "record": "row", "key": key, "label": first.label, "family": family(spec), "op": spec["op"],
        "precision": spec.get("precision", "fp32"), **_spec_fields(spec), "macs": macs, "stat": stat,
    }
    for s, d, r, v, g in zip(short, devices, rows, values, gmacs):
        record.update(
            {
                f"{s}.device": d,
                f"{s}.{stat}_ms": v,
                f"{s}.gmac_s": g,
                f"{s}.noisy": r.noisy if r is not None else None,
                f"{s}.status": r.status if r is not None else "missing",
            }
        )
    record.update(zip(ratio_headers, ratios))
    return cells, record


def _side_by_side(tables: Sequence[TableFile], short: list[str], stat: str, ops, precisions, group: bool) -> ReviewTable:
    latest = [t.latest() for t in tables]
    keys = _union_keys(latest, ops, precisions)
    spec_of = {key: next(t[key] for t in latest if key in t) for key in keys}
    if group:
        keys = [r.key for r in _ordered([spec_of[k] for k in keys], True)]
    headers, align, ratio_headers = _side_by_side_columns(short, stat, group)
    devices = [t.device.get("name") for t in tables]
    lines: list[tuple[str, list[str], dict]] = []  # (kind, cells, record)
    current: str | None = None
    members: list[int] = []

    def close_group() -> None:
        if current is None or not members:
            return
        line = _group_line(current, [lines[i][2] for i in members], short, devices, stat, ratio_headers)
        lines.insert(members[0], line)

    for key in keys:
        fam = family(spec_of[key].data["spec"])
        if group and fam != current:
            close_group()
            current, members = fam, []
        cells, record = _compare_row(key, spec_of[key], latest, short, devices, stat, ratio_headers)
        if group:
            members.append(len(lines))  # the family's line goes in front of its first member
            cells = [fam, *cells]
        lines.append(("row", cells, record))
    if group:
        close_group()
    review = ReviewTable(headers, [c for _, c, _ in lines], align, [k for k, _, _ in lines], [r for _, _, r in lines], [], stat)
    review.ratio_headers = ratio_headers
    return review


# ---------------------------------------------------------------------------- formats
def render_tables(
    tables: Sequence[TableFile],
    *,
    fmt: str = "terminal",
    ops: Sequence[str] | None = None,
    precisions: Sequence[str] | None = None,
    stat: str = DEFAULT_STAT,
    group: bool = False,
) -> str:
    """Render one table in full, or several side by side with ratios (see :func:`review_table`)."""
    if fmt not in FORMATS:
        raise OplatError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    review = review_table(tables, stat=stat, ops=ops, precisions=precisions, group=group)
    hosts = {(t.device.get("cpu"), t.device.get("cpu_isa")) for t in tables if t.rows}
    if len(hosts) > 1:
        from oplat.errors import warn

        warn("these tables were measured on different hosts (see their provenance lines): "
             "the ratios compare the hosts as well as the runtimes")
    if fmt == "json":
        return json.dumps(review.records, indent=1, ensure_ascii=False, allow_nan=False)
    if fmt == "csv":
        columns = list(dict.fromkeys(k for r in review.records for k in r))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", restval="")
        writer.writeheader()
        for record in review.records:
            writer.writerow({k: "" if v is None else v for k, v in record.items()})
        return buf.getvalue().rstrip("\n")
    if fmt == "html":
        from oplat.report.html import document, paragraphs

        legend = _ratio_legend(review)
        body = (
            f"<h1>{_escape(review.title)}</h1>\n"
            + paragraphs(review.provenance, cls="provenance")
            + (paragraphs([legend], cls="legend") if legend else "")
            + review_table_html(review)
        )
        return document(review.title, body)
    text = tabulate(review.cells, headers=review.headers, tablefmt=FORMATS[fmt], disable_numparse=True,
                    colalign=review.align)
    legend = "\n".join(review.provenance)
    extra = _ratio_legend(review)
    return f"{legend}\n{extra}\n\n{text}" if extra else f"{legend}\n\n{text}"


def _ratio_legend(review: ReviewTable) -> str:
    if not review.ratio_headers:
        return ""
    return (
        f"ratios of the {review.stat}: {review.labels[1]}/{review.labels[0]} > 1 means slower than {review.labels[0]}"
        + ("; a family's first line holds the geometric mean of its ratios" if "group" in review.kinds else "")
    )


def _escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def review_table_html(review: ReviewTable) -> str:
    """The review's ``<table>`` element (no document around it), numbers right-aligned,
    family lines (``tr.group``) and noisy flags (``td.flag``) marked for the style sheet."""
    from oplat.report.html import html_table

    flag_cols = {i for i, h in enumerate(review.headers) if h in ("Status", "Noisy")}

    def cell_class(column: int, text: str) -> str:
        return "flag" if column in flag_cols and text and text != "ok" else ""

    return html_table(review.headers, review.cells, align=review.align, row_classes=review.kinds, cell_class=cell_class)
