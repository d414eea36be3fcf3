"""train.json and train.md: what was trained, on what, and how well the emitted files do.

The markdown is rendered from the JSON object alone (:func:`report_markdown`), so a
report can be re-rendered from a saved ``train.json``. No torch here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["ROW_ORDER", "report_markdown", "summary_figures", "write_report"]

#: Result rows, in report order, with their labels.
ROW_ORDER = (("bicubic", "bicubic"), ("fp32", "FP32"), ("int8_ptq", "INT8 PTQ"), ("int8_qat", "INT8 QAT"))


def summary_figures(results: dict[str, dict]) -> dict[str, float]:
    """Headline differences in dB: FP32 over bicubic, and each INT8's drop from FP32
    (positive = the INT8 file is worse)."""
    out: dict[str, float] = {}
    fp32 = results.get("fp32", {}).get("psnr")
    if fp32 is None:
        return out
    if "bicubic" in results:
        out["fp32_gain_over_bicubic_db"] = fp32 - results["bicubic"]["psnr"]
    for key in ("int8_ptq", "int8_qat"):
        if key in results:
            out[f"{key}_drop_db"] = fp32 - results[key]["psnr"]
            if "bicubic" in results:
                out[f"{key}_gain_over_bicubic_db"] = results[key]["psnr"] - results["bicubic"]["psnr"]
    return out


def _fmt(value: float | None, digits: int = 2, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def report_markdown(data: dict) -> str:
    """The train.md text of a train.json object."""
    res = data["results"]
    fp32 = res.get("fp32", {}).get("psnr")
    bic = res.get("bicubic", {}).get("psnr")
    lines = [
        f"# oplat train: {data['name']}",
        "",
        f"- network: {data['arch_description']} ({data['params']:,} parameters, ×{data['arch']['scale']})",
        f"- data: {data['data']['description']}",
        f"- LR images: {data['data']['lr_resampler']}",
        f"- training: {data['settings']['steps']} steps of L1 loss, Adam, cosine learning rate "
        f"{data['settings']['lr']:g} → {data['settings']['lr_min']:g}, batch {data['settings']['batch']} × "
        f"{data['settings']['patch']}×{data['settings']['patch']} LR patches with flips/rotations, seed {data['settings']['seed']}"
        + (
            f"; QAT: {data['settings']['qat_steps']} more steps from the FP32 weights at learning rate "
            f"{data['settings']['qat_lr']:g}, fake-quant as the QDQ graph (activation ranges refreshed every "
            f"{data['settings']['qat_refresh']} steps)"
            if data["settings"]["qat_steps"]
            else "; no QAT (--qat to add it)"
        ),
        f"- INT8: static QDQ (uint8 asymmetric activations, int8 symmetric per-channel weights), min-max "
        f"calibrated on {data['settings']['calib_patches']} training patches",
        f"- measured: {data['measured_with']}",
        f"- metrics: {data['metrics']}",
        "",
        "| model | file | PSNR-Y (dB) | SSIM-Y | vs bicubic (dB) | drop from FP32 (dB) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for key, label in ROW_ORDER:
        if key not in res:
            continue
        r = res[key]
        vs_bic = None if bic is None or key == "bicubic" else r["psnr"] - bic
        drop = None if fp32 is None or not key.startswith("int8") else fp32 - r["psnr"]
        lines.append(
            f"| {label} | {'`' + r['file'] + '`' if r.get('file') else '—'} | {_fmt(r['psnr'])} | {_fmt(r['ssim'], 4)} | "
            f"{_fmt(vs_bic, signed=True)} | {_fmt(drop)} |"
        )
    names = list(res.get("bicubic", res.get("fp32", {})).get("per_image", {}))
    if names:
        keys = [(k, label) for k, label in ROW_ORDER if k in res]
        lines += ["", "Per image (PSNR-Y dB / SSIM-Y):", "", "| image | " + " | ".join(label for _, label in keys) + " |",
                  "|---|" + "---:|" * len(keys)]
        for n in names:
            cells = [f"{res[k]['per_image'][n]['psnr']:.2f} / {res[k]['per_image'][n]['ssim']:.4f}" for k, _ in keys]
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
    t = data["timing"]
    lines += [
        "",
        f"Timing ({data['device']}, torch {data['torch']}): "
        f"{_fmt(t.get('seconds_per_step'), 3)} s per training step"
        + (f", {_fmt(t.get('seconds_per_qat_step'), 3)} s per QAT step" if t.get("seconds_per_qat_step") else "")
        + f"; {t['wall_seconds']:.0f} s wall in "
        + ("the last session (the run was resumed; " if data.get("resumed_from") else "all (")
        + "validation, checkpoints, export and measurement included).",
    ]
    hist = data.get("history", [])
    if hist:
        lines += ["", "Validation PSNR-Y during training (torch, " + data["monitor"] + "):", "",
                  "| phase | step | loss (EMA) | val PSNR-Y (dB) |", "|---|---:|---:|---:|"]
        for h in hist:
            lines.append(f"| {h['phase']} | {h['step']} | {h['loss']:.4f} | {h['val_psnr']:.2f} |")
    lines.append("")
    return "\n".join(lines)


def write_report(out_dir: Path, data: dict) -> tuple[Path, Path]:
    """Write ``train.json`` and ``train.md`` (each atomically); return their paths."""
    out_dir = Path(out_dir)
    paths = (out_dir / "train.json", out_dir / "train.md")
    texts = (json.dumps(data, indent=1, allow_nan=False) + "\n", report_markdown(data))
    for path, text in zip(paths, texts, strict=True):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return paths
