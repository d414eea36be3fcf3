"""The ``oplat`` command line: a dict of subcommands, ``main(argv) -> int``.

Results go to stdout, progress and warnings to stderr. A user error (``OplatError``) is
one line and exit status 2; ``--debug`` shows tracebacks. Heavy modules (runtimes,
optuna, onnx) are imported inside the subcommands so ``oplat --help`` needs none.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

from oplat import __version__
from oplat.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_PIPE, OplatError

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


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite positive number, got {text!r}")
    return value


def _limits(args: argparse.Namespace):
    from oplat.limits import Limits

    return Limits.from_text(getattr(args, "max_mem", None))


# ---------------------------------------------------------------------------- devices
def _cmd_devices(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from oplat.devices import all_devices

    rows = []
    for device in all_devices().values():
        reason = device.available()
        rows.append([device.name, "available" if reason is None else "missing", reason or device.description])
    print(tabulate(rows, headers=["Device", "Status", "Details"], tablefmt="simple", maxcolwidths=[None, None, 90]))
    return 0


# ---------------------------------------------------------------------------- measure
def _cmd_measure(args: argparse.Namespace) -> int:
    from oplat.devices import get_device
    from oplat.measure import measure_specs
    from oplat.opset import load_opset
    from oplat.paths import default_table_path, table_dir_name
    from oplat.spec import PRECISIONS
    from oplat.timing import TimingPolicy

    if "," in args.device:
        return _measure_on_pool(args)
    device = get_device(args.device)
    precisions = None
    if args.precision:
        precisions = _csv_list(args.precision)
        bad = [p for p in precisions if p not in PRECISIONS]
        if bad:
            raise OplatError(f"unknown precision {', '.join(bad)}; known: {', '.join(PRECISIONS)}")
    if args.infer_precision and device.backend != "openvino":
        raise OplatError(
            f"--infer-precision is an OpenVINO option; device {device.name!r} ({device.backend}) does not honour it, "
            "so it is refused rather than recorded; measure fp16 one-op models with --precision fp16"
        )
    device = device.with_options(threads=args.threads, precision=args.infer_precision)
    device.require()
    models = None
    if args.model:
        if args.opset:
            raise OplatError("give --opset or --model, not both (run measure twice to do both)")
        specs, models, name = _model_kernels(args.model, precisions, device)
    else:
        opset = load_opset(args.opset or "sr-core", precisions=precisions)
        specs, name = opset.specs, opset.name
    out = Path(args.out) if args.out else default_table_path(table_dir_name(device), "sr-core" if models else name, args.results)
    limits = _limits(args)
    policy = TimingPolicy.quick() if args.quick_policy else TimingPolicy()
    overrides = {k: v for k, v in (("rounds", args.rounds), ("agree_pct", args.agree_pct)) if v is not None}
    if overrides:
        from dataclasses import replace

        policy = replace(policy, **overrides)
    try:
        summary = measure_specs(
            specs,
            device,
            opset=name,
            out=out,
            policy=policy,
            batch=args.batch,
            retry_errors=args.retry_errors,
            retry_noisy=args.retry_noisy,
            progress=not args.no_progress,
            wait=args.wait,
            limits=limits,
            models=models,
            accept_drift=args.accept_drift,
        )
    except KeyboardInterrupt:
        print(
            f"oplat: interrupted; every finished row is in {out}. Run the same command again to continue.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    print(
        f"{summary.path}: {summary.measured} measured, {summary.already} already there "
        f"({summary.errors} error, {summary.unsupported} unsupported, {summary.noisy} noisy)"
    )
    _warn_if_unsteady(summary, policy)
    print(f"review it with: oplat table {summary.path}")
    return 0


def _warn_if_unsteady(summary, policy) -> None:
    """One stderr line when most rows of this run are noisy: the host was unsteady, and a
    table measured in such a spell is not one to predict from or to commit."""
    if summary.measured >= 4 and summary.noisy * 2 > summary.measured:
        print(
            f"oplat: warning: {summary.noisy} of {summary.measured} rows are noisy (their rounds disagree by more "
            f"than {policy.agree_pct:g} %): the host was unsteady while measuring; re-run with --retry-noisy in a "
            "quiet spell (nothing else running) before predicting from this table",
            file=sys.stderr,
        )


def _measure_on_pool(args: argparse.Namespace) -> int:
    """``--device remote:A:P,remote:B:P``: one op set sharded over several boards of one kind."""
    from oplat.devices import get_device
    from oplat.measure import POOL_NAME, measure_pool
    from oplat.opset import load_opset
    from oplat.paths import default_table_path
    from oplat.timing import TimingPolicy

    devices = [get_device(name.strip()) for name in args.device.split(",") if name.strip()]
    local = [d.name for d in devices if d.backend != "remote"]
    if local:
        raise OplatError(f"a pool shards over boards (remote:HOST:PORT agents); {', '.join(local)} run on this host")
    if args.model or args.infer_precision or args.threads:
        raise OplatError("--model, --infer-precision and --threads are not taken with a pool: set them on the agents")
    for device in devices:
        device.require()
    precisions = _csv_list(args.precision) if args.precision else None
    opset = load_opset(args.opset or "sr-core", precisions=precisions)
    out = Path(args.out) if args.out else default_table_path(POOL_NAME, opset.name, args.results)
    policy = TimingPolicy.quick() if args.quick_policy else TimingPolicy()
    try:
        summary = measure_pool(opset.specs, devices, opset=opset.name, out=out, policy=policy, batch=args.batch,
                               progress=not args.no_progress, wait=args.wait, limits=_limits(args))
    except KeyboardInterrupt:
        print(f"oplat: interrupted; every finished row is in {out}. Run the same command again to continue.", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"{summary.path}: {summary.measured} measured on {len(devices)} boards, {summary.already} already there "
          f"({summary.errors} error, {summary.unsupported} unsupported, {summary.noisy} noisy)")
    _warn_if_unsteady(summary, policy)
    return 0


def _model_kernels(paths: list[str], precisions: list[str] | None, device=None):
    """(specs, {key: (model, feeds)}, op-set name) of every distinct kernel of the networks
    (with their NHWC variants where ``device`` runs them so inside the network)."""
    from oplat.extract import extract_kernels
    from oplat.onnxgraph import load_onnx

    specs, models = [], {}
    for path in paths:
        for km in extract_kernels(load_onnx(path), device=device):
            if precisions and km.spec.precision not in precisions:
                continue
            if km.spec.key not in models:
                specs.append(km.spec)
                models[km.spec.key] = (km.model, km.timing_feeds)
    names = "+".join(Path(p).stem for p in paths)
    return specs, models, f"model:{names}"[:100]


def _table_dir_name(device) -> str:
    from oplat.paths import table_dir_name

    return table_dir_name(device)


# ---------------------------------------------------------------------------- table
def _cmd_table(args: argparse.Namespace) -> int:
    from oplat.report.tables import render_tables
    from oplat.table import read_table

    tables = [read_table(p) for p in args.tables]
    text = render_tables(
        tables,
        fmt=args.format,
        ops=_csv_list(args.op) if args.op else None,
        precisions=_csv_list(args.precision) if args.precision else None,
        stat=args.stat,
        group=args.group,
    )
    print(text)
    return 0


# ---------------------------------------------------------------------------- predict
def _cmd_predict(args: argparse.Namespace) -> int:
    from oplat.onnxgraph import load_onnx
    from oplat.predict import MissingKernels, Predictor
    from oplat.report.prediction import predict_report, prediction_json

    if args.html:
        from oplat.report.figures import require_matplotlib

        require_matplotlib()  # before the work: one line with the install hint
    predictor = Predictor.from_table(args.table, stat=args.stat)
    try:
        pred = predictor.predict(load_onnx(args.model))
    except MissingKernels as exc:
        if not args.missing_opset:
            raise
        _write_missing_opset(args.missing_opset, exc, args.model)
        raise OplatError(
            f"{exc}. Wrote the {len(exc.specs)} entries to {args.missing_opset}: "
            f"`oplat measure --opset {args.missing_opset} --out {args.table}` fills the gap"
        ) from None
    where = dict(model=args.model, table=args.table, device=predictor.device, measured_between=predictor.measured_between)
    if args.format == "json":
        import json

        print(json.dumps(prediction_json(pred, **where), indent=1))
    else:
        print(predict_report(pred, **where, fmt=FORMATS_TABULATE.get(args.format, "simple")))
    if args.html:
        from oplat.report.html import prediction_page

        written = prediction_page(pred, **where).write(args.html)
        print(f"wrote {written[0]} (+ {len(written) - 1} SVG)", file=sys.stderr)
    return 0


def _write_missing_opset(path: str, exc, model: str) -> None:
    from oplat.opset import opset_toml
    from oplat.paths import PLAIN_NAME

    stem = Path(path).stem
    name = stem if PLAIN_NAME.fullmatch(stem) else "missing"
    text = opset_toml(name, exc.specs, description=f"kernels of {model} its table lacked (oplat predict --missing-opset)")
    try:
        Path(path).write_text(text)
    except OSError as e:
        raise OplatError(f"cannot write {path} ({e.strerror}); choose another --missing-opset path") from None


# ---------------------------------------------------------------------------- report
def _cmd_report(args: argparse.Namespace) -> int:
    from oplat.report.figures import require_matplotlib

    require_matplotlib()  # first: without matplotlib, one line with the install hint (exit 2)
    from oplat.report.html import load_validation, review_page
    from oplat.table import read_table

    if bool(args.model) != bool(args.table_for_model):
        raise OplatError("--model and --table-for-model go together: the network and the table that prices it")
    tables = [read_table(p) for p in args.tables]
    validations = [load_validation(p) for p in args.validate or []]
    prediction = None
    if args.model:
        from oplat.onnxgraph import load_onnx
        from oplat.predict import STATS, Predictor

        predictor = Predictor.from_table(args.table_for_model, stat=args.stat if args.stat in STATS else None)
        prediction = dict(model=args.model, table=args.table_for_model, device=predictor.device,
                          measured_between=predictor.measured_between, pred=predictor.predict(load_onnx(args.model)))
    page = review_page(tables=tables, validations=validations, prediction=prediction, stat=args.stat,
                       group=not args.no_group, title=args.title)
    written = page.write(args.out)
    print(f"wrote {written[0]}" + (f" and {len(written) - 1} SVG figures beside it" if len(written) > 1 else ""))
    return 0


#: The statistics of oplat.predict.STATS (not imported: it would load numpy for --help).
STAT_CHOICES = ("p10", "median")
STAT_HELP = (
    "statistic predictions are made on and networks compared on: p10 (steady on a shared host, "
    "default) or median (default: the one the table's composition was fitted on)"
)

FORMATS_TABULATE = {"terminal": "simple", "markdown": "pipe", "github": "github"}

MAX_MEM_HELP = (
    "refuse models whose tensors need more than this (e.g. 4GiB, 512MiB); "
    "default: a quarter of this machine's memory"
)


# ---------------------------------------------------------------------------- calibrate / validate
def _device_for_table(args: argparse.Namespace):
    from oplat.devices import get_device

    device = get_device(args.device).with_options(threads=args.threads)
    device.require()
    return device


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from oplat.predict import Predictor, compose_path
    from oplat.space import load_space
    from oplat.validate import calibrate

    predictor = Predictor.from_table(args.table, stat=args.stat)
    device = _device_for_table(args)
    space = load_space(args.space)
    comps = calibrate(
        predictor=predictor,
        device=device,
        space=space,
        precisions=_csv_list(args.precision),
        networks=args.networks,
        seed=args.seed,
        progress=not args.no_progress,
    )
    for precision, c in comps.items():
        print(
            f"{precision} ({predictor.stat}): total = {c.compute:.3f}×compute + "
            f"{c.boundary_per_melem_ms:.3f} ms/Melem boundary + {c.const_ms:.3f} ms "
            f"(fitted on {c.networks} networks: fit error {c.fit_mape_pct:.1f}%, leave-one-out {c.loo_mape_pct:.1f}%)"
        )
    print(f"wrote {compose_path(args.table)}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from oplat.paths import validate_dir
    from oplat.predict import Predictor
    from oplat.report.provenance import provenance_line
    from oplat.report.validation import report_markdown, save_report
    from oplat.space import load_space
    from oplat.validate import validate

    predictor = Predictor.from_table(args.table, stat=args.stat)
    device = _device_for_table(args)
    space = load_space(args.space)
    out_dir = validate_dir(args.results, device.name)
    provenance = provenance_line(predictor.device, measured_between=predictor.measured_between, stat=predictor.stat, source=args.table)
    for precision in _csv_list(args.precision):
        report = validate(
            predictor=predictor,
            device=device,
            space=space,
            precision=precision,
            networks=args.networks,
            seed=args.seed,
            progress=not args.no_progress,
            off_grid=args.off_grid,
        )
        text = report_markdown(report, device=device.name, space=space.name, table=args.table, seed=args.seed,
                               provenance=provenance)
        print(text)
        print()
        stem = save_report(report, text, out_dir, f"{space.name}{'-offgrid' if args.off_grid else ''}-{precision}")
        print(f"saved {stem}.md and {stem}.json")
    return 0


# ---------------------------------------------------------------------------- search
def _parse_hw(text: str) -> tuple[int, int]:
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise OplatError(f"input size {text!r} must look like HxW, e.g. 360x640")
    return int(parts[0]), int(parts[1])


def _search_space(args: argparse.Namespace):
    """The search space of ``--space``, with ``--scale`` / ``--input`` applied."""
    from dataclasses import replace

    from oplat.space import load_space

    space = load_space(args.space)
    changes = {}
    if args.scale is not None and args.scale != space.scale:
        changes["scale"] = args.scale
    if args.input:
        changes["in_h"], changes["in_w"] = _parse_hw(args.input)
    if changes:
        try:
            space = replace(space, **changes)
        except (TypeError, ValueError) as exc:
            raise OplatError(f"search space {space.name} cannot take {changes}: {exc}") from None
    return space


def _search_name(args: argparse.Namespace, space, budget_ms: float) -> str:
    import re

    from oplat.paths import PLAIN_NAME

    # A study name names the folder <results>/search/NAME: one plain path component.
    if args.name is not None:
        if not PLAIN_NAME.fullmatch(args.name):
            raise OplatError(
                f"study name {args.name!r} is not a plain name: use letters, digits, '.', '_' and '-', not starting "
                f"with '.', at most 100 characters (it names the folder {Path(args.results) / 'search'}/NAME)"
            )
        return args.name
    # the space's name comes from its file: keep only what a plain name may hold
    raw = f"{space.name}-x{space.scale}-{space.in_h}x{space.in_w}-{args.precision}-{budget_ms:g}ms"
    if args.objective == "psnr":
        raw += "-psnr"
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw).lstrip(".")[:100]


def _search_predictor(args: argparse.Namespace, device):
    """(predictor, table path): ``--table``, or the device's default table (made on the fly)."""
    from oplat.paths import default_table_path, table_dir_name
    from oplat.predict import Predictor

    table = args.table
    if table is None and device is not None:
        folder = table_dir_name(device)  # where `oplat measure` writes this device's table
        if folder in ("", ".", "..") or any(c in folder for c in "/\\\0"):
            raise OplatError(f"device name {device.name!r} cannot name a folder under {args.results}; give --table")
        table = str(default_table_path(folder, "sr-core", args.results))
    if table is None:
        raise OplatError("give --table (a latency table) or --device (to measure what the table lacks)")
    if device is not None and not Path(table).exists():
        return Predictor([], source=table), table
    predictor = Predictor.from_table(table)
    if device is not None:
        from oplat.validate import check_table_device

        check_table_device(predictor, device)
    return predictor, table


