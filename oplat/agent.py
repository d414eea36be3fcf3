"""``oplat agent``: measure on a board with Python, for a host across the network.

The agent runs on the board next to the runtime and times models the host sends it with
the one timing policy (:func:`oplat.timing.time_one`) on the board's local backend. The
host's side is :mod:`oplat.backends.remote`; what both sides share (protocol version,
token variables and file, error kinds, the JSON forms below) is :mod:`oplat.wire`, and
neither side imports the other.

Transport: HTTP/1.1 from the standard library (:class:`http.server.ThreadingHTTPServer`)
with JSON bodies. The model travels base64-encoded inside the JSON request
(``model_b64``): one self-describing document, one parser, one size limit, and a request
anyone can replay with ``curl``; the 4/3 size overhead is nothing next to the
one-operator models oplat sends (kilobytes) and is paid on a LAN. No tensors travel: the
agent makes the feeds itself with :func:`oplat.build.inputs_for` (deterministic).

Protocol (``/v1``; every request needs ``Authorization: Bearer <token>``)::

    GET  /v1/info     -> {"protocol": 1, "oplat_version", "device", "runtime",
                          "runtime_version", "fingerprint": {...}, "model_formats": ["onnx"],
                          "limits": {"max_request_bytes", "max_runs", "max_seconds",
                                     "read_timeout_s", "max_mem_bytes", "max_nodes",
                                     "max_inputs", "max_connections"}, "busy": bool}
    POST /v1/measure  <- {"model_b64": str,            # ONNX (or .tflite) bytes, base64
                          "policy": {TimingPolicy fields, all optional},
                          "profile_runs": int >= 0 | "auto"}   # 0 (default): no profile
                      -> {"format": "onnx", "fingerprint": {...}, "policy": {...all fields},
                          "timing": {"rounds_ms": [[ms, ...], ...], "discarded_rounds_ms": [...],
                                     "inner": int, "runs_per_round": int, "extra_rounds": int},
                          "profile": null | {"compute_ms", "layout_ms", "nodes", "runs"},
                          "profile_error": str (only when profiling failed), "elapsed_s": float}

Every error is ``{"error": "<one line>", "kind": "<word>"}`` with its status:
400 ``bad_request`` (malformed JSON, missing/unknown/mistyped field, unknown model
format, a model with external data, truncated or timed-out body) or ``over_limit``;
401 ``unauthorized``; 404/405; 408 ``timeout`` (the request line or headers did not
arrive in time); 409 ``busy`` (with ``Retry-After``); 411 ``length_required``; 413
``too_large``; 422 ``unsupported`` (the runtime cannot run the op) or ``model_error`` (it
failed to load or run it); 500 ``internal`` (a bug; the agent keeps serving); 503
``overloaded`` (too many open connections, with ``Retry-After``). Error texts never carry
the agent's filesystem paths (absolute paths are replaced by ``<path>``).

Rules the agent keeps:

- Loopback by default; another address must be asked for (and gets a warning: the
  protocol is plain HTTP, the token is readable on the wire).
- The token comes from a file (``--token-file``, or ``$OPLAT_AGENT_TOKEN_FILE``) or
  ``$OPLAT_AGENT_TOKEN``, never from the command line (every user of the machine can
  read a process's arguments).
  It is compared in constant time (:func:`hmac.compare_digest`) and checked before a
  body is read, so an unauthenticated client cannot make the agent read one.
- A body over ``max_request_bytes`` is refused from its ``Content-Length`` (413) before
  any of it is read; the agent then discards what the client still sends for a bounded
  time so the client can read the 413 instead of a reset. ``Expect: 100-continue`` is
  answered only after the token and the size are checked.
- ``read_timeout_s`` is a deadline for the **whole request**: its request line, headers
  and body must all have arrived that long after the agent started waiting for it (an
  idle kept-alive connection waits as long for its next request). A client trickling a
  byte at a time is dropped at the deadline like one that stalls: 408 when headers are
  incomplete, 400 when the body is, a silent close when nothing came.
- At most ``max_connections`` connections are served at once (a thread each); one more
  is answered 503 at once. The listen backlog is :data:`LISTEN_BACKLOG`, so a burst of
  clients is queued by the kernel and answered, not reset.
- One measurement at a time: a second ``/v1/measure`` while one runs is answered **409
  busy** at once (with ``Retry-After``), not queued, so no connection hangs behind a long
  measurement and the client decides how long to wait. ``/v1/info`` always answers.
- Model formats: those the device's backend module declares in ``MODEL_FORMATS`` (the
  backend contract, :class:`oplat.backends.base.Backend`; ONNX for every backend today);
  TFLite only where it lists ``"tflite"`` (its ``open()`` then gets the flatbuffer bytes
  and ``feeds=None`` and makes its own inputs). Anything else is a 400. An ONNX model whose
  tensors keep their data in external files is a 400: the runtime would read whatever
  file the model names, relative to the agent's working directory.
- Limits are **refused with 400** (``over_limit``), never clamped: a row records the
  policy it was measured with, and a silently clamped one would lie. ``max_runs`` bounds
  the samples a request may ask for (``(rounds + max_extra_rounds) * policy.max_runs``)
  and ``profile_runs``. ``max_mem_bytes``, ``max_nodes`` and ``max_inputs`` bound an ONNX
  model before it is loaded (:func:`oplat.limits.check_model`: every tensor with a static
  shape after shape inference, plus weights; a floor of what the runtime needs).
- ``max_seconds`` bounds the request's estimated duration, checked **before the model
  runs** and again after its first run, never later:

  1. Before anything is loaded, from the model's shapes: a floor of one run's time is
     ``max(MACs / rate, tensor bytes / bandwidth)``, with MACs of Conv, ConvTranspose,
     MatMul and Gemm (and their integer/QLinear forms) from the inferred shapes and
     tensor bytes as in the memory check, at :data:`FLOOR_MACS_PER_S` and
     :data:`FLOOR_BYTES_PER_S` per thread (several times what any CPU core does, so the
     floor is below the true time). The policy's warm-up, rounds and profile runs at that
     floor (:meth:`oplat.timing.TimingPolicy.worst_case_s` plus the profile runs) over
     ``max_seconds`` is refused: no run can make it fit.
  2. The backend's ``open()`` loads the model and runs it once (every in-process backend
     does); its duration bounds one run from above. With that bound, time already spent
     plus the policy's estimate within ``max_seconds`` goes ahead.
  3. Otherwise one untimed probe run separates the load from the run, but only when the
     request stays within ``max_seconds`` even if the probe takes as long as the open
     (else it is refused at once); its estimate over ``max_seconds`` is refused. The
     model never runs twice before a check: a refusal comes after the feeds and the
     open (one run, which step 1 bounds from below only), or within ``max_seconds``
     when a probe ran.

  Self-timed sessions (a board tool behind the agent) get step 1 only.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import io
import ipaddress
import json
import math
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from oplat import __version__, wire
from oplat.backends import SelfTimedSession
from oplat.errors import OplatError, warn
from oplat.limits import MAX_GRAPH_NODES, MAX_INPUTS, Limits, check_model, model_bytes
from oplat.timing import PROFILE_RUNS_MAX, TimingPolicy
from oplat.wire import DEFAULT_PORT, PROTOCOL_VERSION, TOKEN_ENV, TOKEN_FILE_ENV, model_format, read_token_file

__all__ = [
    "AgentConfig",
    "AgentRunConfig",
    "AgentServer",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_MAX_RUNS",
    "DEFAULT_MAX_SECONDS",
    "DEFAULT_PORT",
    "DEFAULT_READ_TIMEOUT_S",
    "FLOOR_BYTES_PER_S",
    "FLOOR_MACS_PER_S",
    "LISTEN_BACKLOG",
    "PROTOCOL_VERSION",
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "make_server",
    "model_format",
    "read_token_file",
    "run_agent",
    "serve",
]

# PROTOCOL_VERSION, DEFAULT_PORT, TOKEN_ENV, TOKEN_FILE_ENV, model_format and
# read_token_file are oplat.wire's (shared with the client), re-exported here.
#: Largest request body accepted, in bytes (the model is base64: ~3/4 of this).
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
#: Most timing samples one request may ask for (also the most profiled runs).
DEFAULT_MAX_RUNS = 100_000
#: Longest estimated measurement one request may ask for, in seconds.
DEFAULT_MAX_SECONDS = 300.0
#: A request whose headers and body have not all arrived this long, in seconds, after
#: the agent started waiting for it is dropped (a deadline, not a per-read timeout).
DEFAULT_READ_TIMEOUT_S = 30.0
#: Most connections served at once (a thread each); one more gets 503 at once.
DEFAULT_MAX_CONNECTIONS = 128
#: Listen backlog: connections the kernel queues before the agent accepts them.
LISTEN_BACKLOG = 128
#: Multiply-accumulates per second per thread assumed by the pre-run time floor: above
#: what a CPU core does (this development host: ~5e10 fp32, ~1.7e11 int8 in ORT).
FLOOR_MACS_PER_S = 1e12
#: Tensor bytes per second per thread assumed by the pre-run time floor (a core streams
#: ~1e10 here).
FLOOR_BYTES_PER_S = 1e11

#: After an early error reply, discard what the client still sends for at most this long (s).
_LINGER_S = 2.0
#: Bytes read from the socket per call while reading a body.
_CHUNK_BYTES = 1 << 20
#: Rough cost of one profiled run against one timed run (profilers slow runs down).
_PROFILE_COST = 2.0
#: Overflow connections (over max_connections) being answered 503 at once, at most;
#: beyond that they are closed unanswered.
_MAX_OVERFLOW = 64
#: How long an overflow connection may take to read its 503, in seconds.
_OVERFLOW_LINGER_S = 0.5
#: How long a client cut off at the read deadline may take to read its 408/400 (s).
_TIMEOUT_LINGER_S = 0.5


_NO_TOKEN = (
    f"the agent needs a token: put it in a file and pass --token-file PATH, or set {TOKEN_ENV} "
    "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))' > token && chmod 600 token)"
)


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class AgentConfig:
    """What one agent serves and the limits it keeps.

    Attributes:
        token: shared secret every request must carry (``Authorization: Bearer``).
        device: device name (see :mod:`oplat.devices`) measured on.
        device_options: overrides of the device's options (``threads``, ``precision``);
            fixed for the agent's life so its fingerprint is the same for every request.
        max_request_bytes: largest request body, in bytes.
        max_runs: most timing samples (and profiled runs) one request may ask for.
        max_seconds: longest estimated duration of one request, in seconds (the module doc
            says how it is estimated before the model runs).
        read_timeout_s: headers and body of a request must all arrive within this many
            seconds (a whole-request deadline); later, the connection is dropped.
        max_mem_bytes: most estimated tensor memory of one ONNX model, in bytes
            (:func:`oplat.limits.check_model`); default: :meth:`oplat.limits.Limits.for_agent`
            (a quarter of the machine's memory, at most 1 GiB).
        max_nodes: most nodes of one ONNX model.
        max_inputs: most graph inputs of one ONNX model.
        max_connections: most connections served at once; one more gets 503.
        quiet: no per-request log lines on stderr.
    """

    token: str = field(repr=False)
    device: str = "cpu"
    device_options: dict = field(default_factory=dict)
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_runs: int = DEFAULT_MAX_RUNS
    max_seconds: float = DEFAULT_MAX_SECONDS
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    max_mem_bytes: int = field(default_factory=lambda: Limits.for_agent().max_mem_bytes)
    max_nodes: int = MAX_GRAPH_NODES
    max_inputs: int = MAX_INPUTS
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    quiet: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.token, str) or not self.token.strip():
            raise OplatError(_NO_TOKEN)
        for name in ("max_request_bytes", "max_runs", "max_mem_bytes", "max_nodes", "max_inputs", "max_connections"):
            if int(getattr(self, name)) < 1:
                raise OplatError(f"agent {name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_seconds", "read_timeout_s"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value <= 0:
                raise OplatError(f"agent {name} must be a positive number of seconds, got {value}")


@dataclass(frozen=True, kw_only=True)
class AgentRunConfig:
    """How ``oplat agent`` (:func:`run_agent`) serves, besides where it listens, its token
    and its device (which :func:`run_agent` takes as arguments).

    Attributes:
        threads: the device's ``threads`` option (None: the device's default).
        precision: the device's ``precision`` option (OpenVINO's inference precision;
            None: the device's default).
        max_request_bytes, max_runs, max_seconds, read_timeout_s, max_connections: the
            limits of :class:`AgentConfig`.
        max_mem_bytes: as in :class:`AgentConfig`; None: its default (a share of this
            machine's memory).
        token_file: a file holding the token, read when no ``token`` is given.
        quiet: no per-request log lines on stderr, and no ``stopped`` line.
    """

    threads: int | None = None
    precision: str | None = None
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_runs: int = DEFAULT_MAX_RUNS
    max_seconds: float = DEFAULT_MAX_SECONDS
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    max_mem_bytes: int | None = None
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    token_file: str | os.PathLike | None = None
    quiet: bool = False

    def serve_options(self, token: str, device: str) -> dict:
        """The keywords of :func:`serve` (the fields of :class:`AgentConfig`) for this run."""
        return {
            "token": token,
            "device": device,
            "device_options": {"threads": self.threads, "precision": self.precision},
            "max_request_bytes": self.max_request_bytes,
            "max_runs": self.max_runs,
            "max_seconds": self.max_seconds,
            "read_timeout_s": self.read_timeout_s,
            "max_mem_bytes": self.max_mem_bytes,
            "max_connections": self.max_connections,
            "quiet": self.quiet,
        }


# ----------------------------------------------------------------------------- formats
def _parse_onnx(data: bytes):
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"model looks like ONNX but does not parse: {exc}") from None
    if model.ir_version < 1 or not model.graph.node or not model.opset_import:
        raise ValueError("model parses as protobuf but is not an ONNX model (no ir_version, graph nodes or opset)")
    if _uses_external_data(model):
        raise ValueError(
            "the model keeps tensor data in external files, which the agent does not read; "
            "send a self-contained model (onnx.save(model, path) without save_as_external_data, "
            "or onnx.load(path) then model.SerializeToString())"
        )
    return model


def _uses_external_data(model) -> bool:
    """True when any tensor of the model (initializers, sparse initializers, tensor
    attributes, in every subgraph and function) says its data lives in an external file."""
    from onnx import AttributeProto, TensorProto

    def tensor(t) -> bool:
        return t.data_location == TensorProto.EXTERNAL or len(t.external_data) > 0

    def sparse(sp) -> bool:
        return tensor(sp.values) or tensor(sp.indices)

    def nodes(node_list) -> bool:
        for node in node_list:
            for a in node.attribute:
                if a.type == AttributeProto.TENSOR and tensor(a.t):
                    return True
                if a.type == AttributeProto.SPARSE_TENSOR and sparse(a.sparse_tensor):
                    return True
                if any(tensor(t) for t in a.tensors) or any(sparse(sp) for sp in a.sparse_tensors):
                    return True
                if a.HasField("g") and graph(a.g):
                    return True
                if any(graph(g) for g in a.graphs):
                    return True
        return False

    def graph(g) -> bool:
        return (
            any(tensor(t) for t in g.initializer)
            or any(sparse(sp) for sp in g.sparse_initializer)
            or nodes(g.node)
        )

    return graph(model.graph) or any(nodes(f.node) for f in model.functions)


# ----------------------------------------------------------------------------- errors
class _Reply(Exception):
    """An error reply: raised anywhere in a handler, sent as ``{"error", "kind"}`` with
    the status of its kind (:data:`oplat.wire.ERROR_STATUS`)."""

    def __init__(self, kind: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.kind, self.message = wire.ERROR_STATUS[kind], kind, message
        self.headers = headers or {}


#: Absolute paths in error texts: POSIX paths starting a word (after a space, quote,
#: bracket, ``=``, ``:`` or ``,``) and Windows drive paths.
_ABS_PATH = re.compile(r"""(?:^|(?<=[\s'"(=:,\[]))/[\w.+@~-][^\s'"(),:;\]]*|\b[A-Za-z]:\\[^\s'"]*""")


def _redact(text: str) -> str:
    """``text`` with filesystem paths replaced by ``<path>``: every absolute path (a
    runtime's message names files of the machine it runs on), then the working, home,
    temp and Python folders wherever else they appear."""
    import sysconfig
    import tempfile

    text = _ABS_PATH.sub("<path>", text)
    known = {os.getcwd(), os.path.expanduser("~"), tempfile.gettempdir(), sys.prefix, sys.exec_prefix}
    known.update(p for p in sysconfig.get_paths().values() if p)
    for path in sorted((p for p in known if p and len(p) > 1), key=len, reverse=True):
        text = text.replace(path, "<path>")
    return text


def _one_line(exc: BaseException) -> str:
    text = _redact(str(exc)).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


# ----------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class _MeasureRequest:
    fmt: str
    model: object  # onnx.ModelProto (or the raw bytes for a TFLite-taking backend)
    policy: TimingPolicy
    profile_runs: int | str  # >= 0, or "auto"


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _decode_json(body: bytes) -> dict:
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise _Reply(wire.BAD_REQUEST, f"malformed JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise _Reply(wire.BAD_REQUEST, f"the request must be a JSON object, got {type(data).__name__}")
    return data


def _parse_policy(raw: object) -> TimingPolicy:
    try:
        return wire.policy_from_json(raw)
    except wire.WireError as exc:
        raise _Reply(wire.BAD_REQUEST, str(exc)) from None


def _parse_measure(body: bytes, config: AgentConfig, model_formats: tuple[str, ...]) -> _MeasureRequest:
    data = _decode_json(body)
    unknown = sorted(set(data) - set(wire.MEASURE_FIELDS))
    if unknown:
        raise _Reply(wire.BAD_REQUEST, f"unknown field {unknown[0]!r}; a measure request has {', '.join(wire.MEASURE_FIELDS)}")
    if "model_b64" not in data:
        raise _Reply(wire.BAD_REQUEST, "missing field 'model_b64' (the model bytes, base64)")
    if not isinstance(data["model_b64"], str):
        raise _Reply(wire.BAD_REQUEST, "'model_b64' must be a base64 string")
    try:
        blob = base64.b64decode(data["model_b64"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _Reply(wire.BAD_REQUEST, f"'model_b64' is not valid base64: {exc}") from None
    try:
        fmt = model_format(blob)
    except ValueError as exc:
        raise _Reply(wire.BAD_REQUEST, str(exc)) from None
    if fmt not in model_formats:
        names = {"onnx": "ONNX", "tflite": "TFLite"}
        raise _Reply(
            wire.BAD_REQUEST,
            f"the model is {names[fmt]} but device {config.device!r} takes "
            f"{' or '.join(names[f] for f in model_formats)} models only",
        )
    if fmt == "onnx":
        try:
            model = _parse_onnx(blob)
        except ValueError as exc:
            raise _Reply(wire.BAD_REQUEST, str(exc)) from None
    else:
        model = blob

    policy = _parse_policy(data.get("policy"))
    samples = (policy.rounds + policy.max_extra_rounds) * policy.max_runs
    if samples > config.max_runs:
        raise _Reply(
            wire.OVER_LIMIT,
            f"the policy allows up to {samples} samples ((rounds + max_extra_rounds) * max_runs); "
            f"this agent takes at most {config.max_runs} (its --max-runs)",
        )
    profile_runs = data.get("profile_runs", 0)
    if profile_runs != "auto":
        if not isinstance(profile_runs, int) or isinstance(profile_runs, bool) or profile_runs < 0:
            raise _Reply(wire.BAD_REQUEST, f"'profile_runs' must be a count >= 0 or \"auto\", got {profile_runs!r}")
        if profile_runs > config.max_runs:
            raise _Reply(wire.OVER_LIMIT, f"profile_runs {profile_runs} is over this agent's --max-runs {config.max_runs}")
    return _MeasureRequest(fmt=fmt, model=model, policy=policy, profile_runs=profile_runs)


def _estimate_s(policy: TimingPolicy, run_s: float, profile_runs: int | str) -> float:
    """Worst-case seconds :func:`oplat.timing.time_one` (plus profiling) takes for runs
    of ``run_s`` seconds each: the policy's own bound
    (:meth:`~oplat.timing.TimingPolicy.worst_case_s`) plus the profiled runs (with the
    profiler's 2 warm-up runs), each :data:`_PROFILE_COST` timed runs long."""
    run_s = max(run_s, 1e-9)
    n_profile = PROFILE_RUNS_MAX if profile_runs == "auto" else profile_runs  # the most runs "auto" picks
    profile_s = (n_profile + 2) * run_s * _PROFILE_COST if n_profile else 0.0
    return policy.worst_case_s(run_s) + profile_s


def _infer_shapes(model):
    """The model with inferred shapes (best effort, as in :func:`oplat.limits.model_bytes`)."""
    from onnx import shape_inference

    try:
        return shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
    except Exception:
        return model


def _model_macs(model) -> int:
    """Multiply-accumulates of one run of an ONNX model (with inferred shapes) from its
    static shapes: Conv, ConvTranspose, MatMul, Gemm and their integer/QLinear forms; other
    ops are counted by their tensor bytes instead. Unknown shapes count as zero (a floor)."""
    import onnx

    graph = model.graph
    shapes: dict[str, list[int]] = {}
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        t = value.type.tensor_type
        if t.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else 0 for d in t.shape.dim]
            if all(d > 0 for d in dims):
                shapes[value.name] = dims
    for init in graph.initializer:
        shapes.setdefault(init.name, list(init.dims))

    def numel(name: str) -> int:
        return math.prod(shapes[name]) if name in shapes else 0

    def attr(node, name, default):
        for a in node.attribute:
            if a.name == name:
                return onnx.helper.get_attribute_value(a)
        return default

    weight_index = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "ConvTranspose": 1}
    matmul_a = {"MatMul": 0, "MatMulInteger": 0, "QLinearMatMul": 0, "Gemm": 0}
    total = 0
    for node in graph.node:
        op = node.op_type
        if op in weight_index and len(node.input) > weight_index[op] and node.output:
            w = shapes.get(node.input[weight_index[op]])
            if not w or len(w) < 2:
                continue
            per = w[1] * math.prod(w[2:])
            # Conv: every output element takes C_in/group × kernel MACs; ConvTranspose:
            # every input element spreads over C_out/group × kernel outputs.
            total += (numel(node.input[0]) if op == "ConvTranspose" else numel(node.output[0])) * per
        elif op in matmul_a and node.input and node.output:
            a = shapes.get(node.input[matmul_a[op]])
            if not a:
                continue
            k = a[-2] if op == "Gemm" and attr(node, "transA", 0) and len(a) >= 2 else a[-1]
            total += numel(node.output[0]) * k
    return int(total)


def _floor_run_s(model, threads: int) -> tuple[float, int, int]:
    """(seconds, MACs, bytes): a floor of one run's time from the model's shapes,
    ``max(MACs / FLOOR_MACS_PER_S, bytes / FLOOR_BYTES_PER_S) / threads``."""
    inferred = _infer_shapes(model)
    macs = _model_macs(inferred)
    nbytes = model_bytes(inferred)
    threads = max(1, int(threads or 1))
    return max(macs / FLOOR_MACS_PER_S, nbytes / FLOOR_BYTES_PER_S) / threads, macs, nbytes


def _over_seconds(how: str, limit_s: float) -> _Reply:
    return _Reply(
        wire.OVER_LIMIT,
        f"this model and policy would take {how} on the agent; it takes at most {limit_s:g} s "
        "per request (its --max-seconds): use a shorter policy, smaller shapes or fewer profile_runs",
    )


# ----------------------------------------------------------------------------- server
class AgentServer(ThreadingHTTPServer):
    """The agent's HTTP server: one thread per connection (at most ``max_connections``),
    one measurement at a time."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG  # the kernel queues a burst instead of resetting it
    allow_reuse_port = False  # two agents on one port would share its connections

    def __init__(self, address: tuple[str, int], config: AgentConfig):
        from oplat.devices import get_device
        from oplat.measure import fingerprint_for

        device = get_device(config.device).with_options(**config.device_options)
        self.config = config
        self.device = device
        self.module = device.require()
        self.fingerprint = fingerprint_for(device)
        self.runtime, self.runtime_version = self.fingerprint["runtime"], self.fingerprint["runtime_version"]
        self.model_formats: tuple[str, ...] = tuple(self.module.MODEL_FORMATS)
        self.measure_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._connections = 0  # being served by a handler thread
        self._overflow = 0  # being answered 503
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    # -- connections
    def handle_error(self, request, client_address) -> None:
        """A client that drops its connection gets one log line, not a traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            if not self.config.quiet:
                sys.stderr.write(f"oplat agent: {client_address[0]} connection failed: {exc}\n")
            return
        super().handle_error(request, client_address)

    def process_request(self, request, client_address) -> None:
        """Serve the connection in a thread, or answer 503 when ``max_connections`` are
        already being served (in a short-lived thread, so accepting never blocks)."""
        with self._count_lock:
            serve = self._connections < self.config.max_connections
            if serve:
                self._connections += 1
            elif self._overflow < _MAX_OVERFLOW:
                self._overflow += 1
            else:  # a flood: close unanswered rather than start more threads
                serve = None
        if serve is None:
            self.shutdown_request(request)
            return
        if not serve:
            threading.Thread(target=self._refuse_overloaded, args=(request,), daemon=True).start()
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._count_lock:
            self._connections -= 1

    def _refuse_overloaded(self, sock: socket.socket) -> None:
        body = json.dumps(
            wire.error_json(
                wire.OVERLOADED,
                f"the agent is serving {self.config.max_connections} connections already "
                "(its --max-connections); retry later",
            )
        ).encode("utf-8")
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
        ).encode("ascii")
        try:
            sock.settimeout(_OVERFLOW_LINGER_S)
            sock.sendall(head + body)
            _drain(sock, _OVERFLOW_LINGER_S)
        except OSError:
            pass
        finally:
            with self._count_lock:
                self._overflow -= 1
            self.shutdown_request(sock)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def info(self) -> dict:
        c = self.config
        return {
            "protocol": PROTOCOL_VERSION,
            "oplat_version": __version__,
            "device": self.device.name,
            "runtime": self.runtime,
            "runtime_version": self.runtime_version,
            "fingerprint": self.fingerprint,
            "model_formats": list(self.model_formats),
            "limits": {
                "max_request_bytes": c.max_request_bytes,
                "max_runs": c.max_runs,
                "max_seconds": c.max_seconds,
                "read_timeout_s": c.read_timeout_s,
                "max_mem_bytes": c.max_mem_bytes,
                "max_nodes": c.max_nodes,
                "max_inputs": c.max_inputs,
                "max_connections": c.max_connections,
            },
            "busy": self.measure_lock.locked(),
        }

    def check_limits(self, request: _MeasureRequest) -> float:
        """Refuse (400 ``over_limit``) an ONNX model over the memory, node or input
        limits, or whose policy cannot fit ``max_seconds`` even at the floor of one
        run's time from its shapes; nothing is loaded or run. Returns that floor (s)."""
        c = self.config
        if request.fmt != "onnx":
            return 0.0  # a TFLite flatbuffer: bounded by max_request_bytes only
        try:
            check_model(
                request.model,
                Limits(max_mem_bytes=c.max_mem_bytes, max_inputs=c.max_inputs, max_nodes=c.max_nodes),
                what="the model",
            )
        except OplatError as exc:
            raise _Reply(wire.OVER_LIMIT, f"{str(exc).splitlines()[0]} (this agent's limits, see /v1/info)") from None
        floor_s, macs, nbytes = _floor_run_s(request.model, self.device.options.get("threads", 1))
        estimate_s = _estimate_s(request.policy, floor_s, request.profile_runs)
        if estimate_s > c.max_seconds:
            raise _over_seconds(
                f"at least {estimate_s:.3g} s (a floor from its shapes before running it: "
                f"{macs:.3g} MACs and {nbytes / 2**20:.3g} MiB of tensors per run)",
                c.max_seconds,
            )
        return floor_s

    def measure(self, request: _MeasureRequest) -> dict:
        """Check, open, probe, time and profile one model; the caller holds ``measure_lock``.

        The request's duration is checked before the model runs (:meth:`check_limits`)
        and again after the backend's ``open()`` (which runs it once), see the module doc.
        """
        from oplat.backends import Unsupported
        from oplat.build import inputs_for
        from oplat.timing import profile_runs, time_one  # the same auto profile length as `oplat measure`

        start = time.perf_counter()
        limit_s = self.config.max_seconds
        profile = profile_error = None
        try:
            self.check_limits(request)
            feeds = inputs_for(request.model) if request.fmt == "onnx" else None
            t_open = time.perf_counter()
            with self.module.open(request.model, feeds, self.device.options) as session:
                now = time.perf_counter()
                open_s = now - t_open  # the runtime's load plus its first run
                self_timed = isinstance(session, SelfTimedSession)  # a board tool behind the agent times itself
                if not self_timed:
                    spent_s = now - start
                    estimate_s = spent_s + _estimate_s(request.policy, open_s, request.profile_runs)
                    if estimate_s > limit_s:
                        # The open's time is the load plus a run; one probe run tells the
                        # run apart, if the request stays in time even when it is as long.
                        if spent_s + open_s > limit_s:
                            raise _over_seconds(
                                f"about {estimate_s:.3g} s (estimated from its load and first run, "
                                f"{open_s:.3g} s)",
                                limit_s,
                            )
                        t0 = time.perf_counter()
                        session.run()
                        now = time.perf_counter()
                        estimate_s = (now - start) + _estimate_s(request.policy, now - t0, request.profile_runs)
                        if estimate_s > limit_s:
                            raise _over_seconds(
                                f"about {estimate_s:.3g} s (estimated from one probe run, {now - t0:.3g} s)",
                                limit_s,
                            )
                timing = session.time(request.policy) if self_timed else time_one(session.run, request.policy)
                runs = request.profile_runs
                if runs == "auto":
                    runs = profile_runs(timing.stats()["median_ms"])
                if runs:
                    try:
                        profile = session.profile(runs)
                    except Exception as exc:  # the timing stands; say why per-node times are missing
                        profile_error = _one_line(exc)[:300]
        except _Reply:
            raise
        except Unsupported as exc:
            text = _redact(str(exc)).strip().splitlines()
            raise _Reply(wire.UNSUPPORTED, text[0][:500] if text else "the runtime cannot run this model") from None
        except Exception as exc:  # the runtime failed to load or run this model
            raise _Reply(wire.MODEL_ERROR, _one_line(exc)) from None
        elapsed_s = round(time.perf_counter() - start, 6)
        return wire.measure_reply(request.fmt, self.fingerprint, request.policy, timing, profile, elapsed_s, profile_error)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"oplat-agent/{__version__}"
    sys_version = ""
    server: AgentServer

    # -- connection
    def setup(self) -> None:
        self.timeout = self.server.config.read_timeout_s  # each write on this socket
        self._deadline = time.monotonic() + self.timeout
        self._request_bytes = 0
        self._timed_out = False
        self._replied = False
        super().setup()
        # Reads go through the whole-request deadline, not the socket's per-read timeout.
        plain, self.rfile = self.rfile, io.BufferedReader(_DeadlineReader(self), 1 << 16)
        plain.close()

    def handle_one_request(self) -> None:
        """One request; its request line, headers and body must all arrive within
        ``read_timeout_s`` from now (for a kept-alive connection: from the last reply)."""
        self._deadline = time.monotonic() + self.server.config.read_timeout_s
        self._request_bytes = 0
        self._timed_out = self._replied = False
        self.requestline, self.command, self.request_version = "", None, "HTTP/1.1"
        super().handle_one_request()  # a timed-out read there closes the connection
        if self._timed_out and not self._replied and self._request_bytes:
            # Part of a request line or headers came, the rest not in time: say so.
            self.close_connection = True
            self._send_json(
                wire.ERROR_STATUS[wire.TIMEOUT],
                wire.error_json(
                    wire.TIMEOUT,
                    f"the request line and headers did not arrive within {self.timeout:g} s "
                    "(the agent's --read-timeout-s, for the whole request)",
                ),
            )
            _drain(self.connection, _TIMEOUT_LINGER_S)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (base signature)
        if not self.server.config.quiet:
            sys.stderr.write(f"oplat agent: {self.address_string()} {format % args}\n")

    # -- routing
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def handle_expect_100(self) -> bool:
        """Say "100 Continue" only to a client whose token and size are acceptable."""
        self._body_read = False
        try:
            self._check_auth()
            self._content_length()
        except _Reply as reply:
            self._send_error(reply)
            return False
        return super().handle_expect_100()

    def _dispatch(self, method: str) -> None:
        self._body_read = False
        try:
            self._check_auth()
            path = self.path.split("?", 1)[0]
            routes = {wire.INFO_PATH: ("GET", self._info), wire.MEASURE_PATH: ("POST", self._measure)}
            if path not in routes:
                raise _Reply(wire.NOT_FOUND, f"no endpoint {path!r}; endpoints: {', '.join(routes)}")
            wanted, handler = routes[path]
            if method != wanted:
                raise _Reply(wire.METHOD_NOT_ALLOWED, f"{path} takes {wanted}", {"Allow": wanted})
            status, payload = handler()
            self._send_json(status, payload)
        except _Reply as reply:
            self._send_error(reply)
        except Exception as exc:  # a bug: say so, keep serving
            traceback.print_exc(file=sys.stderr)
            self._send_error(_Reply(wire.INTERNAL, f"internal error: {_one_line(exc)}"))

    def _info(self) -> tuple[int, dict]:
        return 200, self.server.info()

    def _measure(self) -> tuple[int, dict]:
        body = self._read_body()
        request = _parse_measure(body, self.server.config, self.server.model_formats)
        lock = self.server.measure_lock
        if not lock.acquire(blocking=False):
            raise _Reply(wire.BUSY, "the agent is measuring for another request; retry later", {"Retry-After": "1"})
        try:
            return 200, self.server.measure(request)
        finally:
            lock.release()

    # -- checks
    def _check_auth(self) -> None:
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        expected = self.server.config.token.encode("utf-8")
        ok = hmac.compare_digest(given.strip().encode("utf-8", "replace"), expected)
        if scheme.lower() != "bearer" or not ok:
            raise _Reply(
                wire.UNAUTHORIZED,
                "missing or wrong token: send 'Authorization: Bearer <token>' with the agent's token",
                {"WWW-Authenticate": 'Bearer realm="oplat-agent"'},
            )

    def _content_length(self) -> int:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise _Reply(wire.LENGTH_REQUIRED, "chunked bodies are not accepted; send Content-Length")
        raw = self.headers.get("Content-Length")
        if raw is None:
            if self.command == "POST":
                raise _Reply(wire.LENGTH_REQUIRED, "a POST needs a Content-Length header")
            return 0
        try:
            length = int(raw)
        except ValueError:
            raise _Reply(wire.BAD_REQUEST, f"Content-Length {raw!r} is not a number") from None
        if length < 0:
            raise _Reply(wire.BAD_REQUEST, f"Content-Length {length} is negative")
        limit = self.server.config.max_request_bytes
        if length > limit:
            raise _Reply(
                wire.TOO_LARGE,
                f"request body of {length} bytes is over this agent's limit of {limit} bytes "
                "(start it with a larger --max-request-mib)",
            )
        return length

    def _read_body(self) -> bytes:
        length = self._content_length()
        data = bytearray()
        try:
            while len(data) < length:
                chunk = self.rfile.read1(min(length - len(data), _CHUNK_BYTES))
                if not chunk:
                    raise _Reply(wire.BAD_REQUEST, f"request body ended after {len(data)} of {length} bytes")
                data += chunk
        except TimeoutError:
            raise _Reply(
                wire.BAD_REQUEST,
                f"request body stalled: {len(data)} of {length} bytes arrived within "
                f"{self.server.config.read_timeout_s:g} s (the agent's --read-timeout-s, for the whole request)",
            ) from None
        except (ConnectionError, OSError) as exc:
            raise _Reply(wire.BAD_REQUEST, f"connection failed while reading the body: {exc}") from None
        self._body_read = True
        return bytes(data)

    # -- replies
    def _send_json(self, status: int, payload: dict, headers: dict | None = None) -> None:
        body = json.dumps(payload, allow_nan=False).encode("utf-8")
        self._replied = True
        try:
            self.connection.settimeout(self.timeout)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except (ConnectionError, TimeoutError, OSError) as exc:
            self.close_connection = True
            self.log_error("could not send the reply: %s", exc)

    def _send_error(self, reply: _Reply) -> None:
        # An error may leave (part of) a body unread: never reuse the connection after one.
        unread = not getattr(self, "_body_read", False) and self._declared_length() > 0
        self.close_connection = True
        self._send_json(reply.status, wire.error_json(reply.kind, reply.message), reply.headers)
        if unread and self._timed_out:  # a trickling client: long enough to read the reply
            _drain(self.connection, _TIMEOUT_LINGER_S)
        elif unread and reply.status != 400:
            self._linger()

    def _declared_length(self) -> int:
        try:
            return max(0, int(self.headers.get("Content-Length", "0")))
        except ValueError:
            return 0

    def _linger(self) -> None:
        """Discard what the client still sends (bounded in time) so it reads our reply
        instead of a connection reset; nothing is kept."""
        _drain(self.connection, _LINGER_S)


def _drain(sock: socket.socket, seconds: float) -> None:
    """Close our side for writing, then discard what the peer sends for at most
    ``seconds`` (until it closes), so it reads our reply instead of a reset."""
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                break
    except OSError:
        pass


class _DeadlineReader(io.RawIOBase):
    """The connection's socket, read against its handler's deadline: each read waits at
    most until ``handler._deadline``; past it, TimeoutError (and ``handler._timed_out``)."""

    def __init__(self, handler: _Handler):
        super().__init__()
        self._handler = handler
        self._sock = handler.connection

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        h = self._handler
        left = h._deadline - time.monotonic()
        if left <= 0:
            h._timed_out = True
            raise TimeoutError("the request did not arrive within the read timeout")
        self._sock.settimeout(left)
        try:
            n = self._sock.recv_into(buffer)
        except TimeoutError:
            h._timed_out = True
            raise
        finally:
            try:
                self._sock.settimeout(h.timeout)
            except OSError:
                pass
        h._request_bytes += n
        return n


# ----------------------------------------------------------------------------- entry points
def make_server(host: str, port: int, config: AgentConfig) -> AgentServer:
    """Bind an :class:`AgentServer` (not serving yet); OplatError for a port outside
    0–65535 or an address that cannot be bound (taken, not this machine's, unknown)."""
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise OplatError(f"port must be 0–65535 (0 picks a free one), got {port!r}")
    try:
        return AgentServer((host, port), config)
    except (OSError, OverflowError, UnicodeError) as exc:
        text = str(exc).strip().splitlines()
        reason = getattr(exc, "strerror", None) or (text[0] if text else type(exc).__name__)
        raise OplatError(f"cannot listen on {host}:{port}: {reason}; pick another --port or --host") from None


#: How serve's keywords are read into an :class:`AgentConfig`, in this order (None device
#: options are dropped; a None ``max_mem_bytes`` is the default share of this machine).
_SERVE_COERCE: dict[str, Callable] = {
    "device_options": lambda v: {k: x for k, x in (v or {}).items() if x is not None},
    "max_request_bytes": int,
    "max_runs": int,
    "max_seconds": float,
    "read_timeout_s": float,
    "max_mem_bytes": lambda v: int(v) if v is not None else Limits.for_agent().max_mem_bytes,
    "max_nodes": int,
    "max_inputs": int,
    "max_connections": int,
}


def _agent_config(config: AgentConfig | None, options: dict) -> AgentConfig:
    """``config`` with ``options`` replaced, or an :class:`AgentConfig` of ``options`` alone;
    the options read as :data:`_SERVE_COERCE` says."""
    options = {**options, **{k: f(options[k]) for k, f in _SERVE_COERCE.items() if k in options}}
    if config is None:
        return AgentConfig(**options)
    if not isinstance(config, AgentConfig):
        raise TypeError(f"expected an AgentConfig, got {type(config).__name__}")
    return replace(config, **options) if options else config


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    config: AgentConfig | None = None,
    *,
    ready: Callable[[AgentServer], None] | None = None,
    **options: Any,
) -> None:
    """Serve until ``server.shutdown()`` is called (``ready`` gets the bound server).

    ``port`` 0 picks a free port (``server.server_address[1]`` says which). Takes an
    :class:`AgentConfig` (whose fields are documented there), or its fields as keywords
    (``serve(host, port, token=..., device=..., max_runs=...)``), or both (keywords
    override the config's). Limits: ``max_request_bytes`` and ``max_mem_bytes`` in bytes
    (``max_mem_bytes`` None: the default share of this machine's memory), ``max_seconds``
    and ``read_timeout_s`` in seconds, ``max_runs`` in samples.
    """
    server = make_server(host, port, _agent_config(config, options))
    try:
        if ready is not None:
            ready(server)
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()

def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _agent_token(token: str | None, token_file: str | os.PathLike | None) -> str:
    """The token from ``token``, else the file ``token_file``, else the environment
    (:func:`oplat.wire.env_token`); OplatError without one."""
    if not token and token_file is not None:
        token = read_token_file(token_file)
    token = token or wire.env_token()
    if not token or not token.strip():
        raise OplatError(_NO_TOKEN)
    return token


def _on_ready(host: str, stop: threading.Event) -> Callable[[AgentServer], None]:
    """What ``oplat agent`` does once bound: shut down on SIGINT or SIGTERM (set ``stop``),
    warn when it listens beyond loopback, print its one ``listening on`` line."""

    def on_ready(server: AgentServer) -> None:
        def on_signal(signum: int, frame: object) -> None:
            if not stop.is_set():
                stop.set()
                threading.Thread(target=server.shutdown, daemon=True).start()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, on_signal)
            signal.signal(signal.SIGTERM, on_signal)
        if not _is_loopback(host):  # once bound: a refused address gets its error alone
            warn(
                f"listening on {host}: anyone who can reach this port and knows the token can run models; "
                "the protocol is plain HTTP, so use it on a trusted network (or an SSH tunnel)"
            )
        d = server.device
        print(
            f"oplat agent listening on {server.url} (device {d.name}, {server.runtime} {server.runtime_version}, "
            f"threads {d.options.get('threads')})",
            flush=True,
        )

    return on_ready


