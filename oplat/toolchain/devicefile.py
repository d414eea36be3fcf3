"""Device files: TOML that tells oplat how to compile, move, run and parse on a target.

Schema (every key not marked *required* is optional)::

    name = "dolphin"            # default: the file name without .toml
    description = "…"
    input_format = "onnx"       # required: "onnx" or "tflite" — what oplat hands over
    parser = "synap_cli"        # required: a registered parser or "package.module:function"

    [requires]                  # host tools that must be on PATH → install hint
    synap = "SyNAP toolkit: …"

    [options.target]            # a device-specific setting, usable as {target}
    default = "VS680"
    choices = ["VS640", "VS680", "SL1640", "SL1680"]   # optional
    env = "OPLAT_SYNAP_TARGET"  # default OPLAT_<NAME>
    help = "SoC the model is compiled for"

    [precision.int8]            # per-precision placeholder values; the tables present
    quantization = "…"          # are the precisions the device supports (every table
    [precision.fp32]            # must define the same keys)
    quantization = ""

    [compile]                   # runs on this machine; omit when the target takes the model as is
    argv = ["synap", "convert", "--model", "{model}", "--out-dir", "{out_dir}"]   # required
    output = "{out_dir}/model.synap"   # required: the file to push
    meta = "…"                  # written to {meta} before compiling
    timeout_s = 900
    work_dir = ""               # where the compile workspace is made (OPLAT_COMPILE_DIR)

    [transport]
    kind = "adb"                # local | adb | ssh (OPLAT_TRANSPORT)
    retries = 2                 # retries of transient failures (OPLAT_RETRIES)
    retry_delay_s = 1.0
    timeout_s = 120             # per push / pull / mkdir / cleanup step
    [transport.adb]             # settings per kind, so OPLAT_TRANSPORT can switch kinds
    serial = ""                 # OPLAT_ADB_SERIAL
    remote_dir = "/data/local/tmp"   # OPLAT_REMOTE_DIR
    [transport.ssh]
    host = ""                   # OPLAT_SSH_HOST
    user = "root"               # OPLAT_SSH_USER
    port = 22                   # OPLAT_SSH_PORT
    key = ""                    # OPLAT_SSH_KEY
    remote_dir = "/tmp"
    options = []                # extra `-o Name=value` for ssh/scp
    [transport.local]
    base_dir = ""

    [run]                       # runs on the target, in the pushed model's directory
    argv = ["synap_cli", "-m", "{model}", "-r", "{runs}", "random"]   # required
    timeout_s = 300
    warmup = "extra_runs"       # flag: argv uses {warmup}; extra_runs: run warmup+runs
                                # and drop the first samples; none: the tool warms up itself
    env = { LD_LIBRARY_PATH = "/vendor/lib64" }

Placeholders are ``{name}``; ``{{``/``}}`` are literal braces and any other brace text
(``{data_type: uint8}`` in YAML) stays as written. An argv element in which a
placeholder renders empty is left out, so ``"--flag={value}"`` disappears when
``value`` is "". Built-in placeholders:

- compile: ``{model}`` (local input), ``{model_name}``, ``{out_dir}``, ``{meta}``,
  ``{work_dir}``, ``{precision}``, ``{threads}``
- run: ``{model}`` = ``{remote_model}`` (path on the target), ``{model_name}``,
  ``{work_dir}`` (target directory), ``{runs}``, ``{warmup}``, ``{threads}``,
  ``{precision}``

plus every ``[options.*]`` name and every ``[precision.*]`` key.

Values resolve as: overrides (from the CLI) > environment variables > device file >
built-in defaults.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oplat.errors import OplatError

__all__ = [
    "BUILTIN_PLACEHOLDERS",
    "CompileSpec",
    "DeviceFile",
    "DeviceFileError",
    "INPUT_FORMATS",
    "OptionSpec",
    "RunSpec",
    "TransportSpec",
    "WARMUP_MODES",
    "find_device_file",
    "list_device_files",
    "load_device_file",
    "parse_device_file",
    "placeholders_in",
    "readiness",
    "render",
    "render_argv",
    "user_device_dir",
]

INPUT_FORMATS = ("onnx", "tflite")
WARMUP_MODES = ("flag", "extra_runs", "none")
TRANSPORT_KINDS = ("local", "adb", "ssh")

BUILTIN_PLACEHOLDERS = {
    "compile": frozenset({"model", "model_name", "out_dir", "meta", "work_dir", "precision", "threads"}),
    "output": frozenset({"out_dir", "model_name", "work_dir", "precision"}),
    "run": frozenset({"model", "remote_model", "model_name", "work_dir", "runs", "warmup", "threads", "precision"}),
}

#: Transport settings: key → (type, env variable or None), per kind.
_TRANSPORT_KEYS: dict[str, dict[str, tuple[type, str | None]]] = {
    "adb": {"serial": (str, "OPLAT_ADB_SERIAL"), "remote_dir": (str, "OPLAT_REMOTE_DIR"), "adb": (str, "OPLAT_ADB")},
    "ssh": {
        "host": (str, "OPLAT_SSH_HOST"),
        "user": (str, "OPLAT_SSH_USER"),
        "port": (int, "OPLAT_SSH_PORT"),
        "key": (str, "OPLAT_SSH_KEY"),
        "remote_dir": (str, "OPLAT_REMOTE_DIR"),
        "options": (list, None),
        "connect_timeout_s": (float, None),
    },
    "local": {"base_dir": (str, "OPLAT_LOCAL_DIR")},
}
_TRANSPORT_COMMON = {"kind", "retries", "retry_delay_s", "timeout_s", *TRANSPORT_KINDS}
#: Override keys (CLI) that are not [options.*] names.
TRANSPORT_OVERRIDES = frozenset({"transport", "retries", *(k for keys in _TRANSPORT_KEYS.values() for k in keys)})

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class DeviceFileError(OplatError):
    """A device file is malformed: the message names the file, the field and the problem."""

    def __init__(self, source: str, where: str, problem: str):
        self.source, self.where, self.problem = source, where, problem
        super().__init__(f"{source}: {where}: {problem}" if where else f"{source}: {problem}")


@dataclass(frozen=True)
class OptionSpec:
    """A device-specific setting, used in templates as ``{name}``."""

    name: str
    default: str
    choices: tuple[str, ...] = ()
    env: str = ""
    help: str = ""


@dataclass(frozen=True)
class CompileSpec:
    argv: tuple[str, ...]
    output: str
    timeout_s: float = 900.0
    meta: str | None = None
    work_dir: str = ""


@dataclass(frozen=True)
class TransportSpec:
    kind: str
    retries: int = 2
    retry_delay_s: float = 1.0
    timeout_s: float = 120.0
    #: (kind, ((key, value), ...)) for each [transport.<kind>] table.
    settings: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()

    def settings_for(self, kind: str) -> dict[str, Any]:
        return dict(dict(self.settings).get(kind, ()))


@dataclass(frozen=True)
class RunSpec:
    argv: tuple[str, ...]
    timeout_s: float = 300.0
    warmup: str = "flag"
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class DeviceFile:
    """A loaded, validated device file (see the module docstring for the schema)."""

    name: str
    input_format: str
    parser: str
    run: RunSpec
    transport: TransportSpec
    compile: CompileSpec | None = None
    description: str = ""
    requires: tuple[tuple[str, str], ...] = ()
    options: tuple[OptionSpec, ...] = ()
    #: (precision, ((key, value), ...)); empty: any precision, no extra placeholders.
    precision_values: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    source: str = "<string>"

    @property
    def precisions(self) -> tuple[str, ...]:
        """Precisions the device file declares; empty means it does not restrict them."""
        return tuple(name for name, _ in self.precision_values)

    def option_values(
        self, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """Every ``[options.*]`` value: override > environment > default; choices checked."""
        overrides = dict(overrides or {})
        environ = os.environ if environ is None else environ
        unknown = set(overrides) - {o.name for o in self.options} - TRANSPORT_OVERRIDES
        if unknown:
            known = sorted({o.name for o in self.options} | TRANSPORT_OVERRIDES)
            raise OplatError(
                f"device {self.name}: unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(known)}"
            )
        values = {}
        for option in self.options:
            if overrides.get(option.name) not in (None, ""):
                value, origin = str(overrides[option.name]), "the command line"
            elif environ.get(option.env):
                value, origin = environ[option.env], option.env
            else:
                value, origin = option.default, self.source
            if option.choices and value not in option.choices:
                raise OplatError(
                    f"device {self.name}: {option.name} {value!r} (from {origin}) is not one of "
                    f"{', '.join(option.choices)}"
                )
            values[option.name] = value
        return values

    def precision_placeholders(self, precision: str) -> dict[str, str]:
        """The ``[precision.<precision>]`` values; an unsupported precision is an error."""
        if not self.precision_values:
            return {}
        table = dict(self.precision_values)
        if precision not in table:
            raise OplatError(
                f"device {self.name} does not support precision {precision!r}; "
                f"use one of {', '.join(table)} (or add [precision.{precision}] to {self.source})"
            )
        return dict(table[precision])

    def transport_kind(self, overrides: Mapping[str, Any] | None = None,
                       environ: Mapping[str, str] | None = None) -> str:
        environ = os.environ if environ is None else environ
        kind = (overrides or {}).get("transport") or environ.get("OPLAT_TRANSPORT") or self.transport.kind
        if kind not in TRANSPORT_KINDS:
            raise OplatError(f"transport {kind!r} unknown; use one of {', '.join(TRANSPORT_KINDS)}")
        return kind

    def transport_settings(
        self, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """(kind, keyword options for the transport class), with overrides applied."""
        overrides = dict(overrides or {})
        environ = os.environ if environ is None else environ
        kind = self.transport_kind(overrides, environ)
        settings: dict[str, Any] = self.transport.settings_for(kind)
        for key, (typ, env_name) in _TRANSPORT_KEYS[kind].items():
            raw = overrides.get(key)
            if raw in (None, "") and env_name and environ.get(env_name):
                raw = environ[env_name]
            if raw in (None, ""):
                continue
            try:
                settings[key] = typ(raw) if typ is not list else list(raw)
            except (TypeError, ValueError):
                raise OplatError(f"{key} {raw!r} is not a valid {typ.__name__}") from None
        retries = overrides.get("retries") or environ.get("OPLAT_RETRIES") or self.transport.retries
        try:
            retries = int(retries)
        except ValueError:
            raise OplatError(f"retries {retries!r} is not a whole number; set OPLAT_RETRIES to e.g. 2") from None
        if kind != "local":
            settings.update(retries=retries, retry_delay_s=self.transport.retry_delay_s)
        settings["step_timeout_s"] = self.transport.timeout_s
        for key in ("serial", "key", "user", "base_dir"):
            if settings.get(key) == "":
                settings.pop(key)
        if kind == "ssh" and "options" in settings:
            settings["options"] = tuple(settings["options"])
        return kind, settings

    def make_transport(self, overrides: Mapping[str, Any] | None = None,
                       environ: Mapping[str, str] | None = None):
        """The :class:`~oplat.toolchain.transport.Transport` this device file describes."""
        from oplat.toolchain.transport import make_transport

        kind, settings = self.transport_settings(overrides, environ)
        if kind == "ssh" and not settings.get("host"):
            raise OplatError(
                f"device {self.name}: no ssh host; set OPLAT_SSH_HOST (or host under [transport.ssh] in {self.source})"
            )
        return make_transport(kind, **settings)


# ---------------------------------------------------------------------------- templates


def placeholders_in(template: str) -> set[str]:
    """Names of the ``{placeholders}`` in ``template``."""
    return {m.group(1) for m in _PLACEHOLDER.finditer(template) if m.group(1)}


def render(template: str, values: Mapping[str, Any], where: str = "template") -> str:
    """Fill ``{name}`` placeholders; ``{{``/``}}`` are literal braces; unknown names fail."""

    def sub(m: re.Match) -> str:
        token, name = m.group(0), m.group(1)
        if name is None:
            return token[0]
        if name not in values:
            raise OplatError(f"{where}: unknown placeholder {{{name}}}; known: {', '.join(sorted(values))}")
        return str(values[name])

    return _PLACEHOLDER.sub(sub, template)


def render_argv(templates: Iterable[str], values: Mapping[str, Any], where: str = "argv") -> list[str]:
    """Render each argv element; drop an element in which a placeholder rendered empty."""
    argv = []
    for i, template in enumerate(templates):
        names = placeholders_in(template)
        if any(str(values.get(name, "x")) == "" for name in names):
            continue
        argv.append(render(template, values, f"{where}[{i}]"))
    return argv


# ------------------------------------------------------------------------------ parsing


class _Checker:
    """Reads a TOML table with typed getters that raise DeviceFileError naming the field."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, problem: str) -> DeviceFileError:
        return DeviceFileError(self.source, where, problem)

    def table(self, data: Mapping, key: str, where: str, required: bool = False) -> dict | None:
        value = data.get(key)
        if value is None:
            if required:
                raise self.fail(where, "missing table")
            return None
        if not isinstance(value, Mapping):
            raise self.fail(where, f"must be a table, got {type(value).__name__}")
        return dict(value)

    def keys(self, data: Mapping, allowed: Iterable[str], where: str) -> None:
        allowed = set(allowed)
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(allowed))})"
                raise self.fail(f"{where}{'.' if where else ''}{key}", f"unknown key{hint}")

    def string(self, data: Mapping, key: str, where: str, default: str | None = None,
               choices: Iterable[str] | None = None) -> str:
        value = data.get(key, default)
        if value is None:
            raise self.fail(where, "missing (required)")
        if not isinstance(value, str):
            raise self.fail(where, f"must be a string, got {type(value).__name__} {value!r}")
        if choices is not None and value not in choices:
            raise self.fail(where, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def number(self, data: Mapping, key: str, where: str, default: float, positive: bool = True) -> float:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(where, f"must be a number, got {type(value).__name__} {value!r}")
        if positive and value <= 0:
            raise self.fail(where, f"must be > 0, got {value}")
        return float(value)

    def integer(self, data: Mapping, key: str, where: str, default: int) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(where, f"must be a whole number >= 0, got {value!r}")
        return value

    def argv(self, data: Mapping, key: str, where: str) -> tuple[str, ...]:
        value = data.get(key)
        if value is None:
            raise self.fail(where, "missing (required): a list of strings, e.g. [\"tool\", \"-m\", \"{model}\"]")
        if isinstance(value, str):
            raise self.fail(where, "must be a list of strings (an argv), not one string; split it into arguments")
        if not isinstance(value, list) or not value or not all(isinstance(v, (str, int, float)) for v in value):
            raise self.fail(where, "must be a non-empty list of strings")
        return tuple(str(v) for v in value)

    def placeholders(self, template: str, allowed: Iterable[str], where: str) -> None:
        unknown = placeholders_in(template) - set(allowed)
        if unknown:
            names = ", ".join("{" + n + "}" for n in sorted(unknown))
            raise self.fail(where, f"unknown placeholder {names}; known: {', '.join(sorted(allowed))}")


_TOP_LEVEL_KEYS = frozenset({"name", "description", "input_format", "parser", "requires", "options", "precision", "compile",
                             "transport", "run"})


def _parse_header(check: _Checker, data: Mapping, source: str) -> tuple[str, str, str, str]:
    """(name, description, input_format, parser) of a device file."""
    default_name = Path(source).stem if source.endswith(".toml") else ""
    name = check.string(data, "name", "name", default=default_name or None)
    if not _NAME.fullmatch(name.replace("-", "_")):
        raise check.fail("name", f"{name!r} must be letters, digits, - and _")
    description = check.string(data, "description", "description", default="")
    input_format = check.string(data, "input_format", "input_format", choices=INPUT_FORMATS)
    parser = check.string(data, "parser", "parser")
    from oplat.toolchain.parsers import parser_names

    if ":" not in parser and parser not in parser_names():
        raise check.fail("parser", f"unknown parser {parser!r}; use one of {', '.join(parser_names())} "
                                   "or 'package.module:function'")
    return name, description, input_format, parser


def _parse_requires(check: _Checker, data: Mapping) -> list[tuple[str, str]]:
    """The ``[requires]`` table: (tool, install hint) pairs."""
    requires = []
    for tool, hint in (check.table(data, "requires", "requires") or {}).items():
        if not isinstance(hint, str) or not hint.strip():
            raise check.fail(f"requires.{tool}", "must be an install hint (a non-empty string)")
        requires.append((tool, hint.strip()))
    return requires


def _parse_option(check: _Checker, opt_name: str, table: Any, reserved: set[str]) -> OptionSpec:
    """One ``[options.<opt_name>]`` table."""
    where = f"options.{opt_name}"
    if not _NAME.fullmatch(opt_name):
        raise check.fail(where, "option names must be letters, digits and _")
    if opt_name in reserved:
        raise check.fail(where, f"{opt_name!r} is a built-in name; pick another option name")
    if not isinstance(table, Mapping):
        raise check.fail(where, "must be a table with at least `default`")
    check.keys(table, {"default", "choices", "env", "help"}, where)
    default = table.get("default")
    if isinstance(default, bool) or not isinstance(default, (str, int, float)):
        raise check.fail(f"{where}.default", "missing or not a string/number")
    choices = table.get("choices", [])
    if not isinstance(choices, list) or not all(isinstance(c, (str, int, float)) for c in choices):
        raise check.fail(f"{where}.choices", "must be a list of strings")
    choices = tuple(str(c) for c in choices)
    if choices and str(default) not in choices:
        raise check.fail(f"{where}.default", f"{default!r} is not one of the choices {', '.join(choices)}")
    env = check.string(table, "env", f"{where}.env", default=f"OPLAT_{opt_name.upper()}")
    return OptionSpec(opt_name, str(default), choices, env,
                      check.string(table, "help", f"{where}.help", default=""))


def _parse_precisions(check: _Checker, data: Mapping, reserved: set[str],
                      options: list[OptionSpec]) -> tuple[list, set[str] | None]:
    """The ``[precision.*]`` tables: ((precision, ((key, value), ...)) list, their common
    key set or None when there are none)."""
    precision_values = []
    key_set: set[str] | None = None
    for prec, table in (check.table(data, "precision", "precision") or {}).items():
        where = f"precision.{prec}"
        if not isinstance(table, Mapping):
            raise check.fail(where, "must be a table of placeholder values (may be empty)")
        values = []
        for key, value in table.items():
            if not _NAME.fullmatch(key) or key in reserved or key in {o.name for o in options}:
                raise check.fail(f"{where}.{key}", "must be a new placeholder name (letters, digits, _)")
            if isinstance(value, bool):
                value = "true" if value else "false"
            if not isinstance(value, (str, int, float)):
                raise check.fail(f"{where}.{key}", "must be a string or number")
            values.append((key, str(value)))
        keys = {k for k, _ in values}
        if key_set is not None and keys != key_set:
            raise check.fail(where, f"defines {sorted(keys)} but other precisions define {sorted(key_set)}; "
                                    "every [precision.*] table needs the same keys")
        key_set = keys
        precision_values.append((prec, tuple(values)))
    return precision_values, key_set


def _parse_compile(check: _Checker, data: Mapping, extra_names: set[str]) -> CompileSpec | None:
    """The ``[compile]`` table (None when absent)."""
    compile_table = check.table(data, "compile", "compile")
    if compile_table is None:
        return None
    check.keys(compile_table, {"argv", "output", "meta", "timeout_s", "work_dir"}, "compile")
    argv = check.argv(compile_table, "argv", "compile.argv")
    allowed = BUILTIN_PLACEHOLDERS["compile"] | extra_names
    for i, arg in enumerate(argv):
        check.placeholders(arg, allowed, f"compile.argv[{i}]")
    output = check.string(compile_table, "output", "compile.output")
    check.placeholders(output, BUILTIN_PLACEHOLDERS["output"] | extra_names, "compile.output")
    meta = compile_table.get("meta")
    if meta is not None:
        meta = check.string(compile_table, "meta", "compile.meta")
        check.placeholders(meta, allowed - {"meta"}, "compile.meta")
    elif any("{meta}" in a for a in argv):
        raise check.fail("compile.argv", "uses {meta} but [compile] has no `meta` template")
    return CompileSpec(
        argv=argv,
        output=output,
        timeout_s=check.number(compile_table, "timeout_s", "compile.timeout_s", 900.0),
        meta=meta,
        work_dir=check.string(compile_table, "work_dir", "compile.work_dir", default=""),
    )


def _parse_transport_settings(check: _Checker, transport_table: Mapping) -> list:
    """The ``[transport.<kind>]`` tables: (kind, ((key, value), ...)) for each present."""
    settings = []
    for sub_kind in TRANSPORT_KINDS:
        sub = check.table(transport_table, sub_kind, f"transport.{sub_kind}")
        if sub is None:
            continue
        check.keys(sub, _TRANSPORT_KEYS[sub_kind], f"transport.{sub_kind}")
        for key, value in sub.items():
            typ = _TRANSPORT_KEYS[sub_kind][key][0]
            ok = (isinstance(value, typ) and not isinstance(value, bool)) or (
                typ is float and isinstance(value, int) and not isinstance(value, bool))
            if typ is list:
                ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            if not ok:
                raise check.fail(f"transport.{sub_kind}.{key}", f"must be a {typ.__name__}, got {value!r}")
        settings.append((sub_kind, tuple(sub.items())))
    return settings


def _parse_transport(check: _Checker, data: Mapping) -> TransportSpec:
    """The ``[transport]`` table (a local transport when absent)."""
    transport_table = check.table(data, "transport", "transport") or {"kind": "local"}
    check.keys(transport_table, _TRANSPORT_COMMON, "transport")
    kind = check.string(transport_table, "kind", "transport.kind", default="local", choices=TRANSPORT_KINDS)
    settings = _parse_transport_settings(check, transport_table)
    return TransportSpec(
        kind=kind,
        retries=check.integer(transport_table, "retries", "transport.retries", 2),
        retry_delay_s=check.number(transport_table, "retry_delay_s", "transport.retry_delay_s", 1.0, positive=False),
        timeout_s=check.number(transport_table, "timeout_s", "transport.timeout_s", 120.0),
        settings=tuple(settings),
    )


def _parse_run(check: _Checker, data: Mapping, extra_names: set[str]) -> RunSpec:
    """The required ``[run]`` table."""
    run_table = check.table(data, "run", "run", required=True)
    check.keys(run_table, {"argv", "timeout_s", "warmup", "env"}, "run")
    run_argv = check.argv(run_table, "argv", "run.argv")
    run_allowed = BUILTIN_PLACEHOLDERS["run"] | extra_names
    for i, arg in enumerate(run_argv):
        check.placeholders(arg, run_allowed, f"run.argv[{i}]")
    warmup = check.string(run_table, "warmup", "run.warmup", default="flag", choices=WARMUP_MODES)
    if warmup == "flag" and not any("{warmup}" in a for a in run_argv):
        raise check.fail("run.warmup", "is 'flag' but run.argv never uses {warmup}; "
                                       "use 'extra_runs' or 'none' for a tool without a warm-up flag")
    env = []
    for key, value in (check.table(run_table, "env", "run.env") or {}).items():
        if not _NAME.fullmatch(key) or not isinstance(value, str):
            raise check.fail(f"run.env.{key}", "must be NAME = \"string value\"")
        check.placeholders(value, run_allowed, f"run.env.{key}")
        env.append((key, value))
    return RunSpec(
        argv=run_argv,
        timeout_s=check.number(run_table, "timeout_s", "run.timeout_s", 300.0),
        warmup=warmup,
        env=tuple(env),
    )


def parse_device_file(data: Mapping[str, Any] | str, source: str = "<string>") -> DeviceFile:
    """Validate a device file given as TOML text or an already-parsed table."""
    import tomllib

    check = _Checker(source)
    if isinstance(data, str):
        try:
            data = tomllib.loads(data)
        except tomllib.TOMLDecodeError as exc:
            raise DeviceFileError(source, "", f"not valid TOML ({exc})") from None
    check.keys(data, _TOP_LEVEL_KEYS, "")
    name, description, input_format, parser = _parse_header(check, data, source)
    requires = _parse_requires(check, data)
    reserved = set().union(*BUILTIN_PLACEHOLDERS.values()) | TRANSPORT_OVERRIDES
    options = [_parse_option(check, opt_name, table, reserved)
               for opt_name, table in (check.table(data, "options", "options") or {}).items()]
    precision_values, key_set = _parse_precisions(check, data, reserved, options)
    extra_names = {o.name for o in options} | (key_set or set())
    compile_spec = _parse_compile(check, data, extra_names)
    transport = _parse_transport(check, data)
    run = _parse_run(check, data, extra_names)
    return DeviceFile(
        name=name,
        description=description,
        input_format=input_format,
        parser=parser,
        run=run,
        transport=transport,
        compile=compile_spec,
        requires=tuple(requires),
        options=tuple(options),
        precision_values=tuple(precision_values),
        source=source,
    )


# ------------------------------------------------------------------------------ finding


def user_device_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$OPLAT_CONFIG_DIR/devices``, default ``~/.config/oplat/devices``."""
    environ = os.environ if environ is None else environ
    base = environ.get("OPLAT_CONFIG_DIR") or os.path.join(os.path.expanduser("~"), ".config", "oplat")
    return Path(base) / "devices"


def _builtin_files() -> dict[str, Any]:
    from importlib.resources import files

    root = files("oplat.device_files")
    return {entry.name[: -len(".toml")]: entry for entry in root.iterdir() if entry.name.endswith(".toml")}


def list_device_files(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Device names → where each is read from; a user file shadows a built-in one."""
    found = {name: f"builtin:{name}.toml" for name in _builtin_files()}
    user_dir = user_device_dir(environ)
    if user_dir.is_dir():
        for path in sorted(user_dir.glob("*.toml")):
            found[path.stem] = str(path)
    return dict(sorted(found.items()))


def find_device_file(name_or_path: str | os.PathLike, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(TOML text, source) of a device file given by name or path."""
    text_path = os.fspath(name_or_path)
    looks_like_path = text_path.endswith(".toml") or os.sep in text_path or (os.altsep or "\0") in text_path
    if looks_like_path:
        path = Path(text_path).expanduser()
        if not path.is_file():
            raise OplatError(f"device file {path} does not exist; check the path")
        return path.read_text(encoding="utf-8"), str(path)
    user_path = user_device_dir(environ) / f"{text_path}.toml"
    if user_path.is_file():
        return user_path.read_text(encoding="utf-8"), str(user_path)
    builtins = _builtin_files()
    if text_path in builtins:
        return builtins[text_path].read_text(encoding="utf-8"), f"{text_path}.toml"
    known = ", ".join(list_device_files(environ)) or "none"
    raise OplatError(
        f"no device file named {text_path!r} (known: {known}); pass a path to a .toml file or put one in "
        f"{user_device_dir(environ)}"
    )


def load_device_file(name_or_path: str | os.PathLike, environ: Mapping[str, str] | None = None) -> DeviceFile:
    """Load and validate a device file by name (user dir, then built-in) or path."""
    text, source = find_device_file(name_or_path, environ)
    return parse_device_file(text, source)


# ---------------------------------------------------------------------------- readiness


def readiness(
    device: DeviceFile | str,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    check_target: bool = True,
) -> list[str]:
    """What keeps ``device`` from running here; an empty list means ready.

    Checks, in order: the ``[requires]`` tools on this machine's PATH, the settings,
    the transport's own tools (``adb``, ``ssh``), whether the target answers, and — when
    it does — whether the run tool (``run.argv[0]``) exists on the target.
    """
    from oplat.toolchain.transport import find_tool

    if isinstance(device, str):
        device = load_device_file(device, environ)
    problems = []
    for tool, hint in device.requires:
        if find_tool(tool) is None:
            problems.append(f"{tool} not on PATH: {hint}")
    try:
        options = device.option_values(overrides, environ)
        transport = device.make_transport(overrides, environ)
    except OplatError as exc:
        problems.append(str(exc))
        return problems
    reason = transport.reachable()
    if reason:
        problems.append(reason)
        return problems
    if not check_target:
        return problems
    tool = device.run.argv[0]
    if placeholders_in(tool) - set(options):
        return problems  # the tool path depends on the model (e.g. "{work_dir}/tool"): cannot check
    tool = render(tool, options, "run.argv[0]")
    if tool in dict(device.requires):
        return problems  # already checked (or reported) above
    if not transport.has_tool(tool):
        where = "on PATH" if transport.kind == "local" else f"on {transport.describe()}"
        problems.append(f"{tool} not found {where}; install it there (the run step calls it)")
    return problems