#: ``oplat search`` options of the psnr objective → PsnrObjective fields.
_PSNR_OPTIONS = {
    "trial_steps": "trial_steps", "steps": "steps", "pruner": "pruner", "data": "data", "val": "val",
    "train_batch": "batch", "patch": "patch", "lr": "lr", "train_threads": "threads", "torch_device": "torch_device",
}


def _psnr_objective(args: argparse.Namespace):
    """The PsnrObjective of ``--objective psnr`` (None for the proxy); training options
    without it are refused."""
    given = {field: getattr(args, option) for option, field in _PSNR_OPTIONS.items() if getattr(args, option) is not None}
    if args.objective != "psnr":
        if given:
            flags = ", ".join("--" + o.replace("_", "-") for o, f in _PSNR_OPTIONS.items() if f in given)
            raise OplatError(f"{flags}: training options need --objective psnr (the proxy search trains nothing)")
        return None
    from oplat.search.trained import PsnrObjective

    return PsnrObjective(**given)  # the training seed is not --seed: workers of one study sample with different seeds


def _search(args: argparse.Namespace) -> int:
    from oplat.search import SearchConfig, check_storage, dashboard_command, run_search
    from oplat.units import parse_duration_ms

    budget_ms = parse_duration_ms(args.budget)
    space = _search_space(args)
    objective = _psnr_objective(args)
    name = _search_name(args, space, budget_ms)
    out_dir = Path(args.results) / "search" / name
    check_storage(args.storage, out_dir)  # before a table is read or a device touched
    device = None
    if args.device:
        from oplat.devices import get_device

        device = get_device(args.device).with_options(threads=args.threads)
        device.require()
    predictor, table = _search_predictor(args, device)
    config = SearchConfig(
        space=space, predictor=predictor, budget_ms=budget_ms, precision=args.precision, trials=args.trials, name=name,
        out_dir=out_dir, storage=args.storage, seed=args.seed, pareto=args.pareto, device=device, table_path=table,
        progress=not args.no_progress, objective=objective,
    )
    print(run_search(config).summary())
    if args.dashboard:
        command = dashboard_command(args.storage, out_dir)
        note = " (*** stands for the password: type it there, or keep it out of the URL in ~/.pgpass or PGPASSWORD)"
        print(f"  open the study: {command}{note if '***' in command else ''}")
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    import signal
    import threading

    from oplat.search import mask_password

    try:
        return _search(args)
    except Exception as exc:
        # A storage URL's password is never printed: not in oplat's errors, not in a driver's.
        text = str(exc)
        masked = mask_password(text, args.storage)
        if masked == text:
            raise
        if isinstance(exc, OplatError):
            clean = OplatError(masked)
            clean.exit_code = exc.exit_code
            raise clean from None
        raise RuntimeError(f"{type(exc).__name__}: {masked}") from None
    except KeyboardInterrupt as exc:
        # One line, whatever another Ctrl-C does meanwhile: it is ignored while the line is
        # written and the interrupted frames (and the runtime objects they hold) are freed.
        old = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
        if old is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            exc.__traceback__ = exc.__context__ = None
            print("oplat: interrupted; finished trials are in the study. Run the same command again to resume.", file=sys.stderr)
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)
        return 130


