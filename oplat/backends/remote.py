"""A model timed by an ``oplat agent`` on a board across the network (the host's side).

Sessions are **self-timed**: the agent runs the one timing policy
(:func:`oplat.timing.time_one`) next to the runtime, so a network round trip is never
inside a sample. Besides the backend contract a session has ``time(policy) -> Timing``,
rebuilt from the agent's raw samples; ``run()`` raises NotImplementedError, ``output()``
too (outputs stay on the board), and ``profile(runs)`` returns the kernel profile the
agent sent with the timing (None if it sent none; ``runs`` is decided by the
``profile_runs`` option, ``"auto"`` by default, as ``oplat measure`` picks it).

Feeds are not sent: the agent makes them with :func:`oplat.build.inputs_for`, the same
deterministic inputs a local session gets; the ``feeds`` argument of :func:`open` is
ignored. The protocol is described in :mod:`oplat.agent`; what both sides share (version,
token variables, error kinds, the JSON forms) is :mod:`oplat.wire`. This module does not
import the agent, nor the agent this one.

Options:

- ``url``: the agent, e.g. ``http://192.168.1.20:8765`` (or ``$OPLAT_AGENT_URL``).
- ``token``: the agent's token; else ``token_file`` (a file holding it), else
  ``$OPLAT_AGENT_TOKEN``, else ``$OPLAT_AGENT_TOKEN_FILE`` (a file). The token never
  needs to be on a command line, where ``ps`` shows it to every user.
- ``timeout_s``: longest wait for a reply once connected, in seconds (a measurement runs
  inside it; default 600, above the agent's default 300 s per request).
- ``connect_timeout_s``: longest wait to connect, in seconds (default 5).
- ``retries``: connection failures retried this many times (default 3), ``backoff_s``
  apart (default 0.5 s, doubling, at most 8 s); then an OplatError.
- ``busy_wait_s``: how long to keep retrying while the agent answers 409 busy
  (default 300 s).
- ``profile_runs``: ``"auto"`` (default), a count, or 0 for no kernel profile.

The HTTP client is the standard library's :mod:`http.client`; ``https://`` URLs work
(for an agent behind a TLS proxy).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import time
import urllib.parse
from dataclasses import dataclass, field

from oplat import wire
from oplat.backends import KernelProfile, SelfTimedSession, Unsupported
from oplat.errors import OplatError, OplatRuntimeError
from oplat.timing import Timing, TimingPolicy
from oplat.wire import TOKEN_ENV, TOKEN_FILE_ENV

__all__ = [
    "AgentClient",
    "AgentError",
    "MODEL_FORMATS",
    "RemoteSession",
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "URL_ENV",
    "agent_info",
    "available",
    "fingerprint",
    "open",
    "remote_fingerprint",
    "runtime",
]

#: Model formats :func:`open` declares (an agent may take more: raw model bytes are
#: sent as they are and checked against the agent's ``model_formats`` on open).
MODEL_FORMATS: tuple[str, ...] = ("onnx",)
#: Environment variable naming the agent when no ``url`` option is given.
URL_ENV = "OPLAT_AGENT_URL"
_MAX_BACKOFF_S = 8.0
_START_HINT = f"start it on the board with `oplat agent --token-file PATH` (or {TOKEN_ENV} set)"


class AgentError(Exception):
    """The agent loaded or ran the model and the runtime failed (an ``error`` row)."""


class _ConnectFailed(Exception):
    """Connecting failed; nothing reached the agent, so retrying is safe."""


def available(options: dict | None = None) -> str | None:
    """None: the client is the standard library (the agent itself is checked on open)."""
    return None


# ----------------------------------------------------------------------------- client
def _number(options: dict, name: str, default: float, *, minimum: float = 0.0) -> float:
    value = options.get(name, default)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise OplatError(f"remote option {name} must be a number, got {value!r}") from None
    if not math.isfinite(value) or value < minimum:
        raise OplatError(f"remote option {name} must be a number >= {minimum:g}, got {value!r}")
    return value


@dataclass(frozen=True)
class AgentClient:
    """Talks to one agent; every call is one HTTP request (retried as the options say).

    Times in seconds: ``timeout_s`` for a reply, ``connect_timeout_s`` to connect,
    ``backoff_s`` the first pause between connection retries, ``busy_wait_s`` the
    longest wait while the agent is busy.
    """

    url: str
    token: str = field(repr=False)
    timeout_s: float = 600.0
    connect_timeout_s: float = 5.0
    retries: int = 3
    backoff_s: float = 0.5
    busy_wait_s: float = 300.0

    @classmethod
    def from_options(cls, options: dict | None) -> AgentClient:
        options = dict(options or {})
        url = options.get("url") or os.environ.get(URL_ENV)
        if not url:
            raise OplatError(f"the remote device needs the agent's url (option url, or {URL_ENV}), e.g. http://BOARD:8765")
        parts = urllib.parse.urlsplit(str(url))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OplatError(f"agent url {url!r} must look like http://HOST:PORT")
        try:
            parts.port
        except ValueError:
            raise OplatError(f"agent url {url!r} has a bad port") from None
        token = options.get("token")
        if not token and options.get("token_file"):
            token = wire.read_token_file(options["token_file"], what="option token_file")
        token = token or wire.env_token()
        if not token:
            raise OplatError(
                "no agent token: give the token the agent was started with "
                f"(option token or token_file, or {TOKEN_ENV}, or {TOKEN_FILE_ENV} naming a file)"
            )
        retries = options.get("retries", 3)
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise OplatError(f"remote option retries must be a count >= 0, got {retries!r}")
        return cls(
            url=str(url).rstrip("/"),
            token=str(token),
            timeout_s=_number(options, "timeout_s", 600.0, minimum=0.001),
            connect_timeout_s=_number(options, "connect_timeout_s", 5.0, minimum=0.001),
            retries=retries,
            backoff_s=_number(options, "backoff_s", 0.5),
            busy_wait_s=_number(options, "busy_wait_s", 300.0),
        )

    # -- endpoints
    def info(self) -> dict:
        """``GET /v1/info``: the agent's device, runtime, fingerprint and limits."""
        reply = self._request("GET", wire.INFO_PATH)
        if not isinstance(reply.get("fingerprint"), dict) or "runtime" not in reply:
            raise OplatError(f"agent at {self.url} sent a malformed info reply")
        return reply

    def measure(self, model_bytes: bytes, policy: TimingPolicy, profile_runs: int | str = 0) -> dict:
        """``POST /v1/measure``: the agent's reply (raw samples, fingerprint, profile)."""
        payload = wire.measure_request(model_bytes, policy, profile_runs)
        return self._request("POST", wire.MEASURE_PATH, json.dumps(payload).encode("utf-8"))

    # -- transport
    def _request(self, method: str, path: str, body: bytes | None = None) -> dict:
        attempt, delay_s, busy_until = 0, self.backoff_s, None
        while True:
            try:
                status, headers, data = self._once(method, path, body)
            except _ConnectFailed as exc:
                if attempt >= self.retries:
                    tries = f"{attempt + 1} attempt{'s' if attempt else ''}"
                    raise OplatRuntimeError(f"agent at {self.url} unreachable: {exc} ({tries}); {_START_HINT}") from None
                attempt += 1
                time.sleep(delay_s)
                delay_s = min(max(delay_s * 2, 0.01), _MAX_BACKOFF_S)
                continue
            if status == 409:
                now = time.monotonic()
                busy_until = busy_until if busy_until is not None else now + self.busy_wait_s
                if now >= busy_until:
                    raise OplatRuntimeError(
                        f"agent at {self.url} stayed busy for {self.busy_wait_s:g} s measuring for another client; "
                        "wait for it or raise busy_wait_s"
                    )
                try:
                    pause_s = float(headers.get("Retry-After", 1))
                except ValueError:
                    pause_s = 1.0
                time.sleep(max(0.05, min(pause_s, busy_until - now)))
                continue
            return self._reply(status, data)

    def _once(self, method: str, path: str, body: bytes | None) -> tuple[int, http.client.HTTPMessage, bytes]:
        parts = urllib.parse.urlsplit(self.url)
        conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(parts.hostname, parts.port, timeout=self.connect_timeout_s)
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            try:
                conn.connect()
            except OSError as exc:
                raise _ConnectFailed(getattr(exc, "strerror", None) or str(exc) or type(exc).__name__) from None
            conn.sock.settimeout(self.timeout_s)
            conn.request(method, parts.path + path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        except TimeoutError:
            raise OplatRuntimeError(
                f"agent at {self.url} did not answer within {self.timeout_s:g} s; raise timeout_s for long measurements"
            ) from None
        except (http.client.HTTPException, OSError) as exc:
            raise OplatRuntimeError(f"agent at {self.url} dropped the connection: {type(exc).__name__}: {exc}") from None
        finally:
            conn.close()

    def _reply(self, status: int, data: bytes) -> dict:
        try:
            reply = json.loads(data)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            raise OplatError(f"{self.url} answered {status} without a JSON object: is an oplat agent listening there?")
        if status == 200:
            return reply
        message = str(reply.get("error", "no message"))
        kind = reply.get("kind")
        if status == 401:
            raise OplatError(
                f"agent at {self.url} refused the token (401): use the token it was started with "
                f"(option token or token_file, or {TOKEN_ENV} / {TOKEN_FILE_ENV})"
            )
        if status == 422 and kind == wire.UNSUPPORTED:
            raise Unsupported(message)
        if status == 422:
            raise AgentError(message)
        raise OplatError(f"agent at {self.url} answered {status} ({kind}): {message}")


# ----------------------------------------------------------------------------- backend
def agent_info(options: dict | None) -> dict:
    """The agent's ``/v1/info`` reply (device, runtime, fingerprint, limits, busy)."""
    return AgentClient.from_options(options).info()


def fingerprint(options: dict | None = None) -> dict:
    """The agent's environment fingerprint (the board's CPU, OS, runtime, threads…), the
    dict :func:`oplat.fingerprint.environment` made there: the machine that times is the
    agent's board, so rows measured remotely record this, not the host's (the backend
    contract's ``fingerprint`` hook, :class:`oplat.backends.base.Backend`)."""
    return agent_info(options)["fingerprint"]


#: The name :func:`fingerprint` had before the backend contract named the hook.
remote_fingerprint = fingerprint


def runtime(options: dict | None = None) -> tuple[str, str]:
    """The agent's runtime name and version (asks it; without ``options`` the agent is
    found from ``$OPLAT_AGENT_URL`` and ``$OPLAT_AGENT_TOKEN``)."""
    info = agent_info(options)
    return str(info["runtime"]), str(info["runtime_version"])


def _timing_from(reply: dict, url: str) -> Timing:
    try:
        return wire.timing_from_reply(reply)
    except wire.WireError as exc:
        raise OplatError(f"agent at {url} sent {exc}") from None


def _profile_from(reply: dict, url: str) -> KernelProfile | None:
    try:
        return wire.profile_from_reply(reply)
    except wire.WireError as exc:
        raise OplatError(f"agent at {url} sent {exc}") from None


class RemoteSession(SelfTimedSession):
    """One model on the agent. ``time(policy)`` measures it there; see the module doc."""

    def __init__(self, model, feeds: dict | None, options: dict):
        self._client = AgentClient.from_options(options)
        self._model_bytes = model if isinstance(model, (bytes, bytearray)) else model.SerializeToString()
        profile_runs = options.get("profile_runs", "auto")
        if profile_runs != "auto" and (not isinstance(profile_runs, int) or isinstance(profile_runs, bool) or profile_runs < 0):
            raise OplatError(f"remote option profile_runs must be 'auto' or a count >= 0, got {profile_runs!r}")
        self._profile_runs = profile_runs
        self._profile: KernelProfile | None = None
        #: The agent's fingerprint (from /v1/info on open; from the reply after time()).
        self.fingerprint: dict | None = None
        #: The agent's last reply to /v1/measure (raw samples, profile_error, elapsed_s).
        self.last_reply: dict | None = None

    def __enter__(self) -> RemoteSession:
        info = self._client.info()  # reachable, token right: fail here, before any timing
        self.fingerprint = info["fingerprint"]
        try:
            fmt = wire.model_format(bytes(self._model_bytes[:8]))
        except ValueError as exc:
            raise OplatError(str(exc)) from None
        if fmt not in info.get("model_formats", ["onnx"]):
            raise OplatError(f"agent at {self._client.url} ({info.get('runtime')}) does not take {fmt} models")
        limit = int(info.get("limits", {}).get("max_request_bytes", 0) or 0)
        # JSON + base64: 4/3 of the model plus a small envelope.
        size = 4 * math.ceil(len(self._model_bytes) / 3) + 1024
        if limit and size > limit:
            raise OplatError(
                f"model of {len(self._model_bytes)} bytes is too large for the agent at {self._client.url} "
                f"(it takes requests up to {limit} bytes; start it with a larger --max-request-mib)"
            )
        return self

    def time(self, policy: TimingPolicy) -> Timing:
        """Time the model on the agent with ``policy``; the samples are the agent's (ms)."""
        reply = self._client.measure(bytes(self._model_bytes), policy, self._profile_runs)
        timing = _timing_from(reply, self._client.url)
        self._profile = _profile_from(reply, self._client.url)
        self.fingerprint = reply.get("fingerprint", self.fingerprint)
        self.last_reply = reply
        return timing

    def run(self) -> None:
        raise NotImplementedError("remote sessions are timed on the agent")

    def output(self) -> list:
        raise NotImplementedError("remote sessions keep their outputs on the agent")

    def profile(self, runs: int) -> KernelProfile | None:
        """The kernel profile the agent sent with the last ``time()``, else None."""
        return self._profile

    def __exit__(self, *exc: object) -> None:
        self._profile = None


def open(model, feeds: dict | None, options: dict) -> RemoteSession:  # noqa: A001 (backend contract)
    """A session on the agent named by ``options`` (``feeds`` is ignored: the agent makes them)."""
    return RemoteSession(model, feeds, options)
