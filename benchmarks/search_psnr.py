"""Benchmark of `oplat search --objective psnr`: seconds per trial (trained to the end,
pruned, or infeasible and never trained) and per training step, on this machine (prints;
asserts nothing).

Runs a real psnr search of the ABPN space, priced by a latency table (no device: the
latencies are predictions), each feasible trial trained ``--trial-steps`` steps on the
built-in photographs and judged by the INT8 PSNR of its ONNX file; the winner is then
trained ``--steps`` steps. Needs the train extra.

    python benchmarks/search_psnr.py                                   # 8 trials × 60 steps, winner 120 steps
    python benchmarks/search_psnr.py --trials 12 --trial-steps 150 --steps 1000 --budget 300ms
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=str(REPO / "results" / "cpu" / "sr-core.jsonl"))
    ap.add_argument("--budget", default="300ms")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--trial-steps", type=int, default=60)
    ap.add_argument("--steps", type=int, default=120, help="the winner's training steps")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=48)
    ap.add_argument("--pruner", default="hyperband")
    ap.add_argument("--threads", type=int, default=None, help="torch / ONNX Runtime threads (default: torch's)")
    args = ap.parse_args(argv)

    import optuna
    import torch
    from optuna.trial import TrialState

    from oplat.predict import Predictor
    from oplat.search import run_search
    from oplat.search.trained import PsnrObjective
    from oplat.space import load_space
    from oplat.units import parse_duration_ms

    objective = PsnrObjective(trial_steps=args.trial_steps, steps=args.steps, batch=args.batch, patch=args.patch,
                              pruner=args.pruner, threads=args.threads, torch_device="cpu")
    with tempfile.TemporaryDirectory(prefix="oplat-psnr-bench-") as tmp:
        t0 = time.perf_counter()
        result = run_search(space=load_space("abpn"), predictor=Predictor.from_table(args.table),
                            budget_ms=parse_duration_ms(args.budget), trials=args.trials, name="bench",
                            out_dir=Path(tmp) / "bench", progress=False, objective=objective)
        wall = time.perf_counter() - t0
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(result.journal)))
        trials = optuna.load_study(study_name="bench", storage=storage).get_trials(deepcopy=False)
    kinds: dict[str, list[float]] = {"trained": [], "pruned": [], "infeasible": []}
    steps = []
    for t in trials:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds()
        if t.state == TrialState.PRUNED:
            kinds["pruned"].append(seconds)
        elif "int8_psnr" in t.user_attrs:
            kinds["trained"].append(seconds)
            steps.append(t.user_attrs["seconds_per_step"])
        else:
            kinds["infeasible"].append(seconds)
    print(f"psnr search of abpn, {args.trials} trials × {args.trial_steps} steps (batch {args.batch} × "
          f"{args.patch}×{args.patch}), winner {args.steps} steps; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    for kind, values in kinds.items():
        if values:
            print(f"  {kind:10s} {len(values):3d} trial(s): {statistics.median(values):7.2f} s/trial median "
                  f"(min {min(values):.2f}, max {max(values):.2f})")
    if steps:
        print(f"  trial training: {statistics.median(steps):.3f} s/step median")
    q = result.quality
    print(f"  winner: {result.description}; trained {q['steps']} steps and emitted in {wall - result.elapsed_s:.1f} s; "
          f"FP32 {q['fp32']['psnr']:.2f} dB, INT8 {q['int8']['psnr']:.2f} dB, bicubic {q['bicubic']['psnr']:.2f} dB")
    print(f"  whole search: {wall:.1f} s ({result.elapsed_s:.1f} s of trials)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
