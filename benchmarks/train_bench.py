"""Benchmark of `oplat train`: seconds per training step on this machine (prints; asserts nothing).

Times the training loop's own step (``oplat.train.loop.train_step``: L1 loss, Adam, one
batch of random patches of the built-in images) for ABPN ×3 — FP32 and QAT (with the
QDQ fake-quant) — after a warm-up, as the median of several timed steps, for each thread
count asked. Needs the train extra.

    python benchmarks/train_bench.py                       # ABPN, batch 16 × 48×48, 1 and all threads
    python benchmarks/train_bench.py --batch 16 --patch 64 --threads 2 --steps 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="abpn", help="built-in name or ARCH.json (default: abpn)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=48)
    ap.add_argument("--steps", type=int, default=15, help="timed steps per case (default: 15)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", default=f"1,{os.cpu_count()}", help="comma list of torch thread counts")
    args = ap.parse_args(argv)

    import torch

    from oplat.train.data import PatchSampler, resolve_data
    from oplat.train.loop import calibration_patches, qdq_params, train_step
    from oplat.train.onnxio import load_arch
    from oplat.train.torchnet import ArchNet, FakeQuant

    arch, _ = load_arch(args.arch)
    train, _, _ = resolve_data(None, None)
    sampler = PatchSampler(train, scale=arch.scale, patch=args.patch, batch=args.batch, seed=0)
    calib = calibration_patches(sampler, 16)
    device = torch.device("cpu")
    print(f"{args.arch}: batch {args.batch} × {args.patch}×{args.patch} LR patches (×{arch.scale}), "
          f"torch {torch.__version__}, {os.cpu_count()} CPUs")
    for threads in sorted({int(t) for t in args.threads.split(",") if t.strip()}):
        torch.set_num_threads(threads)
        for mode in ("fp32", "qat"):
            net = ArchNet.from_arch(arch)
            opt = torch.optim.Adam(net.parameters(), lr=1e-3)
            fq = FakeQuant(qdq_params(net, calib)) if mode == "qat" else None
            times = []
            for step in range(args.warmup + args.steps):
                lr, hr = sampler.sample(step)
                t0 = time.perf_counter()
                train_step(net, opt, lr, hr, device, fq)
                if step >= args.warmup:
                    times.append(time.perf_counter() - t0)
            print(f"  {threads} thread(s) {mode:4s}: {statistics.median(times):.3f} s/step median "
                  f"(min {min(times):.3f}, max {max(times):.3f}, {len(times)} steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
