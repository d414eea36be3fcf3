"""Which networks a finished study found: pure functions of its completed trials.

No study, storage or file is touched here: the input is the completed trials (anything
with ``number``, ``params`` and ``user_attrs``, e.g. Optuna's ``FrozenTrial``), the output
records of plain values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from oplat.arch import ArchSpec
from oplat.search.pricing import arch_from_values
from oplat.space import SearchSpace

__all__ = ["Candidate", "FinishedTrial", "Selection", "candidates", "pareto_front", "select"]


class FinishedTrial(Protocol):
    number: int
    params: dict[str, Any]
    user_attrs: dict[str, Any]


@dataclass(frozen=True)
class Candidate:
    """A completed trial's network and what the search recorded for it."""

    number: int
    arch: ArchSpec
    predicted_ms: float
    quality: float
    measured_share: float


@dataclass(frozen=True)
class Selection:
    """``done``: every completed trial (in the study's order); ``feasible``: the feasible
    networks best first (quality ↓, latency ↑, number ↑; one per network), the winner
    first; ``trials_feasible``: how many completed trials met the budget; ``front``: the
    latency / quality Pareto front of ``done``."""

    done: list[Candidate]
    feasible: list[Candidate]
    trials_feasible: int
    front: list[Candidate]

    @property
    def winner(self) -> Candidate | None:
        return self.feasible[0] if self.feasible else None


def candidates(trials: Iterable[FinishedTrial], space: SearchSpace, budget_ms: float) -> tuple[list[Candidate], list[Candidate]]:
    """(all completed trials, the feasible ones best first: quality ↓, latency ↑, number ↑;
    one per network)."""
    done = []
    for t in trials:
        ua = t.user_attrs
        if "predicted_ms" not in ua or "quality_proxy" not in ua:
            continue
        arch = arch_from_values(space, t.params)
        done.append(Candidate(t.number, arch, float(ua["predicted_ms"]), float(ua["quality_proxy"]), float(ua.get("measured_share", 0.0))))
    feasible: dict[ArchSpec, Candidate] = {}
    for c in sorted(done, key=lambda c: (-c.quality, c.predicted_ms, c.number)):
        if c.predicted_ms <= budget_ms and c.arch not in feasible:
            feasible[c.arch] = c
    return done, list(feasible.values())


def pareto_front(done: list[Candidate]) -> list[Candidate]:
    """Latency ↓ / quality ↑ non-dominated trials, one per network, fastest first."""
    unique: dict[ArchSpec, Candidate] = {}
    for c in sorted(done, key=lambda c: c.number):
        unique.setdefault(c.arch, c)
    front = []
    best_q = -math.inf
    for c in sorted(unique.values(), key=lambda c: (c.predicted_ms, -c.quality, c.number)):
        if c.quality > best_q:
            front.append(c)
            best_q = c.quality
    return front


def select(trials: Iterable[FinishedTrial], space: SearchSpace, budget_ms: float) -> Selection:
    """The :class:`Selection` of a study's completed trials under ``budget_ms``."""
    done, feasible = candidates(trials, space, budget_ms)
    return Selection(
        done=done,
        feasible=feasible,
        trials_feasible=sum(c.predicted_ms <= budget_ms for c in done),
        front=pareto_front(done),
    )
