"""``oplat train`` as one library call: :func:`run_training` (imports torch only when run)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from oplat.errors import OplatError, OplatRuntimeError
from oplat.locks import Flock

__all__ = ["TORCH_HINT", "TrainOptions", "TrainResult", "device_text", "require_torch", "run_fingerprint", "run_training", "torch_device"]

#: How to get the extra: its CPU build on a machine without a GPU (the default PyPI torch
#: wheel for Linux brings several GB of CUDA libraries).
TORCH_HINT = (
    "install the train extra: pip install 'oplat[train]' (without a GPU, take torch's CPU build first: "
    "torch's CPU wheel from PyTorch's whl/cpu index, e.g. pip install torch==2.13.0+cpu)"
)


def require_torch(what: str = "oplat train") -> None:
    """An OplatError (one line, naming ``what`` needs it and the extra) unless torch and
    Pillow import."""
    from oplat.backends import import_problem

    for module, name in (("torch", "PyTorch"), ("PIL", "Pillow")):
        problem = import_problem(module, name, TORCH_HINT)
        if problem:
            raise OplatError(f"{what} needs {name}: {problem}")


@dataclass(frozen=True)
class TrainOptions:
    """What ``oplat train`` was asked (see ``oplat train --help``)."""

    arch: str
    data: str | None = None
    val: str | None = None
    steps: int = 2000
    batch: int = 16
    patch: int = 48
    lr: float = 1e-3
    seed: int = 0
    qat: bool = False
    qat_steps: int | None = None
    name: str | None = None
    results: str = "results"
    fresh: bool = False
    checkpoint_every: int = 100
    val_every: int = 0
    threads: int | None = None
    torch_device: str = "auto"
    progress: bool = True


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    report: dict
    files: dict[str, Path]

    def summary(self) -> str:
        r, s = self.report["results"], self.report["summary"]
        lines = [f"{self.report['name']}: {self.report['arch_description']}"]
        for key, label in (("bicubic", "bicubic"), ("fp32", "FP32"), ("int8_ptq", "INT8 PTQ"), ("int8_qat", "INT8 QAT")):
            if key in r:
                extra = ""
                if key == "fp32":
                    extra = f"  ({s['fp32_gain_over_bicubic_db']:+.2f} dB vs bicubic)"
                elif key.startswith("int8"):
                    extra = f"  (drop {s[key + '_drop_db']:.2f} dB)"
                lines.append(f"  {label:9s} PSNR-Y {r[key]['psnr']:.2f} dB  SSIM-Y {r[key]['ssim']:.4f}{extra}")
        sps = self.report["timing"].get("seconds_per_step")
        if sps:
            lines.append(f"  {sps:.3f} s per training step on {self.report['device']}")
        lines.append(f"  wrote {', '.join(str(p) for p in self.files.values())}")
        return "\n".join(lines)


class _DirLock:
    """One run per output folder (an flock on ``.lock``); a second is refused."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".lock"
        self._lock: Flock | None = None

    def __enter__(self) -> _DirLock:
        lock = Flock(self.path, blocking=False)
        try:
            lock.__enter__()
        except OSError:
            raise OplatRuntimeError(
                f"{self.path.parent} is in use by another `oplat train` run; wait for it or give another --name"
            ) from None
        self._lock = lock
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.__exit__(*exc)


