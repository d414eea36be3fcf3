"""The training loop: L1 loss, Adam, a cosine schedule, checkpoints a killed run resumes
from, and a quantization-aware fine-tune; then the emitted ONNX files, measured.

A run has phases: ``train`` (``steps`` steps of FP32 training), ``qat`` (``qat_steps``
more with :class:`oplat.train.torchnet.FakeQuant`, starting from the FP32 result) and
``done``. Every ``checkpoint_every`` steps and at the end of each phase the whole state
(weights, Adam moments, step, phase, the val history, the QAT quantization parameters) is
written to ``checkpoint.pt`` atomically (temporary file, fsync, rename), so a kill loses
at most ``checkpoint_every`` steps. Batches are a pure function of (seed, phase, step)
and the learning rate of the step, so a resumed run draws what the uninterrupted one
would have. The checkpoint records the run's settings; resuming with others is refused.

QAT: activations are fake-quantized with the scales and zero points
:func:`oplat.arch.quantize_qdq` computes for the current weights on the calibration
patches (refreshed every ``qat_refresh`` steps), weights and biases with the ones ORT
derives from them at every step. The emitted INT8 files are :func:`quantize_qdq` of the
trained FP32 weights, calibrated on training patches, and every figure is measured by
running those files in ONNX Runtime with exact int8 arithmetic
(:func:`oplat.backends.ort.exact_session`).
"""

from __future__ import annotations

import copy
import functools
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from oplat.arch import quantize_qdq
from oplat.errors import OplatError, OplatRuntimeError
from oplat.progress import progress_bar
from oplat.train.data import ImageSet, PatchSampler, TrainData, bicubic_up
from oplat.train.metrics import psnr_y, ssim_y, to_uint8
from oplat.train.onnxio import activation_qparams, set_metadata, with_free_hw, with_input_hw
from oplat.train.torchnet import ArchNet, FakeQuant

__all__ = [
    "CHECKPOINT",
    "Evaluation",
    "TrainConfig",
    "TrainOutcome",
    "Trainer",
    "calibration_patches",
    "cosine_lr",
    "emit_and_measure",
    "measure_onnx",
    "measure_bicubic",
    "monitor_psnr",
    "qdq_params",
    "train_step",
]

CHECKPOINT = "checkpoint.pt"
_CKPT_VERSION = 1
#: Random streams of the sampler: training batches, QAT batches, calibration patches.
_STREAM_TRAIN, _STREAM_QAT, _STREAM_CALIB = 0, 1, 2


@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``val_every`` 0: every ``steps // 20`` steps; ``qat_steps`` 0: no QAT."""

    steps: int = 2000
    batch: int = 16
    patch: int = 48
    lr: float = 1e-3
    lr_min: float = 1e-5
    seed: int = 0
    qat_steps: int = 0
    qat_lr: float = 1e-4
    qat_refresh: int = 25
    calib_patches: int = 64
    val_every: int = 0
    checkpoint_every: int = 100
    monitor_images: int = 8

    #: Fields that change the result; a checkpoint of other values is not resumed.
    RESULT_FIELDS = ("steps", "batch", "patch", "lr", "lr_min", "seed", "qat_steps", "qat_lr", "qat_refresh", "calib_patches")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int":
                if not isinstance(value, int) or isinstance(value, bool):
                    raise OplatError(f"train setting {f.name} must be an integer, got {value!r}")
            elif not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise OplatError(f"train setting {f.name} must be a finite number, got {value!r}")
        positive = ("steps", "batch", "patch", "qat_refresh", "calib_patches", "checkpoint_every", "monitor_images")
        for name in positive:
            if getattr(self, name) < 1:
                raise OplatError(f"train setting {name} must be at least 1, got {getattr(self, name)}")
        for name in ("qat_steps", "val_every"):
            if getattr(self, name) < 0:
                raise OplatError(f"train setting {name} must be >= 0, got {getattr(self, name)}")
        if not (self.lr > 0 and self.qat_lr > 0 and 0 <= self.lr_min <= min(self.lr, self.qat_lr)):
            raise OplatError(f"learning rates must satisfy 0 <= lr_min <= lr, qat_lr; got lr={self.lr}, qat_lr={self.qat_lr}, lr_min={self.lr_min}")

    @property
    def val_interval(self) -> int:
        return self.val_every or max(1, self.steps // 20)

    def result_settings(self) -> dict:
        return {k: getattr(self, k) for k in self.RESULT_FIELDS}


def cosine_lr(step: int, total: int, lr: float, lr_min: float) -> float:
    """The learning rate of ``step`` (0-based) of ``total``: cosine from lr to lr_min."""
    return lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(math.pi * step / max(1, total)))


