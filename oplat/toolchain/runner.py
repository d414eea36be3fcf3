"""Time a model with a device file: compile → mkdtemp → push → run → parse → clean up.

:class:`ToolchainSession` is the one entry point. Every failure is a
:class:`~oplat.toolchain.errors.ToolchainError` carrying the failed command line
(``argv``) and the tail of its output (``output_tail``), so the caller can write an
``error`` row; the target's working directory is removed in every case.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from oplat.errors import OplatError
from oplat.toolchain.devicefile import DeviceFile, load_device_file, render, render_argv
from oplat.toolchain.errors import ParseError, ToolchainError, tail
from oplat.toolchain.parsers import DeviceTiming, get_parser
from oplat.toolchain.transport import CompletedRun, Transport, find_tool, run_host

__all__ = ["ToolchainSession", "time_model"]

_SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite"}


def _safe_name(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return name if name and not name.startswith(("-", ".")) else f"model{name}"


class ToolchainSession:
    """Times models on the target a device file describes.

    Args:
        device: a :class:`DeviceFile`, or a device name / path to load.
        overrides: settings from the command line (``target``, ``serial``, ``host``,
            ``transport``, ...); they win over environment variables and the file.
        environ: the environment to read ``OPLAT_*`` variables from (default
            ``os.environ``).

    The transport is built on first use; ``last_run`` keeps the last run step's
    :class:`CompletedRun` (its full output) for debugging.
    """

    def __init__(
        self,
        device: DeviceFile | str | os.PathLike,
        *,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ):
        self.environ = dict(os.environ if environ is None else environ)
        self.device = device if isinstance(device, DeviceFile) else load_device_file(device, self.environ)
        self.overrides = dict(overrides or {})
        self.options = self.device.option_values(self.overrides, self.environ)
        self._parse = get_parser(self.device.parser)
        self._transport: Transport | None = None
        self.last_run: CompletedRun | None = None

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            self._transport = self.device.make_transport(self.overrides, self.environ)
        return self._transport

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this setup in a results row."""
        return {
            "device_file": self.device.name,
            "device_source": self.device.source,
            "transport": self.transport.describe(),
            "options": dict(self.options),
            "parser": self.device.parser,
        }

    # ------------------------------------------------------------------ steps

    def _check_inputs(self, model: Path, runs: int, warmup: int, threads: int) -> None:
        device = self.device
        if not model.is_file():
            raise OplatError(f"model {model} does not exist; build it first or check the path")
        want = _SUFFIXES[device.input_format]
        if model.suffix.lower() != want:
            raise OplatError(
                f"device {device.name} takes {device.input_format} models ({want}), got {model.name}; "
                f"export the model as {device.input_format}"
            )
        if runs < 1 or warmup < 0 or threads < 1:
            raise OplatError(f"runs must be >= 1, warmup >= 0, threads >= 1 (got {runs}, {warmup}, {threads})")
        for tool, hint in device.requires:
            if find_tool(tool) is None:
                raise OplatError(f"device {device.name} needs {tool}, which is not on PATH: {hint}")

    def _compile(self, model: Path, workdir: Path, values: dict[str, Any]) -> Path:
        spec = self.device.compile
        assert spec is not None
        out_dir = workdir / "out"
        out_dir.mkdir()
        values = {**values, "model": str(model), "out_dir": str(out_dir), "work_dir": str(workdir)}
        if spec.meta is not None:
            meta = workdir / "meta.yaml"
            meta.write_text(render(spec.meta, values, f"{self.device.source}: compile.meta"), encoding="utf-8")
            values["meta"] = str(meta)
        argv = render_argv(spec.argv, values, f"{self.device.source}: compile.argv")
        result = run_host(argv, spec.timeout_s, cwd=workdir, step="compile")
        if result.rc != 0:
            raise ToolchainError(
                f"device {self.device.name}: compile failed (rc={result.rc})",
                argv=argv, output_tail=tail(result.output), step="compile",
            )
        output = Path(render(spec.output, values, f"{self.device.source}: compile.output"))
        if not output.exists():
            raise ToolchainError(
                f"device {self.device.name}: compile succeeded but wrote no {output.name}; "
                f"check compile.output in {self.device.source}",
                argv=argv, output_tail=tail(result.output), step="compile",
            )
        return output

    def time(
        self,
        model: str | os.PathLike,
        *,
        runs: int = 50,
        warmup: int = 5,
        threads: int = 1,
        precision: str = "fp32",
    ) -> DeviceTiming:
        """Compile (if the device file says so), push, run and parse; ms on the target."""
        device = self.device
        model = Path(model)
        self._check_inputs(model, runs, warmup, threads)
        values: dict[str, Any] = {
            **self.options,
            **device.precision_placeholders(precision),
            "precision": precision,
            "threads": threads,
            "model_name": model.stem,
        }
        compile_dir = None
        if device.compile is not None:
            base = self.environ.get("OPLAT_COMPILE_DIR") or device.compile.work_dir or None
            if base:
                base = os.path.expanduser(base)
                os.makedirs(base, exist_ok=True)
            compile_dir = tempfile.TemporaryDirectory(prefix="oplat-compile-", dir=base)
        try:
            artifact = self._compile(model, Path(compile_dir.name), values) if compile_dir else model
            return self._push_and_run(artifact, values, runs=runs, warmup=warmup)
        finally:
            if compile_dir is not None:
                compile_dir.cleanup()

    def _push_and_run(self, artifact: Path, values: dict[str, Any], *, runs: int, warmup: int) -> DeviceTiming:
        device, transport = self.device, self.transport
        work_dir = transport.mkdtemp()
        try:
            join = os.path.join if transport.kind == "local" else posixpath.join
            remote_model = join(work_dir, _safe_name(artifact.name))
            transport.push(artifact, remote_model)
            extra_runs = device.run.warmup == "extra_runs"
            run_values = {
                **values,
                "model": remote_model,
                "remote_model": remote_model,
                "work_dir": work_dir,
                "runs": runs + warmup if extra_runs else runs,
                "warmup": warmup,
            }
            where = f"{device.source}: run"
            argv = render_argv(device.run.argv, run_values, f"{where}.argv")
            env = {key: render(value, run_values, f"{where}.env.{key}") for key, value in device.run.env}
            result = transport.run(argv, device.run.timeout_s, cwd=work_dir, env=env or None)
            self.last_run = result
            if result.rc != 0:
                raise ToolchainError(
                    f"device {device.name}: run failed on {transport.describe()} (rc={result.rc})",
                    argv=argv, output_tail=tail(result.output), step="run",
                )
            try:
                timing = self._parse(result.output)
            except ParseError as exc:
                raise ParseError(
                    f"device {device.name}: cannot read timings with parser {device.parser!r}; "
                    "the tool's output format may have changed",
                    argv=argv, output_tail=exc.output_tail, step="parse",
                ) from exc
            if extra_runs and warmup:
                if len(timing.samples_ms) > warmup:
                    timing = timing.drop_first(warmup)
                else:
                    timing.extra["warmup_not_dropped"] = warmup  # the tool printed no per-run samples
            timing.extra.setdefault("command", shlex.join(argv))
            return timing
        finally:
            try:
                transport.cleanup(work_dir)
            except OplatError as exc:  # never mask the step's own error
                warnings.warn(f"oplat: could not remove {work_dir} on {transport.describe()}: {exc}", stacklevel=2)


def time_model(
    device: DeviceFile | str | os.PathLike,
    model: str | os.PathLike,
    *,
    runs: int = 50,
    warmup: int = 5,
    threads: int = 1,
    precision: str = "fp32",
    overrides: Mapping[str, Any] | None = None,
) -> DeviceTiming:
    """One-shot :meth:`ToolchainSession.time`."""
    session = ToolchainSession(device, overrides=overrides)
    return session.time(model, runs=runs, warmup=warmup, threads=threads, precision=precision)