# ---------------------------------------------------------------------------- export
def _cmd_export(args: argparse.Namespace) -> int:
    from oplat.export import export_opset
    from oplat.opset import load_opset
    from oplat.spec import PRECISIONS

    precisions = _csv_list(args.precision) if args.precision else None
    if precisions and any(p not in PRECISIONS for p in precisions):
        raise OplatError(f"unknown precision in {args.precision!r}; known: {', '.join(PRECISIONS)}")
    formats = _csv_list(args.format)
    summary = export_opset(load_opset(args.opset, precisions=precisions), args.out, formats=formats,
                           limits=_limits(args), progress=not args.no_progress)
    print(f"wrote {summary.entries} entries ({', '.join(summary.formats)}) to {summary.out}; index.json maps keys to files")
    return 0


# ---------------------------------------------------------------------------- train
def _cmd_train(args: argparse.Namespace) -> int:
    from oplat.train import TrainOptions, run_training

    opts = TrainOptions(
        arch=args.arch, data=args.data, val=args.val, steps=args.steps, batch=args.batch, patch=args.patch,
        lr=args.lr, seed=args.seed, qat=args.qat, qat_steps=args.qat_steps, name=args.name, results=args.results,
        fresh=args.fresh, checkpoint_every=args.checkpoint_every, val_every=args.val_every, threads=args.threads,
        torch_device=args.torch_device, progress=not args.no_progress,
    )
    try:
        result = run_training(opts)
    except KeyboardInterrupt:
        print("oplat: interrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(result.summary())
    return 0


# ---------------------------------------------------------------------------- agent
def _cmd_agent(args: argparse.Namespace) -> int:
    from oplat.agent import TOKEN_ENV, run_agent
    from oplat.limits import Limits, parse_size_bytes

    if args.token is not None:  # argv is readable by every user of the machine (`ps`)
        raise OplatError(
            f"--token on the command line is visible to every user in `ps`; put the token in a file "
            f"(chmod 600) and pass --token-file PATH, or set {TOKEN_ENV}"
        )
    max_mem_bytes = parse_size_bytes(args.max_mem) if args.max_mem is not None else Limits.for_agent().max_mem_bytes
    return run_agent(
        args.host,
        args.port,
        None,
        args.device,
        threads=args.threads,
        precision=args.infer_precision,
        max_request_bytes=args.max_request_mib << 20,
        max_runs=args.max_runs,
        max_seconds=args.max_seconds,
        read_timeout_s=args.read_timeout_s,
        max_mem_bytes=max_mem_bytes,
        max_connections=args.max_connections,
        token_file=args.token_file,
        quiet=args.quiet,
    )


# ---------------------------------------------------------------------------- parser
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oplat",
        description="Operator latency profiler and network search for image super-resolution.",
        epilog="Run `oplat COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"oplat {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_devices(sub)
    _add_measure(sub)
    _add_table(sub)
    _add_predict(sub)
    _add_report(sub)
    _add_calibrate_validate(sub)
    _add_search(sub)
    _add_export(sub)
    _add_train(sub)
    _add_agent(sub)
    return parser


def _add_devices(sub) -> None:
    sub.add_parser("devices", help="list devices: available, or what is missing and how to install it")


def _add_measure(sub) -> None:
    p = sub.add_parser("measure", help="time one-op models of an op set on a device; write a latency table")
    p.add_argument("--device", default="cpu",
                   help="device name (see `oplat devices`; default: cpu), or several boards of one kind to shard over: remote:A:8765,remote:B:8765")
    p.add_argument("--opset", help="built-in op set name or a .toml path (default: sr-core)")
    p.add_argument("--model", action="append", metavar="NET.onnx",
                   help="measure every distinct kernel of this network, cut out at its real shapes (repeatable); "
                   "afterwards `oplat predict NET.onnx --table TABLE` prices each by exact signature")
    p.add_argument("--precision", help="comma list of precisions to measure (default: the op set's), e.g. fp32,int8")
    p.add_argument("--threads", type=_positive_int, help="intra-op threads (default: 1, the repeatable choice)")
    p.add_argument(
        "--infer-precision",
        choices=["f32", "bf16", "f16"],
        help="OpenVINO inference precision (default f32; never the CPU plugin's silent bf16)",
    )
    p.add_argument("--out", help="table file (default: results/<device>/<opset>.jsonl)")
    p.add_argument("--results", default="results", help="results folder for the default --out (default: results)")
    p.add_argument("--batch", type=_positive_int, default=24, help="entries timed together with interleaved rounds, so a slow spell of a shared machine hits them alike (default: 24)")
    p.add_argument("--rounds", type=_positive_int, help="rounds per entry (default: 5)")
    p.add_argument("--agree-pct", type=_positive_float, help="rounds must agree within this %% or are re-measured (default: 3)")
    p.add_argument("--quick-policy", action="store_true", help="short warm-up and rounds: for smoke runs, not tables")
    p.add_argument("--retry-errors", action="store_true", help="re-measure entries whose row says error")
    p.add_argument("--retry-noisy", action="store_true", help="re-measure entries flagged noisy (the new row wins)")
    p.add_argument("--wait", action="store_true", help="if another run is writing the table, wait for it and then measure what it left (default: refuse)")
    p.add_argument("--accept-drift", action="store_true",
                   help="append even when the table's re-timed rows moved beyond their noise (default: refuse; a table holds for the machine and days it was measured on)")
    p.add_argument("--max-mem", help=MAX_MEM_HELP)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_table(sub) -> None:
    from oplat.report.tables import FORMATS

    p = sub.add_parser("table", help="render one table, or several side by side with ratios")
    p.add_argument("tables", nargs="+", help="table files (.jsonl)")
    p.add_argument("--format", default="terminal", choices=list(FORMATS), help="output format (default: terminal)")
    p.add_argument("--op", help="comma list of ops to show (glob patterns: conv*)")
    p.add_argument("--precision", help="comma list of precisions to show")
    p.add_argument("--stat", default="p10", choices=("p10", "median", "p90", "mean"), help="statistic shown side by side and used for GMAC/s and ratios (default: p10)")
    p.add_argument("--group", action="store_true", help="group rows by op family (side by side: with the geometric-mean ratio of each family)")


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="predict an ONNX network's latency from a table: total + per-kernel breakdown")
    p.add_argument("model", help="ONNX file (FP32 or QDQ INT8)")
    p.add_argument("--table", required=True, help="latency table (.jsonl) of the target device")
    p.add_argument("--format", default="terminal", choices=["terminal", "markdown", "github", "json"])
    p.add_argument("--stat", choices=STAT_CHOICES, help=STAT_HELP)
    p.add_argument("--missing-opset", metavar="FILE.toml",
                   help="when kernels are missing, write the op-set entries that measure all of them to FILE.toml")
    p.add_argument("--html", metavar="PAGE.html", help="also write the breakdown as a self-contained HTML page (needs oplat[report])")


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="write a self-contained HTML review page: provenance, figures, tables")
    p.add_argument("tables", nargs="*", help="latency tables (.jsonl): a figure each, ratio heatmaps against the first, the review table")
    p.add_argument("--validate", nargs="+", action="extend", metavar="REPORT.json", help="saved `oplat validate` reports: predicted vs measured")
    p.add_argument("--model", metavar="NET.onnx", help="a network to break down (with --table-for-model)")
    p.add_argument("--table-for-model", metavar="TABLE", help="the latency table that prices --model")
    p.add_argument("--out", required=True, metavar="PAGE.html", help="the page to write; its figures go beside it as SVG")
    p.add_argument("--stat", default="p10", choices=("p10", "median", "p90", "mean"), help="statistic of the tables' figures and ratios (default: p10)")
    p.add_argument("--no-group", action="store_true", help="keep the table's order instead of grouping rows by op family")
    p.add_argument("--title", help="page title (default: from the inputs)")


