"""Benchmark of the search loop: trials per second from a latency table (prints; asserts nothing).

Runs ``oplat.search.search_throughput`` — the same loop as ``run_search`` (Optuna TPE with
the latency constraint, the default journal storage, cached predictions through the
kernel path), without emitting files — several times and prints each rate and the median.

    python benchmarks/search_bench.py                           # synthetic table, abpn space
    python benchmarks/search_bench.py --table results/cpu/sr-core.jsonl --space abpn
    python benchmarks/search_bench.py --trials 1000 --repeat 3 --pareto
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path


def synthetic_rows(space) -> list[dict]:
    """``ok`` rows for every kernel a uniform-width space's FP32 and INT8 networks run:
    median_ms = MACs/1e9 + elements moved/1e8 (halved for int8)."""
    from oplat.search import arch_from_values, arch_kernels

    specs = {}
    for depth in range(space.depth_min, space.depth_max + 1):
        for width in space.channels:
            for residual in space.residuals:
                values = {"depth": depth, "width": width, "residual": residual}
                values.update({f"width_{i}": width for i in range(depth + 1)})
                arch = arch_from_values(space, values)
                for precision in ("fp32", "int8"):
                    for kernel in arch_kernels(arch, precision):
                        specs[kernel.spec.key] = kernel.spec
    rows = []
    for s in specs.values():
        ms = (s.macs / 1e9 + s.elements_moved / 1e8) * (0.5 if s.precision == "int8" else 1.0)
        rows.append({"schema_version": 1, "key": s.key, "spec": s.as_dict(), "label": s.label(), "status": "ok",
                     "device": {"name": "synthetic"}, "median_ms": ms})
    return rows


def main(argv: list[str] | None = None) -> int:
    from oplat.predict import Predictor
    from oplat.search import Prices, search_throughput
    from oplat.space import load_space, sample_arch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="abpn", help="search space name or .toml path (default abpn)")
    ap.add_argument("--table", help="latency table (.jsonl); default: a synthetic table for the space")
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--precision", default="int8", choices=("int8", "fp32"))
    ap.add_argument("--budget-ms", type=float, help="default: the median predicted latency of 64 random networks")
    ap.add_argument("--pareto", action="store_true")
    args = ap.parse_args(argv)

    space = load_space(args.space)
    predictor = Predictor.from_table(args.table) if args.table else Predictor(synthetic_rows(space), source="synthetic")
    budget = args.budget_ms
    if budget is None:
        prices = Prices(predictor, device=None, table_path=None, policy=None, opset="")
        budget = statistics.median(prices.price(sample_arch(space, i), args.precision).predicted_ms for i in range(64))
    print(f"space {space.name} ({space.in_h}×{space.in_w}), table {predictor.source}, budget {budget:.4g} ms {args.precision}, "
          f"{args.trials} trials, {'NSGA-II' if args.pareto else 'TPE'}")
    rates = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="oplat-search-bench-") as tmp:
            rate = search_throughput(
                space=space, predictor=predictor, budget_ms=budget, precision=args.precision, trials=args.trials,
                out_dir=Path(tmp), seed=i, pareto=args.pareto,
            )
        rates.append(rate)
        print(f"  run {i + 1}: {rate:.1f} trials/s")
    print(f"median: {statistics.median(rates):.1f} trials/s over {args.trials} trials")
    return 0


if __name__ == "__main__":
    sys.exit(main())