def torch_device(choice: str):
    """The torch device of ``--torch-device`` (auto: a CUDA GPU when torch sees one)."""
    import torch

    if choice not in ("auto", "cpu", "cuda"):
        raise OplatError(f"--torch-device must be auto, cpu or cuda, got {choice!r}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise OplatError("--torch-device cuda: torch sees no CUDA GPU here (this torch build: "
                         f"{torch.__version__}); use --torch-device cpu")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def device_text(device) -> str:
    """How reports name the torch device: ``cpu (2 threads)`` or ``cuda:0``."""
    import torch

    return f"{device.type} ({torch.get_num_threads()} threads)" if device.type == "cpu" else str(device)


def _train_config(opts: TrainOptions):
    from oplat.train.loop import TrainConfig

    qat_steps = 0
    if opts.qat:
        qat_steps = opts.qat_steps if opts.qat_steps is not None else max(20, opts.steps // 5)
    elif opts.qat_steps:
        raise OplatError("--qat-steps needs --qat")
    return TrainConfig(steps=opts.steps, batch=opts.batch, patch=opts.patch, lr=opts.lr, lr_min=min(1e-5, opts.lr / 10),
                       seed=opts.seed, qat_steps=qat_steps, qat_lr=opts.lr / 10, val_every=opts.val_every,
                       checkpoint_every=opts.checkpoint_every)


def _out_dir(opts: TrainOptions, default_name: str) -> tuple[str, Path]:
    from oplat.paths import check_plain_name

    name = check_plain_name(opts.name or default_name, what="--name")
    out_dir = Path(opts.results) / "train" / name
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OplatRuntimeError(f"cannot create {out_dir}: {exc.strerror}") from None
    return name, out_dir


def run_fingerprint(arch, data, cfg) -> dict:
    """What names a training run in its checkpoint: another value is refused on resume."""
    from oplat.train.onnxio import arch_to_json

    return {
        "arch": arch_to_json(arch),
        "train": [f"{p.name}:{p.stat().st_size}" for p in data.train_paths],
        "val": [p.name for p in data.val_paths],
        **cfg.result_settings(),
    }


def run_training(opts: TrainOptions) -> TrainResult:
    """Train ``opts.arch``, emit best.onnx / best.int8.onnx (/ best.qat.int8.onnx) and
    train.json / train.md in ``<results>/train/<name>/``; resumes a killed run."""
    require_torch()
    import torch

    import oplat
    from oplat.arch import describe
    from oplat.train.data import TrainData
    from oplat.train.loop import CHECKPOINT, Trainer, emit_and_measure
    from oplat.train.onnxio import ARCH_KEY, arch_to_json, load_arch
    from oplat.train.report import write_report
    from oplat.train.torchnet import ArchNet

    started = time.perf_counter()
    arch, default_name = load_arch(opts.arch)
    cfg = _train_config(opts)
    data = TrainData.load(opts.data, opts.val, scale=arch.scale, patch=cfg.patch, batch=cfg.batch, seed=cfg.seed,
                          monitor_images=cfg.monitor_images)
    name, out_dir = _out_dir(opts, default_name)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    device = torch_device(opts.torch_device)

    with _DirLock(out_dir):
        ckpt = out_dir / CHECKPOINT
        if opts.fresh and ckpt.exists():
            ckpt.unlink()
        net = ArchNet.from_arch(arch, seed=cfg.seed)
        trainer = Trainer(net, data, cfg, ckpt, fingerprint=run_fingerprint(arch, data, cfg), device=device,
                          progress=name if opts.progress else False)
        outcome = trainer.run()
        meta = {
            "oplat.version": oplat.__version__,
            ARCH_KEY: arch_to_json(arch),
            "oplat.arch_description": describe(arch),
            "oplat.train": f"{cfg.steps} steps (+{cfg.qat_steps} QAT) on {data.text}",
        }
        results = emit_and_measure(net, outcome, trainer.calib, data.val, out_dir, metadata=meta, threads=opts.threads)
        files = {k: out_dir / r.file for k, r in results.items() if r.file}
        report = _report(_Run(name, arch, data, cfg, device, started), results, outcome, files)
        write_report(out_dir, report)
        files["report"] = out_dir / "train.md"
    return TrainResult(out_dir, report, files)


@dataclass(frozen=True)
class _Run:
    name: str
    arch: object
    data: object
    cfg: object
    device: object
    started: float


def _report(run: _Run, results: dict, outcome, files: dict) -> dict:
    """train.json's content."""
    name, arch, data, cfg, device, started = run.name, run.arch, run.data, run.cfg, run.device, run.started
    import onnxruntime
    import torch

    import oplat
    from oplat.arch import describe, macs, params
    from oplat.train.data import RESAMPLER
    from oplat.train.report import summary_figures

    res_json = {k: r.to_json() for k, r in results.items()}
    return {
        "oplat_version": oplat.__version__,
        "name": name,
        "arch": asdict(arch),
        "arch_description": describe(arch),
        "params": params(arch),
        "macs": macs(arch),
        "data": {
            "description": data.text,
            "train": [p.name for p in data.train_paths],
            "val": list(data.val.names),
            "lr_resampler": RESAMPLER,
        },
        "settings": {**cfg.result_settings(), "val_every": cfg.val_interval, "checkpoint_every": cfg.checkpoint_every},
        "device": device_text(device),
        "torch": torch.__version__,
        "measured_with": (
            f"the emitted ONNX files in ONNX Runtime {onnxruntime.__version__} (CPU EP, exact int8: "
            "session.x64quantprecision=1), whole validation images, input size freed"
        ),
        "metrics": "PSNR and SSIM on Y (BT.601, [16, 235]), border of ×scale pixels cropped, outputs clipped and "
                   "rounded to 8 bits; mean over images",
        "monitor": f"first {len(data.monitor)} validation image(s)",
        "results": res_json,
        "summary": summary_figures(res_json),
        "timing": {
            "seconds_per_step": outcome.seconds_per_step,
            "seconds_per_qat_step": outcome.seconds_per_qat_step,
            "train_seconds": outcome.train_seconds,
            "qat_seconds": outcome.qat_seconds,
            "wall_seconds": time.perf_counter() - started,
        },
        "resumed_from": [list(r) for r in outcome.resumed_from],
        "history": outcome.history,
        "files": {k: p.name for k, p in files.items()},
    }
