"""Benchmark of the measurement core (prints figures; asserts nothing).

1. Time to measure an op set on a device (default: sr-core on cpu), and the share of
   entries whose rounds agree within the policy's threshold (3%).
2. oplat's median against a bare ``session.run`` loop, for a large and a tiny op: the
   overhead oplat's harness adds (or removes: IOBinding skips output allocation).

    python benchmarks/measure_bench.py                      # full sr-core on cpu
    python benchmarks/measure_bench.py --opset quick        # a quick look
    python benchmarks/measure_bench.py --table results/cpu/sr-core.jsonl   # (1) from a table already measured
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def bare_loop_median_ms(spec, runs: int) -> float:
    """Median of a plain ``session.run(None, feeds)`` loop, as a user would write it."""
    import onnxruntime as ort

    from oplat.build import inputs_for, model_from_op

    model = model_from_op(spec)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = inputs_for(model)
    for _ in range(max(3, runs // 10)):
        sess.run(None, feeds)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def oplat_median_ms(spec) -> float:
    from oplat.devices import get_device
    from oplat.measure import measure_specs
    from oplat.table import read_table

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "t.jsonl"
        measure_specs([spec], get_device("cpu"), opset="bench", out=out, progress=False)
        return read_table(out).rows[0].stats.median_ms


def agreement(rows: list[dict]) -> tuple[int, int, float]:
    ok = [r for r in rows if r["status"] == "ok"]
    agreed = [r for r in ok if not r.get("noisy")]
    return len(agreed), len(ok), 100.0 * len(agreed) / max(1, len(ok))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--opset", default="sr-core")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--table", help="use this measured table for (1) instead of measuring now")
    parser.add_argument("--skip-overhead", action="store_true")
    args = parser.parse_args()

    from oplat.devices import get_device
    from oplat.measure import measure_specs
    from oplat.opset import load_opset
    from oplat.spec import OpSpec
    from oplat.table import read_table

    if args.table:
        rows = [r.to_json() for r in read_table(args.table).latest().values()]
        print(f"(1) table {args.table}: {len(rows)} rows (measuring time not re-run)")
    else:
        opset = load_opset(args.opset)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "t.jsonl"
            t0 = time.perf_counter()
            measure_specs(opset.specs, get_device(args.device), opset=opset.name, out=out)
            elapsed = time.perf_counter() - t0
            rows = [r.to_json() for r in read_table(out).rows]
        print(f"(1) measured {len(rows)} entries of {opset.name} on {args.device} in {elapsed:.0f} s "
              f"({elapsed / max(1, len(rows)):.2f} s/entry)")
    agreed, ok, share = agreement(rows)
    spreads = [r["spread_pct"] for r in rows if r["status"] == "ok"]
    print(f"    rounds agree within 3%: {agreed}/{ok} entries ({share:.1f}%); "
          f"round spread median {np.median(spreads):.2f}%, p90 {np.percentile(spreads, 90):.2f}%")
    extra = [r for r in rows if r.get("extra_rounds")]
    print(f"    entries that needed extra rounds: {len(extra)}")

    if not args.skip_overhead:
        print("(2) oplat median vs a bare session.run loop (ms, 1 thread)")
        cases = [
            ("large: conv3x3 64→64 360×640 fp32", OpSpec("conv", 64, 360, 640, c_out=64, kernel=3), 30),
            ("tiny:  relu c8 16×16 fp32", OpSpec("relu", 8, 16, 16), 20000),
        ]
        for name, spec, runs in cases:
            bare = bare_loop_median_ms(spec, runs)
            ours = oplat_median_ms(spec)
            print(f"    {name}: oplat {ours:.4f}  bare loop {bare:.4f}  oplat/bare {ours / bare:.3f}  "
                  f"difference {1000 * (ours - bare):+.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
