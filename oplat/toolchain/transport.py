"""Move files to a target and run commands there: ``Local``, ``Adb``, ``Ssh``.

Rules every transport keeps:

- Commands are argv lists. Where a remote shell must parse them (``adb shell``,
  ``ssh``) the list is joined with :func:`shlex.join`, so no argument is ever
  re-split or expanded; host names, serials and remote paths are checked so none can
  be read as an option or carry shell syntax.
- Every step has a timeout. A step that runs past it is killed together with the
  processes it started (its own process group) and raises :class:`StepTimeout`.
- Transient failures (a device that went offline, a dropped connection) are retried
  up to ``retries`` times, ``retry_delay_s`` apart. A remote command that *ran* and
  failed is not retried: a sentinel echoed after it (``__OPLAT_RC__=<rc>``) tells the
  command's own exit status apart from a lost connection, also with old ``adb``
  builds that do not forward exit codes.
- A missing ``adb``/``ssh``/``scp`` is an :class:`~oplat.errors.OplatError` naming the
  package to install.
"""

from __future__ import annotations

import os
import posixpath
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from oplat.errors import OplatError
from oplat.toolchain.errors import StepTimeout, ToolchainError, tail

__all__ = [
    "ADB_HINT",
    "SSH_HINT",
    "Adb",
    "CompletedRun",
    "Local",
    "Ssh",
    "StepPolicy",
    "Transport",
    "find_tool",
    "make_transport",
    "run_host",
]

ADB_HINT = (
    "install Android platform-tools (Debian/Ubuntu: sudo apt install adb; others: "
    "https://developer.android.com/tools/releases/platform-tools) and put adb on PATH"
)
SSH_HINT = "install an OpenSSH client (Debian/Ubuntu: sudo apt install openssh-client) and put ssh/scp on PATH"

