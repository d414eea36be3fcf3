"""``oplat agent``: measure on a board with Python, for a host across the network.

The agent runs on the board next to the runtime and times models the host sends it with
the one timing policy (:func:`oplat.timing.time_one`) on the board's local backend. The
host's side is :mod:`oplat.backends.remote`.

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
                                     "read_timeout_s"}, "busy": bool}
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
format, truncated or timed-out body) or ``over_limit``; 401 ``unauthorized``;
404/405; 409 ``busy`` (with ``Retry-After``); 411 ``length_required``; 413 ``too_large``;
422 ``unsupported`` (the runtime cannot run the op) or ``model_error`` (it failed to load
or run it); 500 ``internal`` (a bug; the agent keeps serving).

Rules the agent keeps:

- Loopback by default; another address must be asked for (and gets a warning: the
  protocol is plain HTTP, the token is readable on the wire).
- The token is compared in constant time (:func:`hmac.compare_digest`); it is checked
  before a body is read, so an unauthenticated client cannot make the agent read one.
- A body over ``max_request_bytes`` is refused from its ``Content-Length`` (413) before
  any of it is read; the agent then discards what the client still sends for a bounded
  time so the client can read the 413 instead of a reset. ``Expect: 100-continue`` is
  answered only after the token and the size are checked.
- A body that ends early or stalls for ``read_timeout_s`` gets 400; nothing a client
  sends stops the agent serving the next request.
- One measurement at a time: a second ``/v1/measure`` while one runs is answered **409
  busy** at once (with ``Retry-After``), not queued, so no connection hangs behind a long
  measurement and the client decides how long to wait. ``/v1/info`` always answers.
- Model formats: ONNX always; TFLite only where the device's backend module lists
  ``"tflite"`` in ``MODEL_FORMATS`` (its ``open()`` then gets the flatbuffer bytes and
  ``feeds=None`` and makes its own inputs). Anything else is a 400.
- Limits are **refused with 400** (``over_limit``), never clamped: a row records the
  policy it was measured with, and a silently clamped one would lie. ``max_runs`` bounds
  the samples a request may ask for (``(rounds + max_extra_rounds) * policy.max_runs``)
  and ``profile_runs``; ``max_seconds`` bounds the measurement's estimated worst-case
  duration, estimated from one untimed probe run after the model is loaded.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import math
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from oplat import __version__
from oplat.errors import OplatError, warn
from oplat.timing import TimingPolicy

__all__ = [
    "AgentConfig",
    "AgentServer",
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_MAX_RUNS",
    "DEFAULT_MAX_SECONDS",
    "DEFAULT_PORT",
    "DEFAULT_READ_TIMEOUT_S",
    "PROTOCOL_VERSION",
    "TOKEN_ENV",
    "make_server",
    "model_format",
    "run_agent",
    "serve",
]

#: Version of the JSON protocol (also the ``/v1`` in every path).
PROTOCOL_VERSION = 1
#: Port ``oplat agent`` listens on unless told otherwise.
DEFAULT_PORT = 8765
#: Environment variable holding the shared token (agent and host side).
TOKEN_ENV = "OPLAT_AGENT_TOKEN"
#: Largest request body accepted, in bytes (the model is base64: ~3/4 of this).
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
#: Most timing samples one request may ask for (also the most profiled runs).
DEFAULT_MAX_RUNS = 100_000
#: Longest estimated measurement one request may ask for, in seconds.
DEFAULT_MAX_SECONDS = 300.0
#: A request (headers or body) that stalls this long, in seconds, is dropped.
DEFAULT_READ_TIMEOUT_S = 30.0

#: After an early error reply, discard what the client still sends for at most this long (s).
_LINGER_S = 2.0
#: Bytes read from the socket per call while reading a body.
_CHUNK_BYTES = 1 << 20
#: Fields a measure request may carry.
_MEASURE_FIELDS = ("model_b64", "policy", "profile_runs")
#: Rough cost of one profiled run against one timed run (profilers slow runs down).
_PROFILE_COST = 2.0


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
        max_seconds: longest estimated measurement per request, in seconds.
        read_timeout_s: a request that stalls this long, in seconds, is dropped.
        quiet: no per-request log lines on stderr.
    """

    token: str = field(repr=False)
    device: str = "cpu"
    device_options: dict = field(default_factory=dict)
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_runs: int = DEFAULT_MAX_RUNS
    max_seconds: float = DEFAULT_MAX_SECONDS
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    quiet: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.token, str) or not self.token.strip():
            raise OplatError(
                f"the agent needs a token: pass --token or set {TOKEN_ENV} "
                "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))')"
            )
        for name in ("max_request_bytes", "max_runs"):
            if int(getattr(self, name)) < 1:
                raise OplatError(f"agent {name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_seconds", "read_timeout_s"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value <= 0:
                raise OplatError(f"agent {name} must be a positive number of seconds, got {value}")


# ----------------------------------------------------------------------------- formats
def model_format(data: bytes) -> str:
    """``"onnx"`` or ``"tflite"`` from a model's first bytes; ValueError if neither.

    TFLite: a FlatBuffer with file identifier ``TFL3`` at bytes 4..8. ONNX: a protobuf
    ``ModelProto`` whose first field is ``ir_version`` (tag byte ``0x08``), which every
    ONNX writer serializes first; the agent then parses it to be sure.
    """
    if len(data) >= 8 and data[4:8] == b"TFL3":
        return "tflite"
    if len(data) >= 2 and data[0] == 0x08:
        return "onnx"
    head = data[:8].hex(" ") or "empty"
    raise ValueError(f"unknown model format (first bytes {head}); send ONNX or TFLite (.tflite) model bytes")


def _parse_onnx(data: bytes):
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"model looks like ONNX but does not parse: {exc}") from None
    if model.ir_version < 1 or not model.graph.node or not model.opset_import:
        raise ValueError("model parses as protobuf but is not an ONNX model (no ir_version, graph nodes or opset)")
    return model


