"""Parsers for the output of device timing tools, registered by name.

Each parser is ``parse(text: str) -> DeviceTiming`` and raises :class:`ParseError`
(quoting the last ~300 characters of ``text``) when its tool's timing lines are absent.
Every time it returns is in milliseconds, whatever unit the tool printed.

What each tool prints (and therefore what each parser can return):

``synap_cli`` (Synaptics SyNAP, ``synap_cli -m model.synap -r N random``)
    One ``Predict #i: 1.83 ms`` line per run (→ ``samples_ms``) and a summary
    ``Inference timings (ms):  load: 55.91  init: 3.84  min: 1.78  median: 1.82
    max: 2.68  stddev: 0.13  mean: 1.85``; older builds print fewer summary fields
    (``Inference timings: load: 31.22  init: 10.4  mean: 13.8``).
``tflite_benchmark_model`` (TensorFlow Lite ``benchmark_model``)
    ``count=50 first=… curr=… min=… max=… avg=… std=… [p5=… median=… p95=…]`` (µs) for
    the warm-up and then the timed loop, and ``Inference timings in us: Init: …,
    First inference: …, Warmup (avg): …, Inference (avg): …``. No per-run samples.
``benchmark_app`` (OpenVINO, Python or C++ build)
    ``Count: N iterations`` and, under ``Latency:``, ``Median/Average/Min/Max`` in
    ``ms`` — or in ``us`` when the average is below 1 ms (OpenVINO ≥ 2025). It keeps
    no per-iteration latencies anywhere (console, ``-report_folder`` CSV/JSON reports
    hold aggregates only), so ``samples_ms`` is empty. With ``-pc`` the per-layer
    counters of the last inference land in ``extra["layers"]``.
``litert_benchmark`` (``litert-benchmark`` from the ``ai-edge-litert`` wheel)
    A ``BENCHMARK RESULTS`` block: ``Model initialization: 2.32 ms``,
    ``Inference (avg): 0.07 ms (20 runs)``, min/max/median/std/p5/p95, all rounded to
    0.01 ms. No per-run samples.

Custom parsers: a device file may name ``"package.module:function"`` instead of a
registered name.
"""

from __future__ import annotations

import importlib
import math
import re
import statistics
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace

from oplat.errors import OplatError
from oplat.toolchain.errors import ParseError, tail

__all__ = [
    "DeviceTiming",
    "Parser",
    "get_parser",
    "parse_benchmark_app",
    "parse_litert_benchmark",
    "parse_synap_cli",
    "parse_tflite_benchmark_model",
    "parser_names",
    "register_parser",
]

#: A decimal number as tools print it: 1.82, 12345, .5, 2.95034e+06.
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"


@dataclass(frozen=True)
class DeviceTiming:
    """What a device's timing tool measured, in milliseconds.

    ``samples_ms`` holds one latency per timed run when the tool prints them (else
    empty); the summary fields are the tool's own statistics (or, where only samples
    were printed, computed from them). ``init_ms``/``load_ms`` are one-off set-up costs
    (model load, graph compile) as the tool reports them. ``extra`` holds anything else
    the tool printed that a caller may want (first-inference time, percentiles,
    delegated node counts, per-layer counters).
    """

    samples_ms: tuple[float, ...] = ()
    median_ms: float | None = None
    mean_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    std_ms: float | None = None
    runs: int | None = None
    init_ms: float | None = None
    load_ms: float | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples_ms", tuple(float(s) for s in self.samples_ms))
        object.__setattr__(self, "extra", dict(self.extra))

    @classmethod
    def from_samples(cls, samples_ms: Iterable[float], **fields) -> DeviceTiming:
        """A timing whose summary is computed from ``samples_ms``.

        Summary fields passed explicitly in ``fields`` win over the computed ones.
        """
        samples = tuple(float(s) for s in samples_ms)
        computed = _stats(samples)
        computed.update({k: v for k, v in fields.items() if v is not None or k not in computed})
        computed["samples_ms"] = samples
        return cls(**computed)

    def drop_first(self, n: int) -> DeviceTiming:
        """Drop the first ``n`` samples (warm-up runs) and recompute the summary.

        The tool's own summary, which included them, is kept in
        ``extra["tool_summary_ms"]``. Without samples (or with ``n <= 0``) this is a
        no-op; dropping every sample is an error.
        """
        if n <= 0 or not self.samples_ms:
            return self
        if n >= len(self.samples_ms):
            raise OplatError(
                f"cannot drop {n} warm-up runs from {len(self.samples_ms)} samples; "
                "ask for more runs than warm-up runs"
            )
        extra = dict(self.extra)
        extra["tool_summary_ms"] = {
            k: getattr(self, k) for k in ("median_ms", "mean_ms", "min_ms", "max_ms", "std_ms", "runs")
        }
        extra["warmup_dropped"] = n
        return replace(self, extra=extra, **_stats(self.samples_ms[n:]))

    @property
    def typical_ms(self) -> float | None:
        """The best single number: the median, else the mean."""
        return self.median_ms if self.median_ms is not None else self.mean_ms

    def to_dict(self) -> dict:
        """A JSON-ready dict (``samples_ms`` as a list)."""
        out = asdict(self)
        out["samples_ms"] = list(self.samples_ms)
        return out