#: Echoed after every remote command; its absence means the connection dropped.
_MARKER = "__OPLAT_RC__"
_MARKER_RE = re.compile(rf"{_MARKER}=(\d+)[ \t\r]*\n?[ \t\r\n]*\Z")
#: Prefix of the directories ``mkdtemp`` makes; ``cleanup`` removes nothing else.
_TMP_PREFIX = "oplat-"
_SAFE_REMOTE_PATH = re.compile(r"/[A-Za-z0-9._/@%+=,:-]*")
_SAFE_HOST = re.compile(r"[A-Za-z0-9._%:\[\]-]+")
_SAFE_USER = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]*")
_SAFE_SERIAL = re.compile(r"[A-Za-z0-9._:\[\]-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class CompletedRun:
    """A finished command: exit status, output (stdout then stderr), the argv run.

    ``argv`` is the command as run on the host (for a remote transport: the ``adb`` or
    ``ssh`` invocation). ``attempts`` counts tries including retries.
    """

    rc: int
    output: str
    argv: tuple[str, ...]
    duration_s: float = 0.0
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.rc == 0


def find_tool(name: str) -> str | None:
    """Path of executable ``name``: on PATH, or installed next to this Python.

    The second place finds console scripts of the running virtual environment
    (``benchmark_app``, ``litert-benchmark``) when the environment is not activated.
    A name with a path separator is taken as a path.
    """
    if os.sep in name or (os.altsep and os.altsep in name):
        path = os.path.expanduser(name)
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    found = shutil.which(name)
    if found:
        return found
    dirs = {os.path.dirname(sys.executable)}
    try:
        dirs.add(sysconfig.get_path("scripts"))
    except KeyError:  # pragma: no cover - exotic install schemes
        pass
    return shutil.which(name, path=os.pathsep.join(sorted(d for d in dirs if d)))


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass


def _decode(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


def _exec(
    argv: Sequence[str],
    timeout_s: float,
    *,
    cwd: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    step: str = "run",
) -> tuple[int, str, str, float]:
    """Run ``argv`` on this host; (rc, stdout, stderr, seconds). Kills the group on timeout."""
    argv = [str(a) for a in argv]
    full_env = None if env is None else {**os.environ, **env}
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=full_env,
            start_new_session=True,  # its own process group: a timeout kills its children too
        )
    except FileNotFoundError:
        raise ToolchainError(
            f"{argv[0]} not found; install it or put it on PATH", argv=argv, step=step
        ) from None
    except PermissionError:
        raise ToolchainError(f"{argv[0]} is not executable; chmod +x it", argv=argv, step=step) from None
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process that ignores SIGKILL
            out, err = b"", b""
        raise StepTimeout(
            f"{step} timed out after {timeout_s:g} s and was killed; raise timeout_s in the device file "
            "if the step is just slow",
            argv=argv,
            output_tail=tail(_decode(out) + _decode(err)),
            step=step,
        ) from None
    return proc.returncode, _decode(out), _decode(err), time.monotonic() - start


def run_host(
    argv: Sequence[str],
    timeout_s: float,
    *,
    cwd: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    step: str = "run",
) -> CompletedRun:
    """Run ``argv`` on this machine (``argv[0]`` found with :func:`find_tool`).

    A non-zero exit status is returned; a missing tool or a timeout raises.
    """
    argv = [str(a) for a in argv]
    resolved = find_tool(argv[0])
    if resolved is None:
        raise ToolchainError(
            f"{argv[0]} not found on PATH (nor next to {sys.executable}); install it or put it on PATH",
            argv=argv,
            step=step,
        )
    rc, out, err, seconds = _exec([resolved, *argv[1:]], timeout_s, cwd=cwd, env=env, step=step)
    return CompletedRun(rc, _join(out, err), tuple(argv), seconds)


def _join(stdout: str, stderr: str) -> str:
    if stdout and stderr and not stdout.endswith("\n"):
        return stdout + "\n" + stderr
    return stdout + stderr


class Transport(ABC):
    """Where the timing tool runs and how files get there."""

    kind: str = ""

    @abstractmethod
    def describe(self) -> str:
        """A short human name for the target (``adb device 1234``)."""

    @abstractmethod
    def available(self) -> str | None:
        """None when the host-side tools exist, else what is missing and how to fix it."""

    @abstractmethod
    def reachable(self) -> str | None:
        """None when the target answers, else why not (tools missing included)."""

    @abstractmethod
    def mkdtemp(self) -> str:
        """A fresh, empty working directory on the target."""

    @abstractmethod
    def push(self, local: str | os.PathLike, remote: str) -> str:
        """Copy a local file to ``remote`` on the target; returns ``remote``."""

    @abstractmethod
    def pull(self, remote: str, local: str | os.PathLike) -> Path:
        """Copy ``remote`` from the target to ``local``; returns the local path."""

    @abstractmethod
    def run(
        self,
        argv: Sequence[str],
        timeout_s: float,
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CompletedRun:
        """Run ``argv`` on the target; a non-zero ``rc`` is returned, not raised."""

    @abstractmethod
    def cleanup(self, path: str) -> None:
        """Remove a directory made by :meth:`mkdtemp` (and nothing else)."""

    @abstractmethod
    def has_tool(self, name: str) -> bool:
        """Whether executable ``name`` exists on the target."""


class Local(Transport):
    """The timing tool runs on this machine; files are copied into a temp directory."""

    kind = "local"

    def __init__(self, *, base_dir: str | os.PathLike | None = None, step_timeout_s: float = 120.0):
        self.base_dir = None if base_dir in (None, "") else os.path.expanduser(str(base_dir))
        self.step_timeout_s = float(step_timeout_s)

    def describe(self) -> str:
        return "this machine"

    def available(self) -> str | None:
        return None

    def reachable(self) -> str | None:
        return None

    def mkdtemp(self) -> str:
        if self.base_dir:
            os.makedirs(self.base_dir, exist_ok=True)
        return tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=self.base_dir)

    def push(self, local: str | os.PathLike, remote: str) -> str:
        if os.path.isdir(local):
            shutil.copytree(local, remote)
        else:
            shutil.copy2(local, remote)
        return str(remote)

    def pull(self, remote: str, local: str | os.PathLike) -> Path:
        shutil.copy2(remote, local)
        return Path(local)

    def run(self, argv, timeout_s, *, cwd=None, env=None) -> CompletedRun:
        return run_host(argv, timeout_s, cwd=cwd, env=env)

    def cleanup(self, path: str) -> None:
        if not os.path.basename(os.path.normpath(path)).startswith(_TMP_PREFIX):
            raise OplatError(f"refusing to remove {path}: oplat only removes directories it made")
        shutil.rmtree(path, ignore_errors=True)

    def has_tool(self, name: str) -> bool:
        return find_tool(name) is not None


@dataclass(frozen=True)
class StepPolicy:
    """How a remote transport runs each step: ``retries`` of a transient failure,
    ``retry_delay_s`` apart, and every push / pull / mkdir / cleanup step's timeout."""

    retries: int = 2
    retry_delay_s: float = 1.0
    step_timeout_s: float = 120.0


class _Remote(Transport):
    """Shared logic of ``adb`` and ``ssh``: retries, the rc sentinel, remote temp dirs."""

    _hint = ""

    def __init__(self, *, remote_dir: str, steps: StepPolicy):
        remote_dir = posixpath.normpath(remote_dir or "/")
        _check_remote_path(remote_dir, "remote_dir")
        if int(steps.retries) < 0:
            raise OplatError(f"retries must be >= 0, got {steps.retries}")
        self.remote_dir = remote_dir
        self.retries = int(steps.retries)
        self.retry_delay_s = float(steps.retry_delay_s)
        self.step_timeout_s = float(steps.step_timeout_s)

    # -- building blocks a subclass provides
    @abstractmethod
    def _shell_argv(self, command: str) -> list[str]:
        """Host argv that runs the shell ``command`` string on the target."""

    @abstractmethod
    def _push_argv(self, local: str, remote: str) -> list[str]: ...

    @abstractmethod
    def _pull_argv(self, remote: str, local: str) -> list[str]: ...

    @abstractmethod
    def _copy_failed_transiently(self, rc: int, output: str) -> bool: ...

    def _tool(self, name: str) -> str:
        path = find_tool(name)
        if path is None:
            raise OplatError(f"{name} not found on PATH; {self._hint}")
        return path

    # -- retry loop
    def _call(
        self, argv: list[str], timeout_s: float, transient: Callable[[int, str, str], bool], step: str
    ) -> tuple[int, str, str, float, int]:
        attempt = 0
        while True:
            attempt += 1
            rc, out, err, seconds = _exec(argv, timeout_s, step=step)
            out, err = out.replace("\r\n", "\n"), err.replace("\r\n", "\n")
            if not transient(rc, out, err) or attempt > self.retries:
                return rc, out, err, seconds, attempt
            time.sleep(self.retry_delay_s)

    # -- Transport API
    def run(self, argv, timeout_s, *, cwd=None, env=None) -> CompletedRun:
        argv = [str(a) for a in argv]
        parts = []
        if cwd:
            _check_remote_path(cwd, "cwd")
            parts.append(f"cd {shlex.quote(cwd)} &&")
        for key, value in (env or {}).items():
            if not _ENV_NAME.fullmatch(key):
                raise OplatError(f"environment variable name {key!r} is not valid; use letters, digits and _")
            parts.append(f"{key}={shlex.quote(str(value))}")
        parts.append(shlex.join(argv))
        command = " ".join(parts) + f"; echo {_MARKER}=$?"
        host_argv = self._shell_argv(command)

        def dropped(rc: int, out: str, err: str) -> bool:
            return _MARKER_RE.search(out) is None

        rc, out, err, seconds, attempts = self._call(host_argv, timeout_s, dropped, "run")
        marker = _MARKER_RE.search(out)
        if marker is None:
            raise ToolchainError(
                f"lost the connection to {self.describe()} while running a command "
                f"({attempts} attempt(s), rc={rc}); check the cable or network and that the board is up",
                argv=host_argv,
                output_tail=tail(_join(out, err)),
                step="run",
            )
        out = out[: marker.start()]
        return CompletedRun(int(marker.group(1)), _join(out, err), tuple(host_argv), seconds, attempts)

    def _checked(self, argv: list[str], timeout_s: float, step: str, what: str) -> CompletedRun:
        def transient(rc: int, out: str, err: str) -> bool:
            return rc != 0 and self._copy_failed_transiently(rc, out + err)

        rc, out, err, seconds, attempts = self._call(argv, timeout_s, transient, step)
        if rc != 0:
            raise ToolchainError(
                f"{what} failed on {self.describe()} (rc={rc}, {attempts} attempt(s))",
                argv=argv,
                output_tail=tail(_join(out, err)),
                step=step,
            )
        return CompletedRun(rc, _join(out, err), tuple(argv), seconds, attempts)

    def push(self, local, remote) -> str:
        _check_remote_path(remote, "remote path")
        local = os.fspath(local)
        if not os.path.exists(local):
            raise OplatError(f"cannot push {local}: no such file")
        self._checked(self._push_argv(local, remote), self.step_timeout_s, "push", f"pushing {local}")
        return remote

    def pull(self, remote, local) -> Path:
        _check_remote_path(remote, "remote path")
        self._checked(self._pull_argv(remote, os.fspath(local)), self.step_timeout_s, "pull", f"pulling {remote}")
        return Path(local)

    def mkdtemp(self) -> str:
        path = posixpath.join(self.remote_dir, _TMP_PREFIX + secrets.token_hex(6))
        # mkdir without -p on the leaf: it fails instead of reusing an existing directory.
        result = self._run_sh(f"mkdir -p {shlex.quote(self.remote_dir)} && mkdir {shlex.quote(path)}")
        if result.rc != 0:
            raise ToolchainError(
                f"cannot create a working directory under {self.remote_dir} on {self.describe()}; "
                "set remote_dir (or OPLAT_REMOTE_DIR) to a writable directory",
                argv=result.argv,
                output_tail=tail(result.output),
                step="mkdtemp",
            )
        return path

    def cleanup(self, path: str) -> None:
        _check_remote_path(path, "path")
        norm = posixpath.normpath(path)
        if posixpath.dirname(norm) != self.remote_dir or not posixpath.basename(norm).startswith(_TMP_PREFIX):
            raise OplatError(f"refusing to remove {path} on {self.describe()}: oplat only removes directories it made")
        result = self.run(["rm", "-rf", norm], self.step_timeout_s)
        if result.rc != 0:
            raise ToolchainError(
                f"cannot remove {norm} on {self.describe()}", argv=result.argv, output_tail=tail(result.output),
                step="cleanup",
            )

    def has_tool(self, name: str) -> bool:
        if name.startswith("/"):
            _check_remote_path(name, "tool path")
            return self._run_sh(f"test -x {shlex.quote(name)}").rc == 0
        return self._run_sh(f"command -v {shlex.quote(name)} >/dev/null 2>&1").rc == 0

    def _run_sh(self, script: str) -> CompletedRun:
        """Run a fixed shell snippet (built here from quoted parts) on the target."""
        host_argv = self._shell_argv(f"{script}; echo {_MARKER}=$?")
        rc, out, err, seconds, attempts = self._call(
            host_argv, self.step_timeout_s, lambda rc, o, e: _MARKER_RE.search(o) is None, "run"
        )
        marker = _MARKER_RE.search(out)
        if marker is None:
            raise ToolchainError(
                f"lost the connection to {self.describe()} ({attempts} attempt(s), rc={rc}); "
                "check the cable or network and that the board is up",
                argv=host_argv,
                output_tail=tail(_join(out, err)),
                step="run",
            )
        return CompletedRun(int(marker.group(1)), _join(out[: marker.start()], err), tuple(host_argv), seconds, attempts)


_ADB_TRANSIENT = re.compile(
    r"device offline|device '[^']*' not found|no devices/emulators found|device not found|error: closed"
    r"|protocol fault|connection reset|broken pipe|device still authorizing|cannot connect to daemon"
    r"|failed to connect",
    re.I,
)


class Adb(_Remote):
    """An Android device over ``adb``; ``serial`` picks one of several (else ``ANDROID_SERIAL``)."""

    kind = "adb"
    _hint = ADB_HINT

    def __init__(
        self,
        serial: str | None = None,
        *,
        remote_dir: str = "/data/local/tmp",
        retries: int = 2,
        retry_delay_s: float = 1.0,
        step_timeout_s: float = 120.0,
        adb: str = "adb",
    ):
        super().__init__(remote_dir=remote_dir, steps=StepPolicy(retries, retry_delay_s, step_timeout_s))
        serial = serial or None
        if serial is not None and (serial.startswith("-") or not _SAFE_SERIAL.fullmatch(serial)):
            raise OplatError(f"adb serial {serial!r} is not valid; copy it from `adb devices`")
        self.serial = serial
        self.adb = adb

    def describe(self) -> str:
        return f"adb device {self.serial}" if self.serial else "the adb device"

    def _base(self) -> list[str]:
        return [self._tool(self.adb), *(["-s", self.serial] if self.serial else [])]

    def _shell_argv(self, command: str) -> list[str]:
        return [*self._base(), "shell", command]

    def _push_argv(self, local: str, remote: str) -> list[str]:
        return [*self._base(), "push", local, remote]

    def _pull_argv(self, remote: str, local: str) -> list[str]:
        return [*self._base(), "pull", remote, local]

    def _copy_failed_transiently(self, rc: int, output: str) -> bool:
        return _ADB_TRANSIENT.search(output) is not None

    def available(self) -> str | None:
        if find_tool(self.adb) is None:
            return f"adb not on PATH (needed to reach the board); {ADB_HINT}"
        return None

    def reachable(self) -> str | None:
        missing = self.available()
        if missing:
            return missing
        try:
            rc, out, err, _, _ = self._call(
                [*self._base(), "get-state"], min(self.step_timeout_s, 15.0),
                lambda rc, o, e: False, "reachable",
            )
        except ToolchainError as exc:
            return f"adb target unreachable: {exc}"
        if rc != 0 or out.strip() != "device":
            detail = (out + err).strip().splitlines()
            detail = detail[-1] if detail else f"adb get-state rc={rc}"
            return (
                f"adb target unreachable ({self.describe()}): {detail}; connect the board and check "
                "`adb devices`, or set OPLAT_ADB_SERIAL"
            )
        return None


_SSH_TRANSIENT = re.compile(
    r"lost connection|connection (?:closed|reset|refused|timed out)|broken pipe|kex_exchange_identification"
    r"|no route to host|network is unreachable|temporary failure in name resolution",
    re.I,
)


class Ssh(_Remote):
    """A Linux board over ``ssh`` (commands) and ``scp`` (files); key auth, never a prompt.

    ``steps`` holds the retries and step timeout (:func:`make_transport` takes them as
    the flat keyword options ``retries``, ``retry_delay_s``, ``step_timeout_s``)."""

    kind = "ssh"
    _hint = SSH_HINT

    def __init__(
        self,
        host: str,
        user: str | None = None,
        port: int = 22,
        key: str | None = None,
        *,
        remote_dir: str = "/tmp",
        options: Sequence[str] = (),
        connect_timeout_s: float = 10.0,
        steps: StepPolicy = StepPolicy(),
    ):
        super().__init__(remote_dir=remote_dir, steps=steps)
        if not host or host.startswith("-") or not _SAFE_HOST.fullmatch(host):
            raise OplatError(f"ssh host {host!r} is not valid; set it in the device file or OPLAT_SSH_HOST")
        if user and not _SAFE_USER.fullmatch(user):
            raise OplatError(f"ssh user {user!r} is not valid; set a plain user name (OPLAT_SSH_USER)")
        try:
            port = int(port)
        except (TypeError, ValueError):
            raise OplatError(f"ssh port {port!r} is not a number; set OPLAT_SSH_PORT to e.g. 22") from None
        if not 0 < port < 65536:
            raise OplatError(f"ssh port {port} is out of range; use 1-65535")
        for option in options:
            if not re.fullmatch(r"[A-Za-z]+=[^\s]*", option):
                raise OplatError(f"ssh option {option!r} must look like Name=value (passed as -o Name=value)")
        self.host = host
        self.user = user or None
        self.port = port
        self.key = os.path.expanduser(key) if key else None
        self.options = tuple(options)
        self.connect_timeout_s = float(connect_timeout_s)

    def describe(self) -> str:
        return f"ssh {self._target()}:{self.port}"

    def _target(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def _common(self) -> list[str]:
        argv = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, round(self.connect_timeout_s))}"]
        if self.key:
            argv += ["-i", self.key]
        for option in self.options:
            argv += ["-o", option]
        return argv

    def _shell_argv(self, command: str) -> list[str]:
        return [self._tool("ssh"), *self._common(), "-p", str(self.port), self._target(), command]

    def _scp_remote(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{self.user}@{host}:{path}" if self.user else f"{host}:{path}"

    def _push_argv(self, local: str, remote: str) -> list[str]:
        return [self._tool("scp"), "-q", *self._common(), "-P", str(self.port), local, self._scp_remote(remote)]

    def _pull_argv(self, remote: str, local: str) -> list[str]:
        return [self._tool("scp"), "-q", *self._common(), "-P", str(self.port), self._scp_remote(remote), local]

    def _copy_failed_transiently(self, rc: int, output: str) -> bool:
        return _SSH_TRANSIENT.search(output) is not None

    def available(self) -> str | None:
        missing = [name for name in ("ssh", "scp") if find_tool(name) is None]
        if missing:
            return f"{' and '.join(missing)} not on PATH (needed to reach the board); {SSH_HINT}"
        return None

    def reachable(self) -> str | None:
        missing = self.available()
        if missing:
            return missing
        try:
            result = self._run_sh("true")
        except ToolchainError as exc:
            lines = (exc.output_tail or "").strip().splitlines()
            detail = lines[-1] if lines else "no answer"
            return (
                f"ssh target unreachable ({self.describe()}): {detail}; check host/user/key "
                "(OPLAT_SSH_HOST, OPLAT_SSH_USER, OPLAT_SSH_KEY) and that key login works"
            )
        return None if result.rc == 0 else f"ssh target {self.describe()} answered rc={result.rc} to `true`"


def _check_remote_path(path: str, what: str) -> None:
    if not isinstance(path, str) or not _SAFE_REMOTE_PATH.fullmatch(path) or "/../" in f"{path}/":
        raise OplatError(
            f"{what} {path!r} is not a safe absolute path on the target; use letters, digits and ._/-@%+=,: only"
        )


def _ssh_from_options(*, retries: int = 2, retry_delay_s: float = 1.0, step_timeout_s: float = 120.0,
                      **options) -> Ssh:
    """An :class:`Ssh` from flat keyword options (the step options become its ``steps``)."""
    return Ssh(**options, steps=StepPolicy(retries, retry_delay_s, step_timeout_s))


def make_transport(kind: str, **options) -> Transport:
    """Build a transport of ``kind`` (``local``, ``adb``, ``ssh``) from keyword options."""
    factories: dict[str, Callable[..., Transport]] = {"local": Local, "adb": Adb, "ssh": _ssh_from_options}
    if kind not in factories:
        raise OplatError(f"unknown transport {kind!r}; use one of local, adb, ssh")
    try:
        return factories[kind](**options)
    except TypeError as exc:
        raise OplatError(f"bad options for the {kind} transport: {exc}") from None