def calibration_patches(sampler: PatchSampler, count: int) -> list[np.ndarray]:
    """``count`` LR training patches (1, 3, p, p), drawn once with a fixed seed, unaugmented."""
    lr, _ = sampler.sample(0, stream=_STREAM_CALIB, augment=False, count=count)
    return [lr[i : i + 1] for i in range(lr.shape[0])]


def qdq_params(net: ArchNet, calib: list[np.ndarray]) -> dict[str, tuple[float, int]]:
    """Activation (scale, zero point) that quantize_qdq gives the current weights."""
    p = calib[0].shape[-1]
    qdq = quantize_qdq(net.onnx_model(calib[0].shape[-2], p), calibration=calib, check_fused=False)
    return activation_qparams(qdq)


def train_step(net: ArchNet, opt: torch.optim.Optimizer, lr: np.ndarray, hr: np.ndarray, device: torch.device,
               quant: FakeQuant | None = None) -> float:
    """One optimizer step of L1 loss on a batch (N×3×p×p LR, N×3×sp×sp HR); the loss."""
    x = torch.from_numpy(lr).to(device)
    target = torch.from_numpy(hr).to(device)
    net.train()
    loss = F.l1_loss(net(x, quant), target)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def monitor_psnr(net: ArchNet, images: ImageSet, device: torch.device, quant: FakeQuant | None = None) -> float:
    """Mean Y-PSNR of the module (in torch) on whole images: the progress bar's val figure."""
    values = []
    with torch.no_grad():
        for lr, hr in zip(images.lr, images.hr, strict=True):
            x = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1))[None].astype(np.float32) / 255.0).to(device)
            y = net(x, quant)[0].permute(1, 2, 0).cpu().numpy()
            values.append(psnr_y(to_uint8(y), hr, images.scale))
    return float(np.mean(values))


@dataclass
class TrainOutcome:
    """What training leaves: the FP32 and QAT weights, the history and timings."""

    fp32_state: dict
    qat_state: dict | None
    qat_params: dict[str, tuple[float, int]] | None
    history: list[dict]
    train_seconds: float
    train_steps_timed: int
    qat_seconds: float
    qat_steps_timed: int
    resumed_from: list[tuple[str, int]] = field(default_factory=list)

    @property
    def seconds_per_step(self) -> float | None:
        return self.train_seconds / self.train_steps_timed if self.train_steps_timed else None

    @property
    def seconds_per_qat_step(self) -> float | None:
        return self.qat_seconds / self.qat_steps_timed if self.qat_steps_timed else None


