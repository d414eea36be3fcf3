"""Any network, any op: the seed networks predicted, measured kernel by kernel, and timed whole.

For each device (``cpu``: ONNX Runtime, 1 thread; ``openvino``: f32 explicit) and each of
the networks of :mod:`seed_nets_models` (ECBSR-M4C16 ×2, XLSR ×3, Real-ESRGAN with 2
RRDBs, a UNet, SRCNN 9-5-5, FSRCNN(56,12,4); each FP32 and ``quantize_qdq`` INT8; plus
a classic classifier export in FP32):

1. ``predict`` against a one-row table (a 1×4×4 relu): every kernel of the network is
   listed as missing at once (:class:`oplat.predict.MissingKernels`); the counts are kept.
2. Every distinct kernel of every network is cut out and measured the way
   ``oplat measure --model`` does it (:func:`oplat.extract.extract_kernels` +
   :func:`oplat.measure.measure_specs` with ``models=``) into one table for this run
   (``results/_scratch/seed-nets/<device>.jsonl``; the committed tables are never
   touched).
3. ``predict`` again from that table: every kernel priced as measured; the total is the
   UNCALIBRATED plain sum of kernel times on the p10 statistic (the table has no
   composition model).
4. The whole networks are timed end to end in the same run with the same timing policy
   (:func:`oplat.measure.time_networks`, interleaved batches of 8, with the runtime's
   per-node profile) and compared on p10. The error is split by kernel type the way
   ``oplat validate`` does it: the network's p10 wall time divided by the profiled share of
   each kernel type; the largest (predicted − measured) share is where the error sits.

Writes ``results/validate/<device>/seed-nets.md`` (``--quick``: a smoke run at small
sizes and a short policy, written under the scratch folder only).

    python benchmarks/seed_nets.py                      # cpu and openvino, 15-30 min
    python benchmarks/seed_nets.py --devices cpu --quick
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import seed_nets_models as nets  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
#: Networks timed together with interleaved rounds (as oplat validate: 8).
NETWORK_BATCH = 8

#: name -> builder keyword sizes; --quick uses the small ones.
SIZES = {
    "ecbsr-m4c16-x2": dict(h=360, w=640),
    "xlsr-x3": dict(h=360, w=640),
    "real-esrgan-rrdb2-x4": dict(h=96, w=96),
    "unet": dict(h=256, w=256),
    "srcnn-955-x3": dict(h=144, w=256),
    "fsrcnn-56-12-4-x3": dict(h=360, w=640),
    "classifier": dict(h=112, w=112),
}
QUICK_SIZES = {
    "ecbsr-m4c16-x2": dict(h=36, w=64),
    "xlsr-x3": dict(h=36, w=64),
    "real-esrgan-rrdb2-x4": dict(h=16, w=16),
    "unet": dict(h=32, w=32),
    "srcnn-955-x3": dict(h=24, w=32),
    "fsrcnn-56-12-4-x3": dict(h=36, w=64),
    "classifier": dict(h=32, w=32),
}


@dataclass
class Net:
    name: str
    precision: str
    path: Path
    in_shape: tuple
    out_shape: tuple
    kernels: int = 0
    distinct: int = 0
    first_missing: int = 0  # kernels the one-row table could not price
    first_missing_distinct: int = 0
    first_error: str = ""  # an unexpected error of the first predict
    predicted_ms: float | None = None
    measured_share: float = 0.0
    predict_error: str = ""  # why the second predict failed (a kernel that did not measure)
    measured: dict | None = None  # p10, median, p90, spread, noisy
    run_error: str = ""  # why the whole network does not run on the device
    by_type: dict = field(default_factory=dict)  # type -> [predicted ms, measured share ms]

    @property
    def label(self) -> str:
        return f"{self.name} {self.precision}"

    @property
    def error_pct(self) -> float | None:
        if self.predicted_ms is None or not self.measured:
            return None
        return 100.0 * (self.predicted_ms - self.measured["p10_ms"]) / self.measured["p10_ms"]


def build_networks(out_dir: Path, sizes: dict, only: list[str] | None) -> list[Net]:
    """Build every network (FP32 and INT8), save it, return the list (models on disk)."""
    import onnx

    from oplat.arch import quantize_qdq

    out_dir.mkdir(parents=True, exist_ok=True)
    result = []
    for name, (make, precisions) in nets.NETWORKS.items():
        if only and name not in only:
            continue
        fp32 = make(**sizes[name])
        for precision in precisions:
            path = out_dir / f"{name}-{precision}.onnx"
            t0 = time.perf_counter()
            model = quantize_qdq(fp32) if precision == "int8" else fp32
            onnx.save(model, path)
            dims = lambda vi: tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)  # noqa: E731
            result.append(Net(name, precision, path, dims(fp32.graph.input[0]), dims(fp32.graph.output[0])))
            print(f"built {path.name} ({time.perf_counter() - t0:.1f} s)", flush=True)
    return result


# ---------------------------------------------------------------------------- kernel types
def split_by_type(pred, profile, measured_ms: float, precision: str) -> dict[str, list[float]]:
    """type -> [predicted compute ms, measured ms]: the network's measured wall time split by
    the profiled share of each kernel type (:func:`oplat.attribution.attribute_profile`, as
    ``oplat validate``'s kernel errors)."""
    from oplat.attribution import attribute_profile

    out = attribute_profile(pred, profile, precision)
    if profile is None:
        return out
    total = sum(m for _, m in out.values())
    return {k: [round(p, 4), round(measured_ms * m / total if total else 0.0, 4)] for k, (p, m) in out.items()}


def largest(by_type: dict) -> tuple[str, float, float] | None:
    if not by_type or not any(m for _, m in by_type.values()):
        return None
    kind, (p, m) = max(by_type.items(), key=lambda kv: abs(kv[1][0] - kv[1][1]))
    return kind, p, m


# ---------------------------------------------------------------------------- one device
def run_device(device_name: str, networks: list[Net], table_dir: Path, *, quick: bool, resume: bool) -> tuple[list[Net], object, Path, dict]:
    from oplat.build import inputs_for
    from oplat.devices import get_device
    from oplat.extract import extract_kernels
    from oplat.graph import net_graph
    from oplat.measure import measure_specs, time_networks
    from oplat.onnxgraph import load_onnx
    from oplat.predict import MissingKernels, Predictor
    from oplat.spec import OpSpec
    from oplat.timing import TimingPolicy

    device = get_device(device_name)
    module = device.require()
    info = {"load_start": os.getloadavg(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    policy = TimingPolicy.quick() if quick else TimingPolicy()
    table_dir.mkdir(parents=True, exist_ok=True)
    seed_table = table_dir / f"{device_name}-seed.jsonl"
    table = table_dir / f"{device_name}.jsonl"
    for path in (seed_table, table) if not resume else ():
        path.unlink(missing_ok=True)
    nets_here = [Net(**{k: getattr(n, k) for k in ("name", "precision", "path", "in_shape", "out_shape")}) for n in networks]

    # 1. the first predict, against a one-row table: everything missing, listed at once
    measure_specs([OpSpec("relu", 1, 4, 4)], device, opset="seed", out=seed_table, policy=policy, progress=False)
    seed = Predictor.from_table(seed_table)
    for n in nets_here:
        model = load_onnx(str(n.path))
        read = net_graph(model)
        n.kernels, n.distinct = len(read.kernels), len({k.spec.key for k in read.kernels})
        try:
            seed.predict(model)
            n.first_error = "the one-row table priced it all (unexpected)"
        except MissingKernels as exc:
            n.first_missing, n.first_missing_distinct = len(exc.missing), len(exc.specs)
        except Exception as exc:  # noqa: BLE001 (reported, the run goes on)
            n.first_error = f"{type(exc).__name__}: {exc}"[:300]
        print(f"[{device_name}] {n.label}: {n.kernels} kernels ({n.distinct} distinct); first predict: "
              f"{n.first_missing} missing ({n.first_missing_distinct} distinct) {n.first_error}", flush=True)

    # 2. measure every distinct kernel, cut from its network (oplat measure --model's path)
    specs, models = [], {}
    for n in nets_here:
        try:
            kms = extract_kernels(load_onnx(str(n.path)), device=device)
        except Exception as exc:  # noqa: BLE001
            n.predict_error = f"extraction failed: {type(exc).__name__}: {exc}"[:300]
            print(f"[{device_name}] {n.label}: {n.predict_error}", flush=True)
            continue
        for km in kms:
            if km.spec.key not in models:
                specs.append(km.spec)
                models[km.spec.key] = (km.model, km.timing_feeds)
    print(f"[{device_name}] measuring {len(specs)} distinct kernels into {table}", flush=True)
    info["load_before_kernels"] = os.getloadavg()
    t0 = time.perf_counter()
    summary = measure_specs(specs, device, opset="model:seed-nets", out=table, policy=policy, models=models, progress=True)
    print(f"[{device_name}] {summary.measured} measured, {summary.already} already there ({summary.errors} error, "
          f"{summary.unsupported} unsupported, {summary.noisy} noisy) in {time.perf_counter() - t0:.0f} s", flush=True)
    del models
    info.update(kernels_s=time.perf_counter() - t0, kernel_rows=summary.measured, kernel_errors=summary.errors,
                kernel_unsupported=summary.unsupported, kernel_noisy=summary.noisy, distinct_kernels=len(specs),
                load_after_kernels=os.getloadavg())

    # 3. predict again: every kernel priced as measured
    predictor = Predictor.from_table(table)
    preds = {}
    for n in nets_here:
        if n.predict_error:
            continue
        try:
            pred = predictor.predict(load_onnx(str(n.path)))
        except Exception as exc:  # noqa: BLE001 (a kernel the device could not run)
            n.predict_error = f"{type(exc).__name__}: {exc}"[:600]
            continue
        preds[n.label] = pred
        n.predicted_ms, n.measured_share = pred.total_ms, pred.measured_share

    # 4. the whole networks, end to end, same policy, interleaved batches (with profiles)
    runnable = []
    for n in nets_here:
        model = load_onnx(str(n.path))
        try:
            with module.open(model, inputs_for(model), device.options):
                pass
        except Exception as exc:  # noqa: BLE001 (the device cannot run this network)
            n.run_error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]
            continue
        runnable.append(n)
    t0 = time.perf_counter()
    for start in range(0, len(runnable), NETWORK_BATCH):
        batch = runnable[start : start + NETWORK_BATCH]
        timed = time_networks([load_onnx(str(n.path)) for n in batch], device, policy, profile=True)
        for n, t in zip(batch, timed):
            s = t.stats
            n.measured = {"p10_ms": s.p10_ms, "median_ms": s.median_ms, "p90_ms": s.p90_ms,
                          "spread_pct": t.spread_pct, "noisy": t.noisy, "profiled": t.profile is not None}
            if n.label in preds:
                n.by_type = split_by_type(preds[n.label], t.profile, s.p10_ms, n.precision)
    print(f"[{device_name}] timed {len(runnable)} networks end to end in {time.perf_counter() - t0:.0f} s", flush=True)
    info.update(networks_s=time.perf_counter() - t0, load_end=os.getloadavg())
    return nets_here, predictor, table, info


# ---------------------------------------------------------------------------- report
def _fmt_shape(shape) -> str:
    return "×".join(str(d) for d in shape[1:])


def _where(n: Net) -> str:
    if not n.measured or not n.measured.get("profiled"):
        return "no profile"
    top = largest(n.by_type)
    if top is None:
        return "—"
    kind, p, m = top
    return f"{kind}: {p:.1f} vs {m:.1f} ms ({p - m:+.1f} ms)"


def report_markdown(device_name: str, results: list[Net], predictor, table: Path, command: str, quick: bool, info: dict) -> str:
    from oplat.report.provenance import provenance_line

    try:
        shown = table.relative_to(REPO)
    except ValueError:
        shown = table
    lines = [
        f"## {device_name}: seed networks (any network, any op){' — QUICK smoke run' if quick else ''}",
        "",
        "provenance: " + provenance_line(predictor.device, measured_between=predictor.measured_between, stat=predictor.stat, source=str(shown)),
        "",
        f"command: `{command}`",
        "",
        "statistic: p10 of the wall time, predicted and measured alike. Predicted = the UNCALIBRATED plain sum of the "
        "kernels' p10 times and, on ONNX Runtime, of the layout reorders ORT's optimized graph of the network runs "
        "inside it, each priced at its kernel's lone-op reorder share (the run's table has no composition model: no "
        "boundary or per-call term). Every "
        "distinct kernel was cut out of its network and measured in this run (`measure --model` path); the networks were "
        "timed end to end in the same run with the same timing policy (interleaved batches of 8).",
        "",
        f"run: {info['distinct_kernels']} distinct kernels measured in {info['kernels_s'] / 60:.1f} min "
        f"({info['kernel_errors']} error, {info['kernel_unsupported']} unsupported, {info['kernel_noisy']} noisy rows), then the "
        f"networks in {info['networks_s'] / 60:.1f} min. Host load average (1 min, {os.cpu_count()} CPUs): "
        f"{info['load_before_kernels'][0]:.1f} before the kernels, {info['load_after_kernels'][0]:.1f} after them, "
        f"{info['load_end'][0]:.1f} after the networks (other processes shared the CPUs: above 1, a run of ours waits for them).",
        "",
        "| Network | Precision | Input → output | Kernels | Distinct | First predict: missing (distinct) | Predicted [ms] | Measured p10 [ms] | Error [%] | Largest error contribution (kernel type: predicted vs measured share) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in results:
        first = f"{n.first_missing} ({n.first_missing_distinct})" + (f" {n.first_error}" if n.first_error else "")
        pred = f"{n.predicted_ms:.2f}" if n.predicted_ms is not None else "—"
        meas = f"{n.measured['p10_ms']:.2f}" + (" (noisy)" if n.measured["noisy"] else "") if n.measured else "—"
        err = f"{n.error_pct:+.1f}" if n.error_pct is not None else "—"
        where = _where(n)
        if n.run_error:
            where = f"does not run: {n.run_error}"
        elif n.predict_error:
            where = f"not priced: {n.predict_error[:200]}"
        lines.append(f"| {n.name} | {n.precision} | {_fmt_shape(n.in_shape)} → {_fmt_shape(n.out_shape)} | {n.kernels} | "
                     f"{n.distinct} | {first} | {pred} | {meas} | {err} | {where} |")
    judged = [n for n in results if n.error_pct is not None]
    if judged:
        within5 = sum(abs(n.error_pct) <= 5 for n in judged)
        within10 = sum(abs(n.error_pct) <= 10 for n in judged)
        mape = sum(abs(n.error_pct) for n in judged) / len(judged)
        lines += ["", f"{len(judged)} of {len(results)} networks compared: {within10} within ±10 %, {within5} within ±5 %, "
                  f"mean |error| {mape:.1f} %."]
    failed = [n for n in results if n.run_error or n.predict_error]
    if failed:
        lines += ["", "Networks the device could not run or price:", ""]
        lines += [f"- {n.label}: {n.run_error or n.predict_error}" for n in failed]
    lines += ["", "### Error by kernel type, per network", "",
              "Each network's measured p10 split by the runtime's per-node profile of the whole network; `(layout)` is the "
              "reorders/transposes the runtime ran inside the network (predicted: the in-network reorders priced from ORT's "
              "optimized graph; lone-op reorders are never added), "
              "`(unattributed)` profiled nodes no kernel owns (the boundary Quantize/Dequantize of an INT8 network). "
              "Types by |predicted − measured|, the largest 5.", ""]
    for n in results:
        if not n.by_type or not n.measured:
            continue
        ranked = sorted(n.by_type.items(), key=lambda kv: -abs(kv[1][0] - kv[1][1]))[:5]
        parts = [f"{k} {p:.1f}/{m:.1f}" for k, (p, m) in ranked]
        lines.append(f"- {n.label} (predicted/measured ms): " + "; ".join(parts))
    return "\n".join(lines) + "\n"


def print_table(device_name: str, results: list[Net]) -> None:
    print(f"\n{device_name}:")
    print(f"{'network':22s} {'prec':5s} {'kern':>5s} {'dist':>5s} {'missing':>9s} {'pred ms':>9s} {'meas ms':>9s} {'err %':>7s}  where")
    for n in results:
        pred = f"{n.predicted_ms:.2f}" if n.predicted_ms is not None else "—"
        meas = f"{n.measured['p10_ms']:.2f}" if n.measured else "—"
        err = f"{n.error_pct:+.1f}" if n.error_pct is not None else "—"
        where = n.run_error or n.predict_error[:120] or _where(n)
        print(f"{n.name:22s} {n.precision:5s} {n.kernels:5d} {n.distinct:5d} {n.first_missing:4d}({n.first_missing_distinct:3d}) "
              f"{pred:>9s} {meas:>9s} {err:>7s}  {where}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="cpu,openvino", help="comma-separated devices (default cpu,openvino)")
    parser.add_argument("--only", action="append", help="only this network (repeatable; names as in the report)")
    parser.add_argument("--quick", action="store_true", help="small sizes and a short policy: a smoke run (reports stay in the scratch folder)")
    parser.add_argument("--scratch", default=str(REPO / "results" / "_scratch" / "seed-nets"), help="models and the run's tables")
    parser.add_argument("--resume", action="store_true", help="keep the run's tables (measure only what they lack)")
    args = parser.parse_args(argv)
    command = "python " + shlex.join(["benchmarks/seed_nets.py", *(argv if argv is not None else sys.argv[1:])])
    scratch = Path(args.scratch) / ("quick" if args.quick else "full")
    networks = build_networks(scratch / "models", QUICK_SIZES if args.quick else SIZES, args.only)
    status = 0
    for device_name in [d.strip() for d in args.devices.split(",") if d.strip()]:
        from oplat.devices import get_device

        reason = get_device(device_name).available()
        if reason:
            print(f"{device_name}: not available ({reason}); skipped")
            status = 1
            continue
        results, predictor, table, info = run_device(device_name, networks, scratch / "tables", quick=args.quick, resume=args.resume)
        print_table(device_name, results)
        text = report_markdown(device_name, results, predictor, table, command, args.quick, info)
        out_dir = (scratch / "validate" / device_name) if args.quick or args.only else (REPO / "results" / "validate" / device_name)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "seed-nets.md").write_text(text)
        (scratch / f"{device_name}-results.json").write_text(json.dumps([{**n.__dict__, "path": str(n.path)} for n in results], indent=1, default=str))
        print(f"wrote {out_dir / 'seed-nets.md'}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