# ----------------------------------------------------------------------------- errors
class _Reply(Exception):
    """An error reply: raised anywhere in a handler, sent as ``{"error", "kind"}``."""

    def __init__(self, status: int, kind: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message
        self.headers = headers or {}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
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
        raise _Reply(400, "bad_request", f"malformed JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise _Reply(400, "bad_request", f"the request must be a JSON object, got {type(data).__name__}")
    return data


def _parse_policy(raw: object) -> TimingPolicy:
    if raw is None:
        return TimingPolicy()
    if not isinstance(raw, dict):
        raise _Reply(400, "bad_request", "'policy' must be an object of TimingPolicy fields")
    defaults = TimingPolicy()
    known = {f.name: getattr(defaults, f.name) for f in fields(TimingPolicy)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise _Reply(400, "bad_request", f"unknown policy field {unknown[0]!r}; known: {', '.join(known)}")
    values = {}
    for name, value in raw.items():
        if isinstance(known[name], int):
            if not isinstance(value, int) or isinstance(value, bool):
                raise _Reply(400, "bad_request", f"policy field {name!r} must be an integer, got {value!r}")
        elif not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise _Reply(400, "bad_request", f"policy field {name!r} must be a finite number, got {value!r}")
        if value < 0:
            raise _Reply(400, "bad_request", f"policy field {name!r} must not be negative, got {value!r}")
        values[name] = value
    policy = TimingPolicy(**values)
    if policy.rounds < 1 or policy.min_runs < 1:
        raise _Reply(400, "bad_request", "policy rounds and min_runs must be at least 1")
    if policy.max_runs < policy.min_runs:
        raise _Reply(400, "bad_request", f"policy max_runs ({policy.max_runs}) is below min_runs ({policy.min_runs})")
    return policy


def _parse_measure(body: bytes, config: AgentConfig, model_formats: tuple[str, ...]) -> _MeasureRequest:
    data = _decode_json(body)
    unknown = sorted(set(data) - set(_MEASURE_FIELDS))
    if unknown:
        raise _Reply(400, "bad_request", f"unknown field {unknown[0]!r}; a measure request has {', '.join(_MEASURE_FIELDS)}")
    if "model_b64" not in data:
        raise _Reply(400, "bad_request", "missing field 'model_b64' (the model bytes, base64)")
    if not isinstance(data["model_b64"], str):
        raise _Reply(400, "bad_request", "'model_b64' must be a base64 string")
    try:
        blob = base64.b64decode(data["model_b64"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _Reply(400, "bad_request", f"'model_b64' is not valid base64: {exc}") from None
    try:
        fmt = model_format(blob)
    except ValueError as exc:
        raise _Reply(400, "bad_request", str(exc)) from None
    if fmt not in model_formats:
        names = {"onnx": "ONNX", "tflite": "TFLite"}
        raise _Reply(
            400,
            "bad_request",
            f"the model is {names[fmt]} but device {config.device!r} takes "
            f"{' or '.join(names[f] for f in model_formats)} models only",
        )
    if fmt == "onnx":
        try:
            model = _parse_onnx(blob)
        except ValueError as exc:
            raise _Reply(400, "bad_request", str(exc)) from None
    else:
        model = blob

    policy = _parse_policy(data.get("policy"))
    samples = (policy.rounds + policy.max_extra_rounds) * policy.max_runs
    if samples > config.max_runs:
        raise _Reply(
            400,
            "over_limit",
            f"the policy allows up to {samples} samples ((rounds + max_extra_rounds) * max_runs); "
            f"this agent takes at most {config.max_runs} (its --max-runs)",
        )
    profile_runs = data.get("profile_runs", 0)
    if profile_runs != "auto":
        if not isinstance(profile_runs, int) or isinstance(profile_runs, bool) or profile_runs < 0:
            raise _Reply(400, "bad_request", f"'profile_runs' must be a count >= 0 or \"auto\", got {profile_runs!r}")
        if profile_runs > config.max_runs:
            raise _Reply(400, "over_limit", f"profile_runs {profile_runs} is over this agent's --max-runs {config.max_runs}")
    return _MeasureRequest(fmt=fmt, model=model, policy=policy, profile_runs=profile_runs)


def _estimate_s(policy: TimingPolicy, run_s: float, profile_runs: int | str) -> float:
    """Worst-case seconds :func:`oplat.timing.time_one` (plus profiling) takes for runs
    of ``run_s`` seconds each; mirrors its warm-up and round arithmetic, no more."""
    run_s = max(run_s, 1e-9)
    warm_s = max(policy.warmup_s, policy.warmup_runs * run_s) + 3 * run_s
    inner = max(1, math.ceil(policy.min_sample_s / run_s))
    sample_s = inner * run_s
    runs = min(max(math.ceil(policy.round_s / sample_s), policy.min_runs), policy.max_runs)
    rounds_s = (policy.rounds + policy.max_extra_rounds) * runs * sample_s
    from oplat.measure import _PROFILE_RUNS_MAX  # the most runs "auto" picks

    n_profile = _PROFILE_RUNS_MAX if profile_runs == "auto" else profile_runs
    profile_s = (n_profile + 2) * run_s * _PROFILE_COST if n_profile else 0.0
    return warm_s + rounds_s + profile_s


# ----------------------------------------------------------------------------- server
class AgentServer(ThreadingHTTPServer):
    """The agent's HTTP server: one thread per connection, one measurement at a time."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], config: AgentConfig):
        from oplat.devices import get_device
        from oplat.measure import fingerprint_for

        device = get_device(config.device).with_options(**config.device_options)
        self.config = config
        self.device = device
        self.module = device.require()
        self.fingerprint = fingerprint_for(device)
        self.runtime, self.runtime_version = self.fingerprint["runtime"], self.fingerprint["runtime_version"]
        self.model_formats: tuple[str, ...] = tuple(getattr(self.module, "MODEL_FORMATS", ("onnx",)))
        self.measure_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

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
            },
            "busy": self.measure_lock.locked(),
        }

    def measure(self, request: _MeasureRequest) -> dict:
        """Open, probe, time and profile one model; the caller holds ``measure_lock``."""
        from oplat.backends import Unsupported
        from oplat.build import inputs_for
        from oplat.measure import _profile_runs  # the same auto profile length as `oplat measure`
        from oplat.timing import time_one

        start = time.perf_counter()
        profile = profile_error = None
        try:
            feeds = inputs_for(request.model) if request.fmt == "onnx" else None
            with self.module.open(request.model, feeds, self.device.options) as session:
                self_timed = hasattr(session, "time")  # a board tool behind the agent times itself
                # One untimed probe run to bound the request's duration (not a latency).
                t0 = time.perf_counter()
                if not self_timed:
                    session.run()
                estimate_s = _estimate_s(request.policy, time.perf_counter() - t0, request.profile_runs)
                if estimate_s > self.config.max_seconds:
                    raise _Reply(
                        400,
                        "over_limit",
                        f"this model and policy would take about {estimate_s:.0f} s on the agent; "
                        f"it takes at most {self.config.max_seconds:g} s per request (its --max-seconds)",
                    )
                timing = session.time(request.policy) if self_timed else time_one(session.run, request.policy)
                runs = request.profile_runs
                if runs == "auto":
                    runs = _profile_runs(timing.stats()["median_ms"])
                if runs:
                    try:
                        profile = session.profile(runs)
                    except Exception as exc:  # the timing stands; say why per-node times are missing
                        profile_error = _one_line(exc)[:300]
        except _Reply:
            raise
        except Unsupported as exc:
            text = str(exc).strip().splitlines()
            raise _Reply(422, "unsupported", text[0][:500] if text else "the runtime cannot run this model") from None
        except Exception as exc:  # the runtime failed to load or run this model
            raise _Reply(422, "model_error", _one_line(exc)) from None
        reply = {
            "format": request.fmt,
            "fingerprint": self.fingerprint,
            "policy": asdict(request.policy),
            "timing": {
                "rounds_ms": timing.rounds_ms,
                "discarded_rounds_ms": timing.discarded_rounds_ms,
                "inner": timing.inner,
                "runs_per_round": timing.runs_per_round,
                "extra_rounds": timing.extra_rounds,
            },
            "profile": asdict(profile) if profile is not None else None,
            "elapsed_s": round(time.perf_counter() - start, 6),
        }
        if profile_error:
            reply["profile_error"] = profile_error
        return reply


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"oplat-agent/{__version__}"
    sys_version = ""
    server: AgentServer

    # -- connection
    def setup(self) -> None:
        self.timeout = self.server.config.read_timeout_s  # reads and writes on this socket
        super().setup()

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
            routes = {"/v1/info": ("GET", self._info), "/v1/measure": ("POST", self._measure)}
            if path not in routes:
                raise _Reply(404, "not_found", f"no endpoint {path!r}; endpoints: {', '.join(routes)}")
            wanted, handler = routes[path]
            if method != wanted:
                raise _Reply(405, "method_not_allowed", f"{path} takes {wanted}", {"Allow": wanted})
            status, payload = handler()
            self._send_json(status, payload)
        except _Reply as reply:
            self._send_error(reply)
        except Exception as exc:  # a bug: say so, keep serving
            traceback.print_exc(file=sys.stderr)
            self._send_error(_Reply(500, "internal", f"internal error: {_one_line(exc)}"))

    def _info(self) -> tuple[int, dict]:
        return 200, self.server.info()

    def _measure(self) -> tuple[int, dict]:
        body = self._read_body()
        request = _parse_measure(body, self.server.config, self.server.model_formats)
        lock = self.server.measure_lock
        if not lock.acquire(blocking=False):
            raise _Reply(409, "busy", "the agent is measuring for another request; retry later", {"Retry-After": "1"})
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
                401,
                "unauthorized",
                "missing or wrong token: send 'Authorization: Bearer <token>' with the agent's token",
                {"WWW-Authenticate": 'Bearer realm="oplat-agent"'},
            )

    def _content_length(self) -> int:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise _Reply(411, "length_required", "chunked bodies are not accepted; send Content-Length")
        raw = self.headers.get("Content-Length")
        if raw is None:
            if self.command == "POST":
                raise _Reply(411, "length_required", "a POST needs a Content-Length header")
            return 0
        try:
            length = int(raw)
        except ValueError:
            raise _Reply(400, "bad_request", f"Content-Length {raw!r} is not a number") from None
        if length < 0:
            raise _Reply(400, "bad_request", f"Content-Length {length} is negative")
        limit = self.server.config.max_request_bytes
        if length > limit:
            raise _Reply(
                413,
                "too_large",
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
                    raise _Reply(400, "bad_request", f"request body ended after {len(data)} of {length} bytes")
                data += chunk
        except TimeoutError:
            raise _Reply(
                400,
                "bad_request",
                f"request body stalled for {self.server.config.read_timeout_s:g} s after {len(data)} of {length} bytes",
            ) from None
        except (ConnectionError, OSError) as exc:
            raise _Reply(400, "bad_request", f"connection failed while reading the body: {exc}") from None
        self._body_read = True
        return bytes(data)

    # -- replies
    def _send_json(self, status: int, payload: dict, headers: dict | None = None) -> None:
        body = json.dumps(payload, allow_nan=False).encode("utf-8")
        try:
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
        self._send_json(reply.status, {"error": reply.message, "kind": reply.kind}, reply.headers)
        if unread and reply.status != 400:
            self._linger()

    def _declared_length(self) -> int:
        try:
            return max(0, int(self.headers.get("Content-Length", "0")))
        except ValueError:
            return 0

    def _linger(self) -> None:
        """Discard what the client still sends (bounded in time) so it reads our reply
        instead of a connection reset; nothing is kept."""
        sock = self.connection
        try:
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + _LINGER_S
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                if not sock.recv(65536):
                    break
        except OSError:
            pass


# ----------------------------------------------------------------------------- entry points
def make_server(host: str, port: int, config: AgentConfig) -> AgentServer:
    """Bind an :class:`AgentServer` (not serving yet); OplatError if the address is taken."""
    try:
        return AgentServer((host, port), config)
    except OSError as exc:
        raise OplatError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port or --host") from None


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    token: str,
    device: str = "cpu",
    device_options: dict | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_runs: int = DEFAULT_MAX_RUNS,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    quiet: bool = False,
    ready: Callable[[AgentServer], None] | None = None,
) -> None:
    """Serve until ``server.shutdown()`` is called (``ready`` gets the bound server).

    ``port`` 0 picks a free port (``server.server_address[1]`` says which). Limits:
    ``max_request_bytes`` in bytes, ``max_seconds`` and ``read_timeout_s`` in seconds,
    ``max_runs`` in samples; see :class:`AgentConfig`.
    """
    config = AgentConfig(
        token=token,
        device=device,
        device_options={k: v for k, v in (device_options or {}).items() if v is not None},
        max_request_bytes=int(max_request_bytes),
        max_runs=int(max_runs),
        max_seconds=float(max_seconds),
        read_timeout_s=float(read_timeout_s),
        quiet=quiet,
    )
    server = make_server(host, port, config)
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


def run_agent(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    token: str | None = None,
    device: str = "cpu",
    *,
    threads: int | None = None,
    precision: str | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_runs: int = DEFAULT_MAX_RUNS,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    quiet: bool = False,
) -> int:
    """``oplat agent``: print one ``listening on`` line to stdout, serve until SIGINT or
    SIGTERM, return 0. The token comes from ``token`` or ``$OPLAT_AGENT_TOKEN``; without
    one the agent refuses to start (OplatError)."""
    token = token or os.environ.get(TOKEN_ENV)
    if not token:
        raise OplatError(
            f"the agent needs a token: pass --token or set {TOKEN_ENV} "
            "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))')"
        )
    if not _is_loopback(host):
        warn(
            f"listening on {host}: anyone who can reach this port and knows the token can run models; "
            "the protocol is plain HTTP, so use it on a trusted network (or an SSH tunnel)"
        )
    stop = threading.Event()

    def on_ready(server: AgentServer) -> None:
        def on_signal(signum: int, frame: object) -> None:
            if not stop.is_set():
                stop.set()
                threading.Thread(target=server.shutdown, daemon=True).start()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, on_signal)
            signal.signal(signal.SIGTERM, on_signal)
        d = server.device
        print(
            f"oplat agent listening on {server.url} (device {d.name}, {server.runtime} {server.runtime_version}, "
            f"threads {d.options.get('threads')})",
            flush=True,
        )

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        serve(
            host,
            port,
            token=token,
            device=device,
            device_options={"threads": threads, "precision": precision},
            max_request_bytes=max_request_bytes,
            max_runs=max_runs,
            max_seconds=max_seconds,
            read_timeout_s=read_timeout_s,
            quiet=quiet,
            ready=on_ready,
        )
    finally:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    if not quiet:
        print("oplat agent: stopped", file=sys.stderr)
    return 0
