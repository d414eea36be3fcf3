"""The agent protocol's shared half: what ``oplat agent`` and its client both speak.

The server is :mod:`oplat.agent` (its module doc is the protocol's reference), the client
:mod:`oplat.backends.remote`; neither imports the other, both import this: the protocol
version, paths and port, the token's environment variables and file format, the error
kinds with their HTTP statuses, model-format detection, and the JSON forms of a timing
policy, a timing, a kernel profile, a measure request and its reply.

Decoders raise :class:`WireError` (a ValueError) with a message that completes
"``<who> sent ...``" (e.g. ``a malformed timing: KeyError: 'inner'``) or, for a policy,
says what is wrong with it; each side turns that into its own error.
"""

from __future__ import annotations

import base64
import math
import os
from dataclasses import asdict, fields

from oplat.errors import OplatError, warn
from oplat.records import KernelProfile
from oplat.timing import Timing, TimingPolicy

__all__ = [
    "DEFAULT_PORT",
    "ERROR_STATUS",
    "INFO_PATH",
    "MEASURE_FIELDS",
    "MEASURE_PATH",
    "MODEL_FORMATS",
    "PROTOCOL_VERSION",
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "WireError",
    "env_token",
    "error_json",
    "measure_reply",
    "measure_request",
    "model_format",
    "policy_from_json",
    "policy_to_json",
    "profile_from_reply",
    "profile_to_json",
    "read_token_file",
    "timing_from_reply",
    "timing_to_json",
]

#: Version of the JSON protocol (also the ``/v1`` in every path).
PROTOCOL_VERSION = 1
#: Port ``oplat agent`` listens on unless told otherwise.
DEFAULT_PORT = 8765
#: Environment variable holding the shared token (agent and host side).
TOKEN_ENV = "OPLAT_AGENT_TOKEN"
#: Environment variable naming a file that holds the token (when TOKEN_ENV is unset).
TOKEN_FILE_ENV = "OPLAT_AGENT_TOKEN_FILE"
#: The endpoints.
INFO_PATH, MEASURE_PATH = "/v1/info", "/v1/measure"
#: Model formats the protocol carries (an agent's ``model_formats`` is a subset).
MODEL_FORMATS = ("onnx", "tflite")
#: Fields a measure request may carry.
MEASURE_FIELDS = ("model_b64", "policy", "profile_runs")

# Error kinds: every error reply is ``{"error": "<one line>", "kind": KIND}``.
BAD_REQUEST = "bad_request"
OVER_LIMIT = "over_limit"
UNAUTHORIZED = "unauthorized"
NOT_FOUND = "not_found"
METHOD_NOT_ALLOWED = "method_not_allowed"
TIMEOUT = "timeout"
BUSY = "busy"
LENGTH_REQUIRED = "length_required"
TOO_LARGE = "too_large"
UNSUPPORTED = "unsupported"
MODEL_ERROR = "model_error"
INTERNAL = "internal"
OVERLOADED = "overloaded"
#: The HTTP status each error kind is sent with.
ERROR_STATUS = {
    BAD_REQUEST: 400,
    OVER_LIMIT: 400,
    UNAUTHORIZED: 401,
    NOT_FOUND: 404,
    METHOD_NOT_ALLOWED: 405,
    TIMEOUT: 408,
    BUSY: 409,
    LENGTH_REQUIRED: 411,
    TOO_LARGE: 413,
    UNSUPPORTED: 422,
    MODEL_ERROR: 422,
    INTERNAL: 500,
    OVERLOADED: 503,
}


class WireError(ValueError):
    """A protocol document that does not decode; the message says what is wrong."""


def error_json(kind: str, message: str) -> dict:
    """The body of an error reply."""
    return {"error": message, "kind": kind}


# ----------------------------------------------------------------------------- models
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


# ----------------------------------------------------------------------------- token
def read_token_file(path: str | os.PathLike, *, what: str = "--token-file") -> str:
    """The token in ``path``: its one line, surrounding whitespace stripped. OplatError
    when the file cannot be read, is empty or holds more than one word; a warning when
    other users may read it."""
    try:
        with open(path, "rb") as f:
            raw = f.read(4097)
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise OplatError(f"cannot read the token file {os.fspath(path)!r} ({what}): {exc.strerror or exc}") from None
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        token = None
    if not token or len(raw) > 4096 or any(ch.isspace() or not ch.isprintable() for ch in token):
        raise OplatError(
            f"the token file {os.fspath(path)!r} ({what}) must hold one token on one line "
            "(printable, no spaces, at most 4096 bytes)"
        )
    if os.name == "posix" and mode & 0o077:
        warn(f"the token file {os.fspath(path)!r} is readable by other users; chmod 600 it")
    return token


