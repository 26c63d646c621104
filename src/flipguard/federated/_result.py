"""Result objects of a federated simulation: plain dataclasses the CLI prints, the report draws, tests assert on."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .._json import to_jsonable

__all__ = ["FederatedResult", "FederatedRun", "RoundMetrics"]


@dataclass
class RoundMetrics:
    """The global model after one server round, scored on the clean test split.

    ``source_recall`` is the share of source-class test rows predicted as the
    source class; ``attack_success_rate`` the share of them predicted as the
    target class (Tolpegin et al.).  Both are ``None`` when no source/target
    pair is known.  ``suspects`` are the client indices the defence named
    this round (``None`` for a defence that names nobody, such as FedAvg or
    Krum); ``malicious`` are the clients that flipped labels this round.
    Detection precision is ``None`` when nobody was named, recall ``None``
    when nobody attacked.
    """

    round: int
    accuracy: float
    source_recall: float | None
    attack_success_rate: float | None
    malicious: list[int]
    suspects: list[int] | None
    detection_precision: float | None
    detection_recall: float | None


@dataclass
class FederatedRun:
    """One defence (or the no-attacker baseline) over all rounds.

    ``malicious`` is the share of clients that attacked (attackers /
    clients, what was simulated); ``malicious_requested`` the ``--malicious``
    fraction asked for, which gave that many attackers (0.35 of 10 clients
    is 4 attackers, a share of 0.4).
    """

    defence: str
    malicious: float
    attacked: bool
    rounds: list[RoundMetrics] = field(default_factory=list)
    malicious_requested: float | None = None

    @property
    def final(self) -> RoundMetrics:
        return self.rounds[-1]

    def series(self, name: str) -> list[Any]:
        """One metric per round, in round order (``"accuracy"``, ``"source_recall"``, ...)."""
        return [getattr(r, name) for r in self.rounds]

    def to_dict(self) -> dict[str, Any]:
        f = self.final
        return to_jsonable({
            "defence": self.defence, "malicious": self.malicious,
            "malicious_requested": self.malicious_requested, "attacked": self.attacked,
            "accuracy": f.accuracy, "source_recall": f.source_recall,
            "attack_success_rate": f.attack_success_rate,
            "detection_precision": f.detection_precision, "detection_recall": f.detection_recall,
            "suspects": f.suspects,
            "per_round": {name: self.series(name) for name in
                          ("accuracy", "source_recall", "attack_success_rate", "detection_precision",
                           "detection_recall", "suspects", "malicious")},
        })


@dataclass
class FederatedResult:
    """Every run of one simulation: the baseline first (FedAvg, no attackers), then one per defence.

    Attributes
    ----------
    runs : list of FederatedRun
    settings : dict
        Dataset, clients, partition, attack, source/target, seed, model, rounds,
        and the indices of the malicious clients.
    """

    runs: list[FederatedRun]
    settings: dict[str, Any]

    @property
    def baseline(self) -> FederatedRun:
        return self.runs[0]

    def run(self, defence: str, malicious: float | None = None) -> FederatedRun:
        """The run of ``defence`` (at ``malicious`` when several were simulated: the share or the fraction asked)."""
        for r in self.runs[1:]:
            if r.defence == defence and (malicious is None or _same(r, malicious)):
                return r
        raise KeyError(defence if malicious is None else f"{defence} at {malicious}")

    def subset(self, malicious: float) -> "FederatedResult":
        """The baseline and the runs at one malicious fraction (for a figure per fraction)."""
        runs = [self.runs[0]] + [r for r in self.runs[1:] if _same(r, malicious)]
        return FederatedResult(runs=runs, settings=dict(self.settings))

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"settings": self.settings, "runs": [r.to_dict() for r in self.runs]})

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def rounds_table(self) -> list[dict[str, Any]]:
        """Every (run, round) as a flat row, for data frames."""
        return [to_jsonable({"defence": r.defence, "attacked": r.attacked, **asdict(m)})
                for r in self.runs for m in r.rounds]


def _same(run: FederatedRun, malicious: float) -> bool:
    """``malicious`` names ``run``: its share of attackers, or the fraction asked for that gave it."""
    asked = run.malicious_requested
    return abs(run.malicious - malicious) < 1e-9 or (asked is not None and abs(asked - malicious) < 1e-9)
