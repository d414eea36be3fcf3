"""The psnr objective of ``oplat search --objective psnr``: trials trained and judged by
the PSNR of their own ONNX files, an Optuna pruner, and the winner's full training.

Each *feasible* trial (priced first: an infeasible network is never trained) is trained
for :attr:`PsnrObjective.trial_steps` steps (L1, Adam, cosine; :mod:`oplat.train.loop`)
on training patches. Every ``trial_steps / reports`` steps the monitor PSNR-Y (FP32, in
torch, on the first validation images) is reported to Optuna, and the study's pruner
(Hyperband by default, or successive halving) stops a trial whose curve is among the
worst at a rung: the trial ends PRUNED and is never a candidate. A trial that finishes is
written as FP32 ONNX and as QDQ INT8 ONNX (static, min-max calibrated on training
patches: the form the search emits) and both files are run in ONNX Runtime with exact
int8 arithmetic on the whole validation images. The objective is the PSNR-Y of the
network the budget constrains (INT8 by default); FP32 PSNR, INT8 PSNR and the INT8 drop
are the trial's user attributes (``fp32_psnr``, ``int8_psnr``, ``int8_drop_db``).

The winner is then trained for :attr:`PsnrObjective.steps` in
``<out_dir>/train/trial-<n>-<steps>steps/`` (checkpointed, so a killed emission resumes there; workers
that share the folder take turns on its lock and the second finds the run done), and the
emitted ``best.onnx`` / ``best.int8.onnx`` hold those weights; the report's PSNRs are
measured from the files as written.

Nothing here imports torch at module level; :func:`PsnrObjective.scorer` needs the
``train`` extra.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oplat.errors import OplatError, OplatRuntimeError
from oplat.locks import Flock

if TYPE_CHECKING:
    from oplat.arch import ArchSpec

__all__ = ["PRUNERS", "PsnrObjective", "TrialScorer", "TrainedWinner", "WinnerQuality"]

#: ``--pruner`` choices.
PRUNERS = ("hyperband", "halving", "none")


@dataclass(frozen=True, kw_only=True)
class PsnrObjective:
    """How a psnr search trains and judges networks (``oplat search --objective psnr``).

    Attributes:
        trial_steps: training steps of one trial (short: a ranking, not a result).
        steps: training steps of the winner.
        batch, patch, lr, seed: as ``oplat train`` (patches per step, LR patch size, Adam
            learning rate cosine-decayed to lr/10 at most 1e-5, seed of weights and patches).
        reports: intermediate values a trial reports to the pruner (its rungs).
        pruner: ``hyperband``, ``halving`` (successive halving) or ``none``. A ``--pareto``
            study is never pruned (Optuna prunes single-objective studies only).
        data, val: folders of HR images (None: the built-in photographs of scikit-image).
        threads: torch and ONNX Runtime threads (None: torch's default).
        torch_device: ``auto`` (a CUDA GPU when torch sees one), ``cpu`` or ``cuda``.
    """

    trial_steps: int = 300
    steps: int = 2000
    batch: int = 16
    patch: int = 48
    lr: float = 1e-3
    seed: int = 0
    reports: int = 6
    pruner: str = "hyperband"
    data: str | None = None
    val: str | None = None
    threads: int | None = None
    torch_device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("trial_steps", "steps", "batch", "patch", "reports"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise OplatError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.pruner not in PRUNERS:
            raise OplatError(f"pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise OplatError(f"lr must be a positive number, got {self.lr!r}")

    @property
    def report_every(self) -> int:
        """Steps between two intermediate values (the pruner's rungs)."""
        return max(1, self.trial_steps // self.reports)

    def train_config(self, *, trial: bool):
        """The :class:`~oplat.train.loop.TrainConfig` of a trial (``trial_steps``, the
        monitor PSNR every :attr:`report_every` steps, no checkpoint before its end) or of
        the winner (``steps``, checkpoints every 100 steps)."""
        from oplat.train.loop import TrainConfig

        steps = self.trial_steps if trial else self.steps
        return TrainConfig(steps=steps, batch=self.batch, patch=self.patch, lr=self.lr, lr_min=min(1e-5, self.lr / 10),
                           seed=self.seed, val_every=self.report_every if trial else 0,
                           checkpoint_every=steps if trial else min(100, steps))

    def settings(self) -> dict[str, Any]:
        """What makes two trials' scores comparable (a study resumed with other settings
        is refused): everything but the winner's ``steps``, threads and device."""
        keep = ("trial_steps", "batch", "patch", "lr", "seed", "reports", "pruner", "data", "val")
        return {k: v for k, v in asdict(self).items() if k in keep}

    def make_pruner(self, *, pareto: bool):
        """The study's Optuna pruner (a no-op one for ``none`` and for Pareto studies)."""
        import optuna

        if pareto or self.pruner == "none":
            return optuna.pruners.NopPruner()
        if self.pruner == "halving":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=self.report_every, reduction_factor=3)
        return optuna.pruners.HyperbandPruner(min_resource=self.report_every, max_resource=self.trial_steps,
                                              reduction_factor=3)

    def pruner_text(self, *, pareto: bool) -> str:
        if pareto:
            return "none (a Pareto study: Optuna prunes single-objective studies only)"
        if self.pruner == "none":
            return "none"
        name = "Hyperband" if self.pruner == "hyperband" else "successive halving"
        return f"{name} (η = 3) on the monitor PSNR every {self.report_every} steps"

    def scorer(self, scale: int) -> TrialScorer:
        """Load the data and pick the torch device (needs the ``train`` extra)."""
        from oplat.train import require_torch

        require_torch("oplat search --objective psnr")
        return TrialScorer(self, scale)


@dataclass(frozen=True)
class WinnerQuality:
    """The emitted files' quality, measured from disk: ``results`` maps ``bicubic``,
    ``fp32``, ``int8`` to :class:`~oplat.train.loop.Evaluation`; how they were trained."""

    results: dict
    steps: int
    seconds_per_step: float | None
    train_seconds: float
    data_text: str
    device_text: str
    folder: Path
    resumed_from: list

    @property
    def int8_drop_db(self) -> float:
        return self.results["fp32"].psnr - self.results["int8"].psnr


@dataclass(frozen=True)
class TrainedWinner:
    """The winner's trained models (FP32, QDQ INT8, at the arch's input size) and its run."""

    fp32: Any
    int8: Any
    outcome: Any
    steps: int
    folder: Path


class TrialScorer:
    """Trains and judges networks for one search process: the data is decoded once."""

    def __init__(self, objective: PsnrObjective, scale: int) -> None:
        import torch

        from oplat.train.data import TrainData
        from oplat.train.loop import calibration_patches
        from oplat.train.run import torch_device

        self.objective = objective
        cfg = objective.train_config(trial=True)
        if objective.threads:
            torch.set_num_threads(objective.threads)
        self.device = torch_device(objective.torch_device)
        self.data = TrainData.load(objective.data, objective.val, scale=scale, patch=cfg.patch, batch=cfg.batch,
                                   seed=cfg.seed, monitor_images=cfg.monitor_images)
        self.calib = calibration_patches(self.data.sampler, cfg.calib_patches)

    @property
    def device_text(self) -> str:
        from oplat.train.run import device_text

        return device_text(self.device)

    # ------------------------------------------------------------------ trials
    def score(self, trial, arch: ArchSpec, *, report: bool) -> dict[str, Any]:
        """Train ``arch`` for the trial budget and measure its ONNX files; the user
        attributes of the trial. With ``report``, the monitor PSNR goes to the pruner,
        which may end the trial (``optuna.TrialPruned``). A diverged training gives
        ``train_error`` and no PSNR."""
        import optuna

        from oplat.train.loop import CHECKPOINT, Trainer, emit_and_measure
        from oplat.train.torchnet import ArchNet

        cfg = self.objective.train_config(trial=True)

        def on_step(phase: str, step: int, psnr: float | None) -> None:
            if report and psnr is not None and phase == "train":
                trial.report(psnr, step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"monitor PSNR {psnr:.2f} dB at step {step}")

        started = time.perf_counter()
        net = ArchNet.from_arch(arch, seed=cfg.seed)
        with tempfile.TemporaryDirectory(prefix="oplat-trial-") as tmp:
            try:
                outcome = Trainer(net, self.data, cfg, Path(tmp) / CHECKPOINT, fingerprint={}, device=self.device,
                                  progress=False, on_step=on_step).run()
            except OplatRuntimeError as exc:  # the loss diverged: this network scores nothing
                return {"train_error": str(exc), "train_steps": cfg.steps}
            results = emit_and_measure(net, outcome, self.calib, self.data.val, Path(tmp), threads=self.objective.threads)
        fp32, int8 = results["fp32"].psnr, results["int8_ptq"].psnr
        return {
            "fp32_psnr": fp32,
            "int8_psnr": int8,
            "int8_drop_db": fp32 - int8,
            "bicubic_psnr": results["bicubic"].psnr,
            "train_steps": cfg.steps,
            "seconds_per_step": outcome.seconds_per_step,
            "trial_seconds": time.perf_counter() - started,
        }

    # ------------------------------------------------------------------ the winner
    def train_winner(self, arch: ArchSpec, folder: Path, *, progress: bool) -> TrainedWinner:
        """Train ``arch`` for the full budget in ``folder`` (resuming its checkpoint; one
        process at a time); its FP32 and QDQ INT8 models."""
        from oplat.arch import quantize_qdq
        from oplat.train.loop import CHECKPOINT, Trainer
        from oplat.train.onnxio import with_input_hw
        from oplat.train.run import run_fingerprint
        from oplat.train.torchnet import ArchNet

        cfg = self.objective.train_config(trial=False)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OplatRuntimeError(f"cannot create {folder}: {exc.strerror}") from None
        net = ArchNet.from_arch(arch, seed=cfg.seed)
        with Flock(folder / ".lock", blocking=True):  # another worker training this winner: wait for it
            outcome = Trainer(net, self.data, cfg, folder / CHECKPOINT, fingerprint=run_fingerprint(arch, self.data, cfg),
                              device=self.device, progress=f"train winner ({cfg.steps} steps)" if progress else False).run()
        net = net.cpu()
        net.load_state_dict(outcome.fp32_state)
        ph, pw = self.calib[0].shape[-2:]
        int8 = with_input_hw(quantize_qdq(net.onnx_model(ph, pw), calibration=self.calib), arch.in_h, arch.in_w, arch.scale)
        return TrainedWinner(net.onnx_model(), int8, outcome, cfg.steps, folder)

    def measure_files(self, paths: dict[str, Path], winner: TrainedWinner) -> WinnerQuality:
        """PSNR/SSIM of the emitted files (``fp32``, ``int8``) as written, and bicubic."""
        from oplat.train.loop import measure_bicubic, measure_onnx

        results = {"bicubic": measure_bicubic(self.data.val)}
        for prec, label in (("fp32", "FP32"), ("int8", "INT8 PTQ")):
            results[prec] = measure_onnx(paths[prec], self.data.val, label, threads=self.objective.threads)
        outcome = winner.outcome
        return WinnerQuality(results, winner.steps, outcome.seconds_per_step, float(outcome.train_seconds),
                             self.data.text, self.device_text, winner.folder, list(outcome.resumed_from))

