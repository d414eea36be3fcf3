"""The ``oplat`` command line: a dict of subcommands, ``main(argv) -> int``.

Results go to stdout, progress and warnings to stderr. A user error (``OplatError``) is
one line and exit status 2; ``--debug`` shows tracebacks. Heavy modules (runtimes,
optuna, onnx) are imported inside the subcommands so ``oplat --help`` needs none.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from oplat import __version__
from oplat.errors import OplatError

__all__ = ["main"]


def _csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


# ---------------------------------------------------------------------------- devices
def _cmd_devices(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from oplat.devices import DEVICES

    rows = []
    for device in DEVICES.values():
        reason = device.available()
        rows.append([device.name, "available" if reason is None else "missing", reason or device.description])
    print(tabulate(rows, headers=["Device", "Status", "Details"], tablefmt="simple"))
    return 0


# ---------------------------------------------------------------------------- measure
def _cmd_measure(args: argparse.Namespace) -> int:
    from oplat.devices import get_device
    from oplat.measure import default_table_path, measure_specs
    from oplat.opset import load_opset
    from oplat.spec import PRECISIONS
    from oplat.timing import TimingPolicy

    device = get_device(args.device)
    precisions = None
    if args.precision:
        precisions = _csv_list(args.precision)
        bad = [p for p in precisions if p not in PRECISIONS]
        if bad:
            raise OplatError(f"unknown precision {', '.join(bad)}; known: {', '.join(PRECISIONS)}")
    device = device.with_options(threads=args.threads, precision=args.infer_precision)
    device.require()
    opset = load_opset(args.opset, precisions=precisions)
    out = Path(args.out) if args.out else default_table_path(_table_dir_name(device), opset.name, args.results)
    policy = TimingPolicy.quick() if args.quick_policy else TimingPolicy()
    overrides = {k: v for k, v in (("rounds", args.rounds), ("agree_pct", args.agree_pct)) if v is not None}
    if overrides:
        from dataclasses import replace

        policy = replace(policy, **overrides)
    try:
        summary = measure_specs(
            opset.specs,
            device,
            opset=opset.name,
            out=out,
            policy=policy,
            batch=args.batch,
            retry_errors=args.retry_errors,
            retry_noisy=args.retry_noisy,
            progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        print(
            f"oplat: interrupted; every finished row is in {out}. Run the same command again to continue.",
            file=sys.stderr,
        )
        return 130
    print(
        f"{summary.path}: {summary.measured} measured, {summary.already} already there "
        f"({summary.errors} error, {summary.unsupported} unsupported, {summary.noisy} noisy)"
    )
    print(f"review it with: oplat table {summary.path}")
    return 0


def _table_dir_name(device) -> str:
    """results/<dir>/: the device name, plus the thread count when it is not the default 1."""
    threads = device.options.get("threads", 1)
    name = device.name if threads in (None, 1) else f"{device.name}-{threads}t"
    precision = device.options.get("precision")
    if device.backend == "openvino" and precision not in (None, "f32", "fp32"):
        name += f"-{precision}"
    return name


# ---------------------------------------------------------------------------- table
def _cmd_table(args: argparse.Namespace) -> int:
    from oplat.render import render_tables
    from oplat.table import read_table

    tables = [read_table(p) for p in args.tables]
    text = render_tables(
        tables,
        fmt=args.format,
        ops=_csv_list(args.op) if args.op else None,
        precisions=_csv_list(args.precision) if args.precision else None,
    )
    print(text)
    return 0


# ---------------------------------------------------------------------------- parser
def _parser() -> argparse.ArgumentParser:
    from oplat.render import FORMATS

    parser = argparse.ArgumentParser(
        prog="oplat",
        description="Operator latency profiler and network search for image super-resolution.",
        epilog="Run `oplat COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"oplat {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("devices", help="list devices: available, or what is missing and how to install it")

    p = sub.add_parser("measure", help="time one-op models of an op set on a device; write a latency table")
    p.add_argument("--device", default="cpu", help="device name (see `oplat devices`; default: cpu)")
    p.add_argument("--opset", default="sr-core", help="built-in op set name or a .toml path (default: sr-core)")
    p.add_argument("--precision", help="comma list of precisions to measure (default: the op set's), e.g. fp32,int8")
    p.add_argument("--threads", type=_positive_int, help="intra-op threads (default: 1, the repeatable choice)")
    p.add_argument(
        "--infer-precision",
        choices=["f32", "bf16", "f16"],
        help="OpenVINO inference precision (default f32; never the CPU plugin's silent bf16)",
    )
    p.add_argument("--out", help="table file (default: results/<device>/<opset>.jsonl)")
    p.add_argument("--results", default="results", help="results folder for the default --out (default: results)")
    p.add_argument("--batch", type=_positive_int, default=6, help="entries timed with interleaved rounds (default: 6)")
    p.add_argument("--rounds", type=_positive_int, help="rounds per entry (default: 5)")
    p.add_argument("--agree-pct", type=float, help="rounds must agree within this %% or are re-measured (default: 3)")
    p.add_argument("--quick-policy", action="store_true", help="short warm-up and rounds: for smoke runs, not tables")
    p.add_argument("--retry-errors", action="store_true", help="re-measure entries whose row says error")
    p.add_argument("--retry-noisy", action="store_true", help="re-measure entries flagged noisy (the new row wins)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("table", help="render one table, or several side by side with ratios")
    p.add_argument("tables", nargs="+", help="table files (.jsonl)")
    p.add_argument("--format", default="terminal", choices=list(FORMATS), help="output format (default: terminal)")
    p.add_argument("--op", help="comma list of ops to show (glob patterns: conv*)")
    p.add_argument("--precision", help="comma list of precisions to show")
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "devices": _cmd_devices,
    "measure": _cmd_measure,
    "table": _cmd_table,
}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except OplatError as exc:
        if args.debug:
            raise
        print(f"oplat: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("oplat: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line unless --debug
        if args.debug:
            raise
        print(
            f"oplat: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