def _stats(samples: tuple[float, ...]) -> dict:
    if not samples:
        return {}
    return {
        "samples_ms": samples,
        "median_ms": statistics.median(samples),
        "mean_ms": statistics.fmean(samples),
        "min_ms": min(samples),
        "max_ms": max(samples),
        "std_ms": statistics.stdev(samples) if len(samples) > 1 else 0.0,
        "runs": len(samples),
    }


Parser = Callable[[str], DeviceTiming]
_PARSERS: dict[str, Parser] = {}


def register_parser(name: str) -> Callable[[Parser], Parser]:
    """Register ``parse(text) -> DeviceTiming`` under ``name`` (a decorator)."""

    def deco(fn: Parser) -> Parser:
        _PARSERS[name] = fn
        return fn

    return deco


def parser_names() -> tuple[str, ...]:
    """Names of the registered parsers."""
    return tuple(sorted(_PARSERS))


def get_parser(name: str) -> Parser:
    """The parser registered as ``name``, or ``"package.module:function"`` imported."""
    if name in _PARSERS:
        return _PARSERS[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise OplatError(f"parser {name!r} cannot be imported ({exc}); check the module path") from None
        if not callable(fn):
            raise OplatError(f"parser {name!r} is not callable; point it at a parse(text) function")
        return fn
    raise OplatError(
        f"unknown parser {name!r}; use one of {', '.join(parser_names())} or 'package.module:function'"
    )


def _fail(tool: str, what: str, text: str) -> ParseError:
    return ParseError(
        f"{tool} output has no {what}; check that the tool ran to completion",
        output_tail=tail(text),
        step="parse",
    )


def _f(value: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(value)
    return number


def _us(value: str) -> float:
    """Microseconds as printed → milliseconds, without binary-fraction noise."""
    return round(_f(value) / 1000.0, 9)


# --------------------------------------------------------------------------- synap_cli

_SYNAP_PREDICT = re.compile(rf"Predict\s*#\s*(\d+)\s*:\s*({_NUM})\s*ms")
_SYNAP_SUMMARY = re.compile(r"Inference timings\s*(?:\(ms\))?\s*:(?P<body>[^\n]*)")
_SYNAP_PAIR = re.compile(rf"([A-Za-z_]+)\s*:\s*({_NUM})")
_SYNAP_KEYS = {
    "load": "load_ms",
    "init": "init_ms",
    "min": "min_ms",
    "median": "median_ms",
    "max": "max_ms",
    "stddev": "std_ms",
    "std": "std_ms",
    "mean": "mean_ms",
}


@register_parser("synap_cli")
def parse_synap_cli(text: str) -> DeviceTiming:
    """Parse ``synap_cli`` output: ``Predict #i`` samples and the timings summary."""
    samples = [_f(m.group(2)) for m in _SYNAP_PREDICT.finditer(text)]
    summaries = list(_SYNAP_SUMMARY.finditer(text))
    if not samples and not summaries:
        raise _fail("synap_cli", "'Predict #i: … ms' or 'Inference timings (ms): …' lines", text)
    fields: dict = {}
    extra: dict = {}
    if summaries:
        for key, value in _SYNAP_PAIR.findall(summaries[-1].group("body")):
            name = _SYNAP_KEYS.get(key.lower())
            if name:
                fields[name] = _f(value)
            else:
                extra[f"{key.lower()}_ms"] = _f(value)
    if samples:
        fields["runs"] = len(samples)
        return DeviceTiming.from_samples(samples, extra=extra, **fields)
    return DeviceTiming(extra=extra, **fields)


# --------------------------------------------------------------- tflite benchmark_model

_TFL_SUMMARY = re.compile(
    rf"Inference timings in us:\s*Init:\s*(?P<init>{_NUM}),\s*First inference:\s*(?P<first>{_NUM}),"
    rf"\s*Warmup \(avg\):\s*(?P<warmup>{_NUM}),\s*Inference \(avg\):\s*(?P<avg>{_NUM})"
)
_TFL_COUNT = re.compile(r"(?<![\w.])count=(\d+)[^\n]*")
_TFL_PAIR = re.compile(rf"(\w+)=({_NUM})")
_TFL_SESSION = re.compile(rf"Initialized session in\s*({_NUM})\s*ms")
_TFL_DELEGATE = re.compile(r"Replacing (\d+) out of (\d+) node\(s\) with delegate \((\w+)\)")
_TFL_MEMORY = re.compile(rf"(Peak memory footprint|Memory footprint delta[^:]*?) \(MB\):\s*init=({_NUM})\s+overall=({_NUM})")


@register_parser("tflite_benchmark_model")
def parse_tflite_benchmark_model(text: str) -> DeviceTiming:
    """Parse TFLite ``benchmark_model`` output (microseconds → ms)."""
    summary = None
    for summary in _TFL_SUMMARY.finditer(text):
        pass
    # The timed loop's stats line is the last ``count=`` line before the summary (op
    # profiling prints more ``count=`` lines after it); the first one is the warm-up.
    end = summary.start() if summary else len(text)
    counts = [m for m in _TFL_COUNT.finditer(text, 0, end) if "avg=" in m.group(0)]
    if summary is None and not counts:
        raise _fail(
            "benchmark_model", "'Inference timings in us: …' or 'count=… avg=…' lines", text
        )
    fields: dict = {}
    extra: dict = {}
    if counts:
        pairs = {k: _us(v) for k, v in _TFL_PAIR.findall(counts[-1].group(0)) if k != "count"}
        fields["runs"] = int(counts[-1].group(1))
        for key, name in (("min", "min_ms"), ("max", "max_ms"), ("avg", "mean_ms"), ("std", "std_ms"),
                          ("median", "median_ms")):
            if key in pairs:
                fields[name] = pairs[key]
        for key in ("p5", "p95", "first", "curr"):
            if key in pairs:
                extra[f"{key}_ms"] = pairs[key]
    if summary:
        fields["init_ms"] = _us(summary.group("init"))
        fields.setdefault("mean_ms", _us(summary.group("avg")))
        extra["first_inference_ms"] = _us(summary.group("first"))
        extra["warmup_avg_ms"] = _us(summary.group("warmup"))
    else:
        session = _TFL_SESSION.search(text)
        if session:
            fields["init_ms"] = _f(session.group(1))
    delegate = _TFL_DELEGATE.search(text)
    if delegate:
        extra["delegated_nodes"] = int(delegate.group(1))
        extra["graph_nodes"] = int(delegate.group(2))
        extra["delegate"] = delegate.group(3)
    memory = _TFL_MEMORY.search(text)
    if memory:
        extra["memory_init_mb"] = _f(memory.group(2))
        extra["memory_overall_mb"] = _f(memory.group(3))
    return DeviceTiming(extra=extra, **fields)


# ------------------------------------------------------------------ OpenVINO benchmark_app

_OV_LATENCY_HEADER = re.compile(r"^[^\n]*\bLatency:\s*$", re.M)
_OV_STAT = re.compile(
    rf"^[^\n]*?\b(?P<key>Median|Average|Min|Max|(?P<pct>\d+) percentile)\s*:\s*(?P<val>{_NUM})\s*(?P<unit>ms|us)\b",
    re.M,
)
_OV_OLD_LATENCY = re.compile(rf"\bLatency:\s*(?P<val>{_NUM})\s*(?P<unit>ms|us)\b")
_OV_COUNT = re.compile(r"\bCount:\s*(\d+)\s*iterations")
_OV_MS = {
    "load_ms": re.compile(rf"\bRead model took\s*({_NUM})\s*ms"),
    "init_ms": re.compile(rf"\b(?:Compile model|Load network|Import model) took\s*({_NUM})\s*ms"),
}
_OV_EXTRA = {
    "first_inference_ms": re.compile(rf"\bFirst inference took\s*({_NUM})\s*ms"),
    "duration_ms": re.compile(rf"\bDuration:\s*({_NUM})\s*ms"),
    "throughput_fps": re.compile(rf"\bThroughput:\s*({_NUM})\s*FPS"),
}
_OV_LAYER = re.compile(
    rf"^(?P<name>\S+)\s+(?:Status\.)?(?P<status>EXECUTED|NOT_RUN|OPTIMIZED_OUT)\s+layerType:\s*(?P<ltype>\S+)"
    rf"\s+execType:\s*(?P<etype>\S+)\s+realTime \(ms\):\s*(?P<real>{_NUM})\s+cpuTime \(ms\):\s*(?P<cpu>{_NUM})",
    re.M,
)
_OV_STAT_FIELDS = {"median": "median_ms", "average": "mean_ms", "min": "min_ms", "max": "max_ms"}


def _to_ms(value: str, unit: str) -> float:
    return _us(value) if unit == "us" else _f(value)


@register_parser("benchmark_app")
def parse_benchmark_app(text: str) -> DeviceTiming:
    """Parse OpenVINO ``benchmark_app`` console output (``us`` values → ms)."""
    fields: dict = {}
    extra: dict = {}
    headers = list(_OV_LATENCY_HEADER.finditer(text))
    if headers:
        block = text[headers[-1].end():]
        cut = block.find("Latency for each")  # per-shape-group stats follow; keep the overall ones
        block = block if cut < 0 else block[:cut]
        for m in _OV_STAT.finditer(block):
            if m.group("pct"):
                extra.setdefault(f"p{m.group('pct')}_ms", _to_ms(m.group("val"), m.group("unit")))
                continue
            fields.setdefault(_OV_STAT_FIELDS[m.group("key").lower()], _to_ms(m.group("val"), m.group("unit")))
    if not fields and not extra:
        old = _OV_OLD_LATENCY.search(text)  # OpenVINO before 2021: one "Latency: x ms" line
        if old:
            fields["median_ms"] = _to_ms(old.group("val"), old.group("unit"))
    if not fields and not extra:
        raise _fail("benchmark_app", "latency lines ('Latency:' then 'Median: … ms')", text)
    count = _OV_COUNT.search(text)
    if count:
        fields["runs"] = int(count.group(1))
    for name, pattern in _OV_MS.items():
        m = pattern.search(text)
        if m:
            fields[name] = _f(m.group(1))
    for name, pattern in _OV_EXTRA.items():
        m = pattern.search(text)
        if m:
            extra[name] = _f(m.group(1))
    layers = [
        {
            "name": m.group("name"),
            "status": m.group("status"),
            "layer_type": m.group("ltype"),
            "exec_type": m.group("etype"),
            "real_ms": _f(m.group("real")),
            "cpu_ms": _f(m.group("cpu")),
        }
        for m in _OV_LAYER.finditer(text)
    ]
    if layers:
        extra["layers"] = layers
    return DeviceTiming(extra=extra, **fields)


# ------------------------------------------------------------------------ litert-benchmark

_LITERT_LINE = re.compile(
    rf"^\s*(?P<key>Model initialization|Warmup \((?:first|avg)\)|Inference \((?:avg|min|max|median|std|p5|p95)\))"
    rf"\s*:\s*(?P<val>{_NUM})\s*ms(?:\s*\((?P<runs>\d+) runs\))?",
    re.M,
)
_LITERT_FIELDS = {
    "Model initialization": "init_ms",
    "Inference (avg)": "mean_ms",
    "Inference (min)": "min_ms",
    "Inference (max)": "max_ms",
    "Inference (median)": "median_ms",
    "Inference (std)": "std_ms",
}
_LITERT_EXTRA = {
    "Warmup (first)": "first_inference_ms",
    "Warmup (avg)": "warmup_avg_ms",
    "Inference (p5)": "p5_ms",
    "Inference (p95)": "p95_ms",
}
_LITERT_ACCEL = re.compile(r"^\s*Fully accelerated:\s*(True|False)", re.M)
_LITERT_THROUGHPUT = re.compile(rf"^\s*Throughput:\s*({_NUM})\s*MB/s", re.M)


@register_parser("litert_benchmark")
def parse_litert_benchmark(text: str) -> DeviceTiming:
    """Parse the ``BENCHMARK RESULTS`` block of ``litert-benchmark``."""
    fields: dict = {}
    extra: dict = {}
    for m in _LITERT_LINE.finditer(text):
        key, value = m.group("key"), _f(m.group("val"))
        if key in _LITERT_FIELDS:
            fields[_LITERT_FIELDS[key]] = value
        else:
            extra[_LITERT_EXTRA[key]] = value
        if key == "Inference (avg)" and m.group("runs"):
            fields["runs"] = int(m.group("runs"))
        if key == "Warmup (avg)" and m.group("runs"):
            extra["warmup_runs"] = int(m.group("runs"))
    if "mean_ms" not in fields:
        raise _fail("litert-benchmark", "'Inference (avg): … ms' line", text)
    accel = _LITERT_ACCEL.search(text)
    if accel:
        extra["fully_accelerated"] = accel.group(1) == "True"
    throughput = _LITERT_THROUGHPUT.search(text)
    if throughput:
        extra["throughput_mb_s"] = _f(throughput.group(1))
    return DeviceTiming(extra=extra, **fields)
