"""The adaptive ensemble: a weighted average of the members' class probabilities.

Weights start equal. :meth:`AdaptiveEnsemble.update_weights` sets them to a softmax over
each member's recent Sharpe ratio of trading its own calls (the seed's ``AdaptiveEnsemble``),
divided by a temperature: at temperature 1 a member whose Sharpe is higher by 1 gets e times
the weight. Every combination returns the weights it used. The state is JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.predictor.ml.metrics import PERIODS_PER_YEAR, calls, sharpe_of_calls
from services.predictor.ml.types import CLASSES, N_CLASSES, FloatArray


@dataclass(frozen=True)
class EnsembleOutput:
    """Combined probabilities (rows x 3), each member's, and the weights used."""

    probabilities: FloatArray
    members: dict[str, FloatArray]
    weights: dict[str, float]

    @property
    def calls(self) -> np.ndarray:
        """Return the called class index of each row."""
        return calls(self.probabilities)

    @property
    def confidence(self) -> FloatArray:
        """Return the probability of the called class of each row."""
        return np.asarray(self.probabilities.max(axis=1), dtype=np.float64)

    def row(self, i: int = -1) -> dict[str, Any]:
        """Return one row as a JSON-ready answer (direction, probabilities, members, weights)."""
        p = self.probabilities[i]
        k = int(np.argmax(p))
        return {
            "direction": CLASSES[k],
            "probabilities": dict(zip(CLASSES, map(float, p), strict=True)),
            "confidence": float(p[k]),
            "members": {
                name: {
                    "probabilities": dict(zip(CLASSES, map(float, probs[i]), strict=True)),
                    "weight": self.weights[name],
                }
                for name, probs in self.members.items()
            },
        }


def softmax(scores: Sequence[float], temperature: float = 1.0) -> list[float]:
    """Return softmax(scores / temperature); NaN scores count as 0."""
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    s = np.asarray([0.0 if not math.isfinite(x) else x for x in scores], dtype=np.float64)
    z = s / temperature
    e = np.exp(z - z.max())
    return [float(v) for v in e / e.sum()]


@dataclass
class AdaptiveEnsemble:
    """Members' probabilities averaged with weights from their recent Sharpe ratios."""

    members: tuple[str, ...]
    weights: dict[str, float] = field(default_factory=dict)
    temperature: float = 1.0
    sharpes: dict[str, float] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.members or len(set(self.members)) != len(self.members):
            raise ValueError(f"members must be distinct and non-empty, got {self.members}")
        if not self.weights:
            self.weights = {m: 1.0 / len(self.members) for m in self.members}
        if set(self.weights) != set(self.members):
            raise ValueError("weights must name exactly the members")
        total = sum(self.weights.values())
        if not (math.isfinite(total) and total > 0) or min(self.weights.values()) < 0:
            raise ValueError("weights must be non-negative with a positive sum")

    def combine(self, probabilities: Mapping[str, Any]) -> EnsembleOutput:
        """Return the weighted average of each member's (rows x 3) probabilities."""
        missing = [m for m in self.members if m not in probabilities]
        if missing:
            raise ValueError(f"probabilities missing for members {missing}")
        arrays = {m: np.asarray(probabilities[m], dtype=np.float64) for m in self.members}
        shape = arrays[self.members[0]].shape
        for m, arr in arrays.items():
            if arr.ndim != 2 or arr.shape[1] != N_CLASSES or arr.shape != shape:
                raise ValueError(f"{m}: expected ({shape[0]}, {N_CLASSES}), got {arr.shape}")
        total = sum(self.weights.values())
        weights = {m: self.weights[m] / total for m in self.members}
        combined = np.zeros(shape, dtype=np.float64)
        for m in self.members:
            combined += weights[m] * arrays[m]
        return EnsembleOutput(probabilities=combined, members=arrays, weights=weights)

    def mark_degenerate(self, flagged: Mapping[str, str]) -> dict[str, float]:
        """Give members that call one class everywhere weight 0 (reason `degenerate`).

        flagged maps a member to the one class it calls. When every member is flagged the
        weights stay as they are (nothing better to weigh) and the reasons still say so.
        """
        self.reasons = {
            m: f"degenerate: calls {flagged[m]} on every validation bar"
            for m in self.members
            if m in flagged
        }
        live = [m for m in self.members if m not in flagged]
        if live and flagged:
            self.weights = {m: (1.0 / len(live) if m in live else 0.0) for m in self.members}
        return dict(self.weights)

    def degenerate(self) -> list[str]:
        """Return the members flagged degenerate."""
        return [m for m in self.members if self.reasons.get(m, "").startswith("degenerate")]

    def update_weights(self, sharpes: Mapping[str, float]) -> dict[str, float]:
        """Set the weights to a softmax over the members' Sharpe ratios; return them.

        A member flagged degenerate keeps weight 0 while another member is not.
        """
        missing = [m for m in self.members if m not in sharpes]
        if missing:
            raise ValueError(f"Sharpe ratios missing for members {missing}")
        values = [float(sharpes[m]) for m in self.members]
        self.sharpes = dict(zip(self.members, values, strict=True))
        out = dict(zip(self.members, softmax(values, self.temperature), strict=True))
        dead = set(self.degenerate())
        if dead and len(dead) < len(self.members):
            live = [m for m in self.members if m not in dead]
            live_values = [out[m] for m in live]
            total = sum(live_values)
            out = {m: (out[m] / total if m not in dead else 0.0) for m in self.members}
        self.weights = out
        return dict(self.weights)

    def update_from_outcomes(
        self,
        probabilities: Mapping[str, Any],
        returns: Any,
        horizon: int = 1,
        periods_per_year: int = PERIODS_PER_YEAR,
    ) -> dict[str, float]:
        """Reweight from each member's Sharpe of trading its own calls on realised returns."""
        sharpes = {
            m: sharpe_of_calls(calls(probabilities[m]), returns, horizon, periods_per_year)
            for m in self.members
        }
        return self.update_weights(sharpes)

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-ready state."""
        return {
            "members": list(self.members),
            "weights": dict(self.weights),
            "temperature": self.temperature,
            "sharpes": dict(self.sharpes),
            "reasons": dict(self.reasons),
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> AdaptiveEnsemble:
        """Rebuild from :meth:`to_dict` output."""
        return cls(
            members=tuple(state["members"]),
            weights={k: float(v) for k, v in state["weights"].items()},
            temperature=float(state.get("temperature", 1.0)),
            sharpes={k: float(v) for k, v in state.get("sharpes", {}).items()},
            reasons={k: str(v) for k, v in state.get("reasons", {}).items()},
        )
