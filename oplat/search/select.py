"""Which networks a finished study found: pure functions of its completed trials.

No study, storage or file is touched here: the input is the completed trials (anything
with ``number``, ``params`` and ``user_attrs``, e.g. Optuna's ``FrozenTrial``), the output
records of plain values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from oplat.arch import ArchSpec
from oplat.search.pricing import arch_from_values
from oplat.space import SearchSpace

__all__ = ["SCORE_KEYS", "Candidate", "FinishedTrial", "Selection", "candidates", "pareto_front", "select"]

#: The trial user attributes a psnr search records (short training), kept on candidates.
SCORE_KEYS = ("quality_proxy", "fp32_psnr", "int8_psnr", "int8_drop_db", "bicubic_psnr", "train_steps")


class FinishedTrial(Protocol):
    number: int
    params: dict[str, Any]
    user_attrs: dict[str, Any]


@dataclass(frozen=True)
class Candidate:
    """A completed trial's network and what the search recorded for it: ``quality`` is
    the objective (the capacity proxy, or a PSNR in dB; −inf for a network the psnr
    search did not train), ``scores`` the :data:`SCORE_KEYS` the trial recorded."""

    number: int
    arch: ArchSpec
    predicted_ms: float
    quality: float
    measured_share: float
    scores: dict[str, float] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Selection:
    """``done``: every completed trial (in the study's order); ``feasible``: the feasible
    networks best first (quality ↓, latency ↑, number ↑; one per network), the winner
    first; ``trials_feasible``: how many completed trials met the budget; ``front``: the
    latency / quality Pareto front of ``done``; ``pruned``: how many trials the pruner
    stopped (they are not in ``done``)."""

    done: list[Candidate]
    feasible: list[Candidate]
    trials_feasible: int
    front: list[Candidate]
    pruned: int = 0  # trials the pruner stopped (not candidates; counted by the caller)

    @property
    def winner(self) -> Candidate | None:
        return self.feasible[0] if self.feasible else None


def candidates(
    trials: Iterable[FinishedTrial], space: SearchSpace, budget_ms: float, quality_key: str = "quality_proxy"
) -> tuple[list[Candidate], list[Candidate]]:
    """(all completed trials, the feasible ones best first: quality ↓, latency ↑, number ↑;
    one per network). ``quality_key``: the user attribute ranked (``quality_proxy``, or
    ``int8_psnr`` / ``fp32_psnr`` of a psnr search: a trial without it has no quality)."""
    done = []
    for t in trials:
        ua = t.user_attrs
        if "predicted_ms" not in ua or "quality_proxy" not in ua:
            continue
        arch = arch_from_values(space, t.params)
        quality = float(ua[quality_key]) if quality_key in ua else -math.inf
        scores = {k: float(ua[k]) for k in SCORE_KEYS if isinstance(ua.get(k), (int, float))}
        done.append(Candidate(t.number, arch, float(ua["predicted_ms"]), quality, float(ua.get("measured_share", 0.0)), scores))
    feasible: dict[ArchSpec, Candidate] = {}
    for c in sorted(done, key=lambda c: (-c.quality, c.predicted_ms, c.number)):
        if c.predicted_ms <= budget_ms and c.quality > -math.inf and c.arch not in feasible:
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


def select(
    trials: Iterable[FinishedTrial], space: SearchSpace, budget_ms: float, quality_key: str = "quality_proxy"
) -> Selection:
    """The :class:`Selection` of a study's completed trials under ``budget_ms``, ranked by
    the ``quality_key`` user attribute."""
    done, feasible = candidates(trials, space, budget_ms, quality_key)
    return Selection(
        done=done,
        feasible=feasible,
        trials_feasible=sum(c.predicted_ms <= budget_ms for c in done),
        front=pareto_front(done),
    )
