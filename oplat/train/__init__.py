"""Training oplat's networks (the ``train`` extra: PyTorch and scikit-image).

``oplat train`` is :func:`run_training`. Importing this package needs neither torch nor
scikit-image; :mod:`oplat.train.torchnet` and :mod:`oplat.train.loop` import torch and
are loaded only when training runs. Modules: ``data`` (images, MATLAB bicubic, patches),
``metrics`` (Y-PSNR/SSIM), ``onnxio`` (architecture files, input sizes, QDQ parameters),
``torchnet`` (ArchSpec → torch module ↔ ONNX, QDQ fake-quant), ``loop`` (training,
checkpoints, QAT, emitted files measured in ONNX Runtime), ``report`` (train.md/json),
``run`` (the command as one call).
"""

from __future__ import annotations

from oplat.train.run import TORCH_HINT, TrainOptions, TrainResult, require_torch, run_training

__all__ = ["TORCH_HINT", "TrainOptions", "TrainResult", "require_torch", "run_training"]