def _save(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - a platform without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cpu_state(module: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _to_device(obj, device: torch.device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_device(v, device) for v in obj]
    return obj


class Trainer:
    """Runs (or resumes) the phases of one training run of ``net`` on ``data``.

    ``fingerprint``: a JSON-like dict naming the run (architecture, data, settings); a
    checkpoint with another one is refused. ``progress``: a progress bar on stderr (a
    string: with that description; False: none). ``on_step``: called after every step
    with (phase, step, the monitor PSNR measured at that step or None) — a search's
    pruner reads the PSNR there, tests stop a run there.
    """

    def __init__(
        self,
        net: ArchNet,
        data: TrainData,
        config: TrainConfig,
        checkpoint: Path,
        *,
        fingerprint: dict,
        device: torch.device | None = None,
        progress: bool | str = True,
        on_step: Callable[[str, int, float | None], None] | None = None,
    ) -> None:
        self.net, self.sampler, self.monitor, self.cfg = net, data.sampler, data.monitor, config
        self.checkpoint = Path(checkpoint)
        self.fingerprint = fingerprint
        self.device = device or torch.device("cpu")
        self.progress = bool(progress)
        self.desc = progress if isinstance(progress, str) else "train"
        self.on_step = on_step

    @functools.cached_property
    def calib(self) -> list[np.ndarray]:
        """The calibration patches (QAT's quantization parameters; the emitted PTQ file's):
        drawn on first use, so a run without QAT draws them only when it emits."""
        return calibration_patches(self.sampler, self.cfg.calib_patches)

    # ------------------------------------------------------------------ checkpoint
    def _load(self) -> dict | None:
        if not self.checkpoint.exists():
            return None
        try:
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for a bad file
            raise OplatError(
                f"{self.checkpoint}: cannot read the checkpoint ({type(exc).__name__}); delete it or run with --fresh"
            ) from None
        if not isinstance(state, dict) or state.get("version") != _CKPT_VERSION:
            raise OplatError(f"{self.checkpoint}: not a checkpoint of this oplat version; delete it or run with --fresh")
        theirs = state.get("fingerprint", {})
        if theirs != self.fingerprint:
            diff = [k for k in sorted(set(theirs) | set(self.fingerprint)) if theirs.get(k) != self.fingerprint.get(k)]
            detail = "; ".join(f"{k}: {theirs.get(k)!r} → {self.fingerprint.get(k)!r}" for k in diff[:3])
            raise OplatError(
                f"{self.checkpoint} is a checkpoint of another run ({detail}); run with the same settings to resume, "
                "or give another --name, or --fresh to start over"
            )
        return state

    def _state(self, phase: str, step: int, opt, extra: dict) -> dict:
        return {
            "version": _CKPT_VERSION,
            "fingerprint": self.fingerprint,
            "phase": phase,
            "step": step,
            "model": _cpu_state(self.net),
            "optimizer": _to_device(opt.state_dict(), torch.device("cpu")) if opt is not None else {},
            **extra,
        }

    # ------------------------------------------------------------------ run
    def run(self) -> TrainOutcome:
        cfg, net = self.cfg, self.net
        state = self._load()
        resumed: list[tuple[str, int]] = []
        book = {"history": [], "train_seconds": 0.0, "train_steps_timed": 0, "qat_seconds": 0.0,
                "qat_steps_timed": 0, "fp32_model": None, "qat_act": None}
        phase, step = "train", 0
        if state is not None:
            phase, step = state["phase"], int(state["step"])
            for key in book:
                if key in state:
                    book[key] = state[key]
            net.load_state_dict(state["model"])
            resumed.append((phase, step))
        net.to(self.device)

        if phase == "train":
            opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
            if state is not None and state["phase"] == "train" and state["optimizer"]:
                opt.load_state_dict(_to_device(state["optimizer"], self.device))
            self._loop("train", step, cfg.steps, opt, book, quant=None)
            book["fp32_model"] = _cpu_state(net)
            phase, step = ("qat" if cfg.qat_steps else "done"), 0
            _save(self.checkpoint, self._state(phase, 0, None, book))
            state = None

        if phase == "qat":
            opt = torch.optim.Adam(net.parameters(), lr=cfg.qat_lr)
            if state is not None and state["phase"] == "qat" and state["optimizer"]:
                opt.load_state_dict(_to_device(state["optimizer"], self.device))
            self._loop("qat", step, cfg.qat_steps, opt, book, quant=True)
            phase = "done"
            _save(self.checkpoint, self._state("done", 0, None, book))

        qat_state = _cpu_state(net) if cfg.qat_steps else None
        return TrainOutcome(
            fp32_state=book["fp32_model"] or _cpu_state(net),
            qat_state=qat_state,
            qat_params=book["qat_act"],
            history=list(book["history"]),
            train_seconds=float(book["train_seconds"]),
            train_steps_timed=int(book["train_steps_timed"]),
            qat_seconds=float(book["qat_seconds"]),
            qat_steps_timed=int(book["qat_steps_timed"]),
            resumed_from=resumed,
        )

    def _loop(self, phase: str, start: int, total: int, opt, book: dict, *, quant: bool | None) -> None:
        cfg, net = self.cfg, self.net
        lr0 = cfg.lr if phase == "train" else cfg.qat_lr
        stream = _STREAM_TRAIN if phase == "train" else _STREAM_QAT
        val_every = cfg.val_interval if phase == "train" else max(1, min(cfg.val_interval, total // 4 or 1))
        fq = None
        if quant:
            if book["qat_act"] is None or start % cfg.qat_refresh == 0:
                book["qat_act"] = qdq_params(net, self.calib)
            fq = FakeQuant(book["qat_act"])
        last_val = next((h["val_psnr"] for h in reversed(book["history"]) if h["phase"] == phase), None)
        loss_ema = None
        bar = progress_bar(total=total, desc=f"{self.desc} {phase}", unit="step", enabled=self.progress, initial=start)
        try:
            for step in range(start, total):
                if quant and step != start and step % cfg.qat_refresh == 0:
                    book["qat_act"] = qdq_params(net, self.calib)
                    fq = FakeQuant(book["qat_act"])
                t0 = time.perf_counter()
                lr_t = cosine_lr(step, total, lr0, cfg.lr_min)
                for group in opt.param_groups:
                    group["lr"] = lr_t
                lr_np, hr_np = self.sampler.sample(step, stream=stream)
                value = train_step(net, opt, lr_np, hr_np, self.device, fq)
                if self.device.type == "cuda":  # pragma: no cover - timing on a GPU
                    torch.cuda.synchronize()
                book[f"{phase}_seconds"] += time.perf_counter() - t0
                book[f"{phase}_steps_timed"] += 1
                if not math.isfinite(value):
                    raise OplatRuntimeError(
                        f"the training loss became {value} at {phase} step {step + 1}; lower --lr (now {lr0:g})"
                    )
                loss_ema = value if loss_ema is None else 0.95 * loss_ema + 0.05 * value
                done = step + 1
                measured = None
                if done % val_every == 0 or done == total:
                    net.eval()
                    last_val = measured = monitor_psnr(net, self.monitor, self.device, fq)
                    book["history"].append({"phase": phase, "step": done, "loss": round(loss_ema, 6), "val_psnr": round(last_val, 4)})
                if done % cfg.checkpoint_every == 0 and done < total:
                    _save(self.checkpoint, self._state(phase, done, opt, book))
                bar.update(1)
                text = f"loss {loss_ema:.4f}"
                if last_val is not None:
                    text += f" · val {last_val:.2f} dB"
                bar.set_postfix_str(text, refresh=False)
                if self.on_step is not None:
                    self.on_step(phase, done, measured)
        finally:
            bar.close()


# ---------------------------------------------------------------------- measuring
@dataclass
class Evaluation:
    """PSNR/SSIM (Y, border = scale) of one model on whole validation images."""

    label: str
    file: str | None
    psnr: float
    ssim: float
    per_image: dict[str, dict[str, float]]

    def to_json(self) -> dict:
        return asdict(self)


def _evaluation(label: str, file: str | None, pairs: list[tuple[str, np.ndarray, np.ndarray]], scale: int) -> Evaluation:
    per = {name: {"psnr": psnr_y(sr, hr, scale), "ssim": ssim_y(sr, hr, scale)} for name, sr, hr in pairs}
    return Evaluation(
        label,
        file,
        float(np.mean([v["psnr"] for v in per.values()])),
        float(np.mean([v["ssim"] for v in per.values()])),
        per,
    )


def measure_bicubic(images: ImageSet) -> Evaluation:
    """PSNR/SSIM of the bicubic baseline on ``images``; computed once per set (every trial
    of a search shares its validation set, and the baseline does not depend on the net)."""
    if "bicubic" not in images.memo:
        pairs = [(n, bicubic_up(lr, images.scale), hr) for n, lr, hr in zip(images.names, images.lr, images.hr, strict=True)]
        images.memo["bicubic"] = _evaluation("bicubic", None, pairs, images.scale)
    return images.memo["bicubic"]


def measure_onnx(path: Path, images: ImageSet, label: str, *, threads: int | None = None) -> Evaluation:
    """Run the ONNX file at ``path`` (its graph and weights as stored; only the declared
    input size is freed) on every whole image with exact int8 arithmetic."""
    from oplat.backends.ort import exact_session

    model = with_free_hw(onnx.load(str(path)))
    sess = exact_session(model, threads=threads or (os.cpu_count() or 1))
    name = sess.get_inputs()[0].name
    pairs = []
    for n, lr, hr in zip(images.names, images.lr, images.hr, strict=True):
        x = np.ascontiguousarray(lr.transpose(2, 0, 1))[None].astype(np.float32) / np.float32(255.0)
        y = sess.run(None, {name: x})[0][0].transpose(1, 2, 0)
        pairs.append((n, to_uint8(y), hr))
    return _evaluation(label, path.name, pairs, images.scale)


def _write(model: onnx.ModelProto, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)


def emit_and_measure(
    net: ArchNet,
    outcome: TrainOutcome,
    calib: list[np.ndarray],
    images: ImageSet,
    out_dir: Path,
    *,
    metadata: dict[str, str] | None = None,
    threads: int | None = None,
    files: dict[str, str] | None = None,
) -> dict[str, Evaluation]:
    """Write best.onnx (FP32), best.int8.onnx (PTQ) and, after QAT, best.qat.int8.onnx
    (all for the arch's input size, with ``metadata``), then measure each file and the
    bicubic baseline on ``images``. Returns {"bicubic", "fp32", "int8_ptq"[, "int8_qat"]}."""
    arch = net.arch
    names = {"fp32": "best.onnx", "int8_ptq": "best.int8.onnx", "int8_qat": "best.qat.int8.onnx", **(files or {})}
    meta = dict(metadata or {})
    ph, pw = calib[0].shape[-2:]
    net = copy.deepcopy(net).cpu()
    results = {"bicubic": measure_bicubic(images)}
    net.load_state_dict(outcome.fp32_state)
    fp32 = net.onnx_model()
    set_metadata(fp32, {**meta, "oplat.precision": "fp32"})
    _write(fp32, out_dir / names["fp32"])
    ptq = with_input_hw(quantize_qdq(net.onnx_model(ph, pw), calibration=calib), arch.in_h, arch.in_w, arch.scale)
    set_metadata(ptq, {**meta, "oplat.precision": "int8", "oplat.quantization": "PTQ: static QDQ, min-max on training patches"})
    _write(ptq, out_dir / names["int8_ptq"])
    todo = [("fp32", "FP32"), ("int8_ptq", "INT8 PTQ")]
    if outcome.qat_state is not None:
        net.load_state_dict(outcome.qat_state)
        qat = with_input_hw(quantize_qdq(net.onnx_model(ph, pw), calibration=calib), arch.in_h, arch.in_w, arch.scale)
        set_metadata(qat, {**meta, "oplat.precision": "int8", "oplat.quantization": "QAT: fine-tuned with QDQ fake-quant, then static QDQ"})
        _write(qat, out_dir / names["int8_qat"])
        todo.append(("int8_qat", "INT8 QAT"))
    for key, label in todo:
        results[key] = measure_onnx(out_dir / names[key], images, label, threads=threads)
    return results
