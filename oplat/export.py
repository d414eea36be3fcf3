"""``oplat export``: an op set's one-op models as ONNX and/or ``.tflite`` files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from oplat.build import model_from_op
from oplat.errors import OplatError, OplatRuntimeError
from oplat.limits import Limits, check_spec
from oplat.progress import progress_bar

__all__ = ["FORMATS", "ExportSummary", "export_opset"]

FORMATS = ("onnx", "tflite")


@dataclass(frozen=True)
class ExportSummary:
    out: Path
    entries: int
    formats: tuple[str, ...]


def _stem(spec) -> str:
    return spec.label().replace(" ", "_").replace("→", "-").replace("×", "x").replace("+", "_")


def export_opset(opset, out: str | Path, *, formats: Sequence[str] = ("onnx",), limits: Limits | None = None,
                 progress: bool = True) -> ExportSummary:
    """Write every entry of ``opset`` to ``out`` in ``formats`` (``onnx``, ``tflite``) and an
    ``index.json`` mapping keys to files. Every entry is checked against ``limits`` first."""
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise OplatError(f"unknown format {', '.join(bad) or '(none)'}; choose onnx, tflite or both (onnx,tflite)")
    limits = limits or Limits.default()
    for spec in opset.specs:
        check_spec(spec, limits, where=opset.source)
    if "tflite" in formats:
        from oplat.tflite import tflite_from_onnx
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OplatError(f"cannot create {out} ({exc.strerror}); choose another --out") from None
    index = []
    with progress_bar(total=len(opset.specs), unit="op", desc="export", enabled=progress) as bar:
        for spec in opset.specs:
            bar.update(1)
            stem = _stem(spec)
            model = model_from_op(spec)
            files = []
            try:
                if "onnx" in formats:
                    (out / f"{stem}.onnx").write_bytes(model.SerializeToString())
                    files.append(f"{stem}.onnx")
                if "tflite" in formats:
                    (out / f"{stem}.tflite").write_bytes(tflite_from_onnx(model))
                    files.append(f"{stem}.tflite")
            except OSError as exc:
                raise OplatRuntimeError(f"cannot write {out / stem}.* ({exc.strerror}); free space or choose another --out") from None
            index.append({"key": spec.key, "label": spec.label(), "files": files})
    try:
        (out / "index.json").write_text(json.dumps(index, indent=1, ensure_ascii=False))
    except OSError as exc:
        raise OplatRuntimeError(f"cannot write {out / 'index.json'} ({exc.strerror}); free space or choose another --out") from None
    return ExportSummary(out, len(index), tuple(formats))