def run_agent(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    token: str | None = None,
    device: str = "cpu",
    config: AgentRunConfig | None = None,
    **options: Any,
) -> int:
    """``oplat agent``: print one ``listening on`` line to stdout, serve until SIGINT or
    SIGTERM, return 0. The token comes from ``token`` (Python callers), else the file
    ``config.token_file``, else ``$OPLAT_AGENT_TOKEN``, else the file
    ``$OPLAT_AGENT_TOKEN_FILE``; without one the agent refuses to start (OplatError). The
    command line never carries it (``ps`` shows every process's arguments to every user).

    Takes an :class:`AgentRunConfig` (whose fields are documented there), or its fields as
    keywords (``run_agent(host, port, threads=2, max_runs=...)``), or both (keywords
    override the config's)."""
    if config is None:
        config = AgentRunConfig(**options)
    elif not isinstance(config, AgentRunConfig):
        raise TypeError(f"expected an AgentRunConfig, got {type(config).__name__}")
    elif options:
        config = replace(config, **options)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise OplatError(f"port must be 0–65535 (0 picks a free one), got {port!r}")
    token = _agent_token(token, config.token_file)
    stop = threading.Event()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        serve(host, port, ready=_on_ready(host, stop), **config.serve_options(token, device))
    finally:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    if not config.quiet:
        print("oplat agent: stopped", file=sys.stderr)
    return 0
