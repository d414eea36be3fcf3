"""The backend contract: what a backend module provides and the two kinds of session.

A **backend** is a module under :mod:`oplat.backends` (a device names it, see
:mod:`oplat.devices`); :class:`Backend` spells out the module-level names it defines.
Its ``open()`` returns one of two kinds of session, told apart by type alone:

- :class:`Session` (plain): ``run()`` runs the model once on fixed inputs; oplat times it
  on this host with the one policy (:mod:`oplat.timing`).
- :class:`SelfTimedSession`: the timing happens elsewhere (a board's CLI tool, a remote
  agent); ``time(policy)`` applies the same policy there and returns the samples.

The rule everywhere (:mod:`oplat.measure`, :mod:`oplat.agent`):
``isinstance(session, SelfTimedSession)`` times with ``session.time(policy)``; anything
else is timed through its ``run()``.

Nothing is timed in a backend: warm-up, rounds and statistics live in :mod:`oplat.timing`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from oplat.records import KernelProfile

if TYPE_CHECKING:
    from oplat.timing import Timing, TimingPolicy

__all__ = ["Backend", "SelfTimedSession", "Session", "Unsupported"]


class Unsupported(Exception):
    """The runtime cannot run this op at all (a row with status ``unsupported``)."""


class Session(ABC):
    """A plain session: one ``run()`` is one inference on the inputs given to ``open()``.

    A context manager: ``__enter__`` loads the model (and may run it once), ``__exit__``
    releases it. ``profile(runs)`` returns the runtime's per-node times over ``runs``
    profiled runs (in a separate session: profilers slow the timed runs), or None where
    the runtime has no per-node profiler.
    """

    @abstractmethod
    def run(self) -> None:
        """Run the model once; nothing is returned or copied."""

    @abstractmethod
    def profile(self, runs: int) -> KernelProfile | None:
        """Per-node times of ``runs`` profiled runs, or None."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class SelfTimedSession(ABC):
    """A session timed where the model runs (a board's tool, a remote agent).

    ``time(policy)`` applies ``policy`` (warm-up, rounds, agreement, extra rounds) at the
    level the target allows and returns the samples; ``profile(runs)`` returns the
    per-node times the target reported (None where it reports none). A context manager
    like :class:`Session`.
    """

    @abstractmethod
    def time(self, policy: TimingPolicy) -> Timing:
        """Time the model with ``policy``; samples in ms, as :func:`oplat.timing.time_one` gives."""

    @abstractmethod
    def profile(self, runs: int) -> KernelProfile | None:
        """Per-node times the target reported, or None."""

    def __enter__(self) -> SelfTimedSession:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@runtime_checkable
class Backend(Protocol):
    """The names every backend module defines (``isinstance(module, Backend)`` holds).

    - ``MODEL_FORMATS``: the model formats ``open()`` takes, ``"onnx"`` first (oplat builds
      ONNX); an agent serving the backend accepts exactly these (:mod:`oplat.wire`).
    - ``available(options)``: None when usable, else one line saying what is missing and
      how to fix it. Cheap: it may look for a module or a tool, it never loads a model.
    - ``runtime(options)``: ``(name, version)`` of the runtime, for the fingerprint.
    - ``fingerprint(options)``: None when the machine that times is this host (rows
      record :func:`oplat.fingerprint.environment`); else the environment fingerprint of
      the machine that times (a remote agent's board), which rows record instead.
    - ``open(model, feeds, options)``: a :class:`Session` or a :class:`SelfTimedSession`
      (not entered yet); ``Unsupported`` when the runtime cannot run the op.
    """

    MODEL_FORMATS: tuple[str, ...]

    def available(self, options: dict | None = None) -> str | None: ...

    def runtime(self, options: dict | None = None) -> tuple[str, str]: ...

    def fingerprint(self, options: dict | None = None) -> dict | None: ...

    def open(self, model, feeds, options: dict) -> Session | SelfTimedSession: ...