def env_token() -> str | None:
    """The token from the environment: ``$OPLAT_AGENT_TOKEN``, else the file
    ``$OPLAT_AGENT_TOKEN_FILE`` names; None when neither is set."""
    token = os.environ.get(TOKEN_ENV)
    if not token and os.environ.get(TOKEN_FILE_ENV):
        token = read_token_file(os.environ[TOKEN_FILE_ENV], what=TOKEN_FILE_ENV)
    return token


# ----------------------------------------------------------------------------- policy
def policy_to_json(policy: TimingPolicy) -> dict:
    """Every field of ``policy``."""
    return asdict(policy)


def policy_from_json(raw: object) -> TimingPolicy:
    """A policy from a request's ``policy`` (None: the default policy; missing fields:
    their defaults). WireError for an unknown, mistyped or out-of-range field."""
    if raw is None:
        return TimingPolicy()
    if not isinstance(raw, dict):
        raise WireError("'policy' must be an object of TimingPolicy fields")
    defaults = TimingPolicy()
    known = {f.name: getattr(defaults, f.name) for f in fields(TimingPolicy)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise WireError(f"unknown policy field {unknown[0]!r}; known: {', '.join(known)}")
    values = {}
    for name, value in raw.items():
        if isinstance(known[name], int):
            if not isinstance(value, int) or isinstance(value, bool):
                raise WireError(f"policy field {name!r} must be an integer, got {value!r}")
        elif not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise WireError(f"policy field {name!r} must be a finite number, got {value!r}")
        if value < 0:
            raise WireError(f"policy field {name!r} must not be negative, got {value!r}")
        values[name] = value
    try:
        policy = TimingPolicy(**values)
    except (OplatError, TypeError, ValueError) as exc:  # the policy's own range checks
        raise WireError(str(exc).strip().splitlines()[0][:300]) from None
    if policy.rounds < 1 or policy.min_runs < 1:
        raise WireError("policy rounds and min_runs must be at least 1")
    if policy.max_runs < policy.min_runs:
        raise WireError(f"policy max_runs ({policy.max_runs}) is below min_runs ({policy.min_runs})")
    return policy


# ----------------------------------------------------------------------------- timing, profile
def timing_to_json(timing: Timing) -> dict:
    """The raw samples of a timing (ms) and how they were taken."""
    return {
        "rounds_ms": timing.rounds_ms,
        "discarded_rounds_ms": timing.discarded_rounds_ms,
        "inner": timing.inner,
        "runs_per_round": timing.runs_per_round,
        "extra_rounds": timing.extra_rounds,
    }


def timing_from_reply(reply: dict) -> Timing:
    """The Timing in a measure reply; WireError when it is malformed or has no samples."""
    try:
        t = reply["timing"]

        def rounds(value: object) -> list[list[float]]:
            return [[float(s) for s in r] for r in value]

        timing = Timing(
            rounds_ms=rounds(t["rounds_ms"]),
            discarded_rounds_ms=rounds(t.get("discarded_rounds_ms", [])),
            inner=int(t["inner"]),
            runs_per_round=int(t["runs_per_round"]),
            extra_rounds=int(t.get("extra_rounds", 0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(f"a malformed timing: {type(exc).__name__}: {exc}") from None
    if not timing.rounds_ms or not all(timing.rounds_ms):
        raise WireError("a timing without samples")
    return timing


def profile_to_json(profile: KernelProfile | None) -> dict | None:
    """A kernel profile's fields (None stays None)."""
    return asdict(profile) if profile is not None else None


def profile_from_reply(reply: dict) -> KernelProfile | None:
    """The KernelProfile in a measure reply (None when it carries none); WireError when
    it is malformed."""
    raw = reply.get("profile")
    if raw is None:
        return None
    try:
        return KernelProfile(
            compute_ms=float(raw["compute_ms"]),
            layout_ms=float(raw["layout_ms"]),
            nodes=list(raw.get("nodes", [])),
            runs=int(raw.get("runs", 0)),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise WireError(f"a malformed profile: {type(exc).__name__}: {exc}") from None


# ----------------------------------------------------------------------------- measure
def measure_request(model_bytes: bytes, policy: TimingPolicy, profile_runs: int | str = 0) -> dict:
    """The body of ``POST /v1/measure``."""
    return {
        "model_b64": base64.b64encode(model_bytes).decode("ascii"),
        "policy": policy_to_json(policy),
        "profile_runs": profile_runs,
    }


def measure_reply(
    fmt: str,
    fingerprint: dict,
    policy: TimingPolicy,
    timing: Timing,
    profile: KernelProfile | None,
    elapsed_s: float,
    profile_error: str | None = None,
) -> dict:
    """The body of a measure reply (``profile_error`` only when profiling failed)."""
    reply = {
        "format": fmt,
        "fingerprint": fingerprint,
        "policy": policy_to_json(policy),
        "timing": timing_to_json(timing),
        "profile": profile_to_json(profile),
        "elapsed_s": elapsed_s,
    }
    if profile_error:
        reply["profile_error"] = profile_error
    return reply
