"""Where a report's numbers came from, in a line or two every report starts with."""

from __future__ import annotations

import oplat

__all__ = ["provenance_line"]


def provenance_line(device: dict, *, measured_between: tuple[str, str] | None = None, stat: str | None = None,
                    source: str | None = None) -> str:
    """``table T: cpu (onnxruntime 1.32.0, 1 thread) on AMD EPYC [avx2 fma], measured
    2026-11-29T10:02 … 2026-11-29T10:19 UTC; statistic p10; oplat 0.1.0``.

    ``device`` is a table's fingerprint (see :mod:`oplat.fingerprint`); a table holds for
    the machine and the days it was measured on, so the dates are part of every report.
    """
    runtime = f"{device.get('runtime', '?')} {device.get('runtime_version', '')}".strip()
    threads = device.get("threads")
    parts = [f"{device.get('name', '?')} ({runtime}" + (f", {threads} thread{'s' if threads != 1 else ''})" if threads else ")")]
    cpu = device.get("cpu")
    if cpu:
        isa = device.get("cpu_isa")
        parts.append(f"on {cpu}" + (f" [{isa}]" if isa else ""))
    text = " ".join(parts)
    if measured_between:
        first, last = (t.replace("+00:00", "")[:16] for t in measured_between)
        text += f", measured {first} UTC" if first == last else f", measured {first} … {last} UTC"
    if stat:
        text += f"; statistic {stat}"
    text += f"; oplat {device.get('oplat_version') or oplat.__version__}"
    return (f"table {source}: " if source else "") + text
