"""``oplat table``: render latency tables for review (terminal, markdown, html, csv, json).

One table: every statistic. Several tables: the median of each, side by side by key,
with ratio columns against the first table (``b/a`` > 1 means slower than the first).
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
from collections.abc import Sequence

from tabulate import tabulate

from oplat.errors import OplatError
from oplat.records import Row
from oplat.table import TableFile

__all__ = ["FORMATS", "render_tables"]

FORMATS = {"terminal": "simple", "markdown": "pipe", "github": "github", "html": "html", "csv": None, "json": None}


def _shape(spec: dict) -> str:
    text = f"{spec['c']}×{spec['h']}×{spec['w']}"
    if spec.get("arity"):
        text = f"{spec['arity']}× {text}"
    elif spec["op"] == "add":
        text = f"2× {text}"
    return text


def _op(spec: dict) -> str:
    op = spec["op"]
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


def render_tables(
    tables: Sequence[TableFile],
    *,
    fmt: str = "terminal",
    ops: Sequence[str] | None = None,
    precisions: Sequence[str] | None = None,
) -> str:
    """Render one table in full, or several side by side with ratios."""
    if fmt not in FORMATS:
        raise OplatError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    empty = [str(t.path) for t in tables if not t.rows]
    if empty:
        raise OplatError(f"{', '.join(empty)} holds no rows yet; measure into it with `oplat measure --out {empty[0]}`")
    if len(tables) == 1:
        headers, body = _single(tables[0], ops, precisions)
        legend = f"{_device_label(tables[0])}: {tables[0].path}"
    else:
        headers, body, legend = _side_by_side(tables, ops, precisions)
    if not body:
        raise OplatError("no rows match the filters; check --op / --precision against the table")
    if fmt == "json":
        return json.dumps([dict(zip(headers, r)) for r in body], indent=1, ensure_ascii=False)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows(body)
        return buf.getvalue().rstrip("\n")
    text = tabulate(body, headers=headers, tablefmt=FORMATS[fmt], disable_numparse=True)
    if fmt == "html":
        return text
    return f"{legend}\n\n{text}"


def _single(table: TableFile, ops, precisions) -> tuple[list[str], list[list]]:
    headers = [
        "Op",
        "Input (C×H×W)",
        "Prec",
        "Median [ms]",
        "p10 [ms]",
        "p90 [ms]",
        "Mean ± σ [ms]",
        "Runs",
        "Kernel [ms]",
        "Layout [ms]",
        "Status",
    ]
    body = []
    for row in table.latest().values():
        if not _matches(row, ops, precisions):
            continue
        spec = row.data["spec"]
        st = row.stats
        body.append(
            [
                _op(spec),
                _shape(spec),
                spec.get("precision", "fp32"),
                _num(st.median_ms) if st else "",
                _num(st.p10_ms) if st else "",
                _num(st.p90_ms) if st else "",
                f"{st.mean_ms:.3f} ± {st.std_ms:.3f}" if st and st.mean_ms is not None and st.std_ms is not None else "",
                str(row.runs or "") if st else "",
                _num(row.kernel_ms),
                _num(row.layout_ms),
                _status(row),
            ]
        )
    return headers, body


def _side_by_side(tables: Sequence[TableFile], ops, precisions) -> tuple[list[str], list[list], str]:
    labels = [_device_label(t) for t in tables]
    short = [t.device["name"] if t.rows else str(t.path) for t in tables]
    # Two tables of the same device (e.g. fp32 vs int8 files, or two machines): tell them apart.
    if len(set(short)) < len(short):
        short = [f"{s}:{t.path.stem}" if short.count(s) > 1 else s for s, t in zip(short, tables)]
    latest = [t.latest() for t in tables]
    keys: list[str] = []
    seen = set()
    for table_rows in latest:
        for key, row in table_rows.items():
            if key not in seen and _matches(row, ops, precisions):
                seen.add(key)
                keys.append(key)
    headers = ["Op", "Input (C×H×W)", "Prec"] + [f"{s} median [ms]" for s in short]
    headers += [f"{s}/{short[0]}" for s in short[1:]]
    body = []
    for key in keys:
        spec = next(t[key].data["spec"] for t in latest if key in t)
        medians = []
        for t in latest:
            row = t.get(key)
            medians.append(row.stats.median_ms if row and row.ok else None)
        cells = [_op(spec), _shape(spec), spec.get("precision", "fp32")]
        cells += [_num(m) if m is not None else "—" for m in medians]
        for m in medians[1:]:
            cells.append(f"{m / medians[0]:.2f}" if m is not None and medians[0] else "—")
        body.append(cells)
    legend = "\n".join(f"{s}: {label}, {t.path}" for s, label, t in zip(short, labels, tables))
    return headers, body, legend