def _add_calibrate_validate(sub) -> None:
    for name, text in (
        ("calibrate", "fit how kernels compose into a network on the device (measures a few random networks)"),
        ("validate", "measure random networks end to end and report how well the table predicts them"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--device", default="cpu", help="device the table was measured on (default: cpu)")
        p.add_argument("--table", required=True, help="latency table (.jsonl)")
        p.add_argument("--space", default="abpn", help="search space to sample networks from (default: abpn)")
        p.add_argument("--precision", default="fp32,int8", help="comma list (default: fp32,int8)")
        p.add_argument("--networks", type=_positive_int, default=8 if name == "calibrate" else 40)
        p.add_argument("--seed", type=int, default=1000 if name == "calibrate" else 0)
        p.add_argument("--threads", type=_positive_int, help="intra-op threads (must match the table's)")
        p.add_argument("--results", default="results", help="results folder (default: results)")
        p.add_argument("--stat", choices=STAT_CHOICES, help=STAT_HELP)
        if name == "validate":
            p.add_argument("--off-grid", action="store_true",
                           help="networks at an input size and widths the op set does not hold (priced by neighbours); reported apart")
        p.add_argument("--no-progress", action="store_true")


def _add_search(sub) -> None:
    p = sub.add_parser("search", help="search plain INT8-friendly SR networks within a latency budget; emit ONNX")
    p.add_argument("--budget", required=True, help="latency budget: 40ms, 40 ms or 0.04s")
    p.add_argument("--table", help="latency table of the target (default with --device: results/<device>/sr-core.jsonl)")
    p.add_argument("--device", help="measure missing table entries on the fly and the winner end to end")
    p.add_argument("--space", default="abpn", help="search space name or .toml path (default: abpn)")
    p.add_argument("--scale", type=int, choices=[2, 3, 4], help="upscaling factor (default: the space's)")
    p.add_argument("--input", help="LR input size HxW (default: the space's, e.g. 360x640)")
    p.add_argument("--precision", default="int8", choices=["int8", "fp32"], help="which network the budget constrains (default: int8)")
    p.add_argument("--trials", type=_positive_int, default=200, help="total finished trials the study should reach, over all its workers (default: 200)")
    p.add_argument("--name", help="study name, a plain name (letters, digits, . _ -): results/search/NAME/ (default: from space, scale, input, precision, budget)")
    p.add_argument("--storage", help="Optuna storage shared by workers: a database URL (postgresql://USER@HOST/DB, password in ~/.pgpass or PGPASSWORD; sqlite:///FILE) or a journal file in an existing folder; default: results/search/NAME/study.journal (one worker); --trials is the study's total over all workers")
    p.add_argument("--dashboard", action="store_true", help="print the optuna-dashboard command that opens the study (a password shown as ***)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pareto", action="store_true", help="two objectives: latency and the quality objective; pareto.csv holds the front")
    p.add_argument("--threads", type=_positive_int, help="intra-op threads for --device (must match the table's)")
    p.add_argument("--results", default="results", help="results folder (default: results)")
    p.add_argument("--no-progress", action="store_true")
    t = p.add_argument_group("quality objective (--objective psnr trains every feasible trial: extra train)")
    t.add_argument("--objective", default="proxy", choices=["proxy", "psnr"],
                   help="proxy: rank by a capacity proxy, no training (default); psnr: train each feasible trial briefly, "
                   "rank by the measured PSNR of its ONNX file (INT8 with --precision int8), train the winner in full")
    t.add_argument("--trial-steps", type=_positive_int, help="training steps per trial (default: 300)")
    t.add_argument("--steps", type=_positive_int, help="training steps of the winner (default: 2000)")
    t.add_argument("--pruner", choices=["hyperband", "halving", "none"],
                   help="stop poor trials early on their intermediate PSNR (default: hyperband)")
    t.add_argument("--data", help="folder of HR training images (default: the photographs inside scikit-image's wheel)")
    t.add_argument("--val", help="folder of HR validation images (default: the built-in validation photographs)")
    t.add_argument("--train-batch", type=_positive_int, help="patches per step (default: 16)")
    t.add_argument("--patch", type=_positive_int, help="LR patch size (default: 48)")
    t.add_argument("--lr", type=_positive_float, help="Adam learning rate (default: 0.001)")
    t.add_argument("--train-threads", type=_positive_int, help="torch and ONNX Runtime threads for training (default: torch's)")
    t.add_argument("--torch-device", choices=["auto", "cpu", "cuda"], help="where torch trains (default: auto)")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write an op set's one-op models as ONNX and/or .tflite (NHWC) files")
    p.add_argument("--opset", default="sr-core", help="built-in op set name or a .toml path (default: sr-core)")
    p.add_argument("--format", default="onnx", help="onnx, tflite or onnx,tflite (default: onnx)")
    p.add_argument("--precision", help="comma list of precisions (default: the op set's)")
    p.add_argument("--out", required=True, help="folder to write to")
    p.add_argument("--max-mem", help=MAX_MEM_HELP)
    p.add_argument("--no-progress", action="store_true")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a network (PSNR on real images), emit trained FP32/INT8 ONNX and the INT8 drop (extra: train)")
    p.add_argument("arch", help="ARCH.json, a best.onnx written by `oplat search`, or a built-in name: abpn")
    p.add_argument("--data", help="folder of HR training images, .png/.jpg (e.g. DIV2K_train_HR); default: the photographs inside scikit-image's wheel")
    p.add_argument("--val", help="folder of HR validation images (e.g. DIV2K_valid_HR); default: the built-in validation photographs")
    p.add_argument("--steps", type=_positive_int, default=2000, help="training steps (default: 2000)")
    p.add_argument("--batch", type=_positive_int, default=16, help="patches per step (default: 16)")
    p.add_argument("--patch", type=_positive_int, default=48, help="LR patch size in pixels (default: 48; HR patches are ×scale)")
    p.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate, cosine-decayed (default: 0.001)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--qat", action="store_true", help="then fine-tune quantization-aware and emit best.qat.int8.onnx")
    p.add_argument("--qat-steps", type=_positive_int, help="QAT steps (default: a fifth of --steps, at least 20)")
    p.add_argument("--name", help="run name, a plain name: results/train/NAME/ (default: from the architecture file)")
    p.add_argument("--results", default="results", help="results folder (default: results)")
    p.add_argument("--fresh", action="store_true", help="discard the run's checkpoint and start over (default: resume it)")
    p.add_argument("--checkpoint-every", type=_positive_int, default=100, help="steps between checkpoints (default: 100)")
    p.add_argument("--val-every", type=_positive_int, default=0, help="steps between validation PSNRs on the progress bar (default: steps/20)")
    p.add_argument("--threads", type=_positive_int, help="torch and ONNX Runtime threads (default: torch's)")
    p.add_argument("--torch-device", default="auto", choices=["auto", "cpu", "cuda"], help="where torch trains (default: a CUDA GPU when there is one)")
    p.add_argument("--no-progress", action="store_true")


def _add_agent(sub) -> None:
    p = sub.add_parser("agent", help="serve measurements to a host over the network (run it on the board)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8765, help="port (default: 8765; 0 picks a free one)")
    p.add_argument("--token-file", metavar="PATH", help="file holding the shared secret every request must carry (default: $OPLAT_AGENT_TOKEN; one of them is required)")
    p.add_argument("--token", help=argparse.SUPPRESS)  # refused: argv is visible in `ps`
    p.add_argument("--device", default="cpu", help="device measured on (see `oplat devices`; default: cpu)")
    p.add_argument("--threads", type=_positive_int, help="intra-op threads (default: the device's, 1)")
    p.add_argument("--infer-precision", choices=["f32", "bf16", "f16"], help="OpenVINO inference precision")
    p.add_argument("--max-request-mib", type=_positive_int, default=64, help="largest request body in MiB (default: 64)")
    p.add_argument("--max-runs", type=_positive_int, default=100000, help="most timing samples per request (default: 100000)")
    p.add_argument("--max-seconds", type=float, default=300.0, help="longest estimated request, checked before the model runs and after its first run (default: 300)")
    p.add_argument("--read-timeout-s", type=float, default=30.0, help="headers and body of a request must arrive within this many seconds in all (default: 30)")
    p.add_argument("--max-mem", metavar="SIZE", help="most estimated tensor memory of one model, e.g. 4GiB (default: a quarter of this machine's memory, at most 1GiB)")
    p.add_argument("--max-connections", type=_positive_int, default=128, help="connections served at once; one more gets 503 (default: 128)")
    p.add_argument("--quiet", action="store_true", help="no per-request log lines on stderr")


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "devices": _cmd_devices,
    "measure": _cmd_measure,
    "table": _cmd_table,
    "predict": _cmd_predict,
    "report": _cmd_report,
    "calibrate": _cmd_calibrate,
    "validate": _cmd_validate,
    "agent": _cmd_agent,
    "export": _cmd_export,
    "search": _cmd_search,
    "train": _cmd_train,
}


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit status (see :mod:`oplat.errors`: 0 ok, 1 internal
    error, 2 bad input, 3 environment failure, 130 interrupted, 141 stdout closed)."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        parser = _parser()
        args = parser.parse_args(argv)
        debug = args.debug
        if not getattr(args, "command", None):
            parser.print_help()
            return 0
        status = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers, not at exit
        return status
    except OplatError as exc:
        if debug:
            raise
        print(f"oplat: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("oplat: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`oplat table … | head`): say nothing, and keep Python from
        # complaining when it flushes stdout at exit.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_PIPE
    except Exception as exc:  # a bug: one line unless --debug
        if debug:
            raise
        print(
            f"oplat: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
