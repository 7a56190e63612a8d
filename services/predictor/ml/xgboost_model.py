"""The XGBoost member: the seed's configuration, fixed threads and seed, UBJSON bytes.

``multi:softprob`` over 3 classes, 100 trees of depth 6, learning rate 0.01, row and column
subsampling 0.8, L1 0.1, L2 1.0, ``tree_method="hist"`` on the CPU. ``nthread`` is explicit
(1 by default: on 2 shared cores the default threading trained in 0.6 s to 24 s, one thread
in a steady ~1 s) and so is ``seed``: the same data, config and seed give the same trees.
xgboost is imported inside the functions that need it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from services.predictor.ml.types import (
    N_CLASSES,
    Cancel,
    FloatArray,
    Report,
    TrainingCancelledError,
    never_cancelled,
    noop_report,
)


@dataclass(frozen=True)
class XGBoostConfig:
    """Hyperparameters of the XGBoost member (the seed's, by default)."""

    n_estimators: int = 100
    max_depth: int = 6
    learning_rate: float = 0.01
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    min_child_weight: float = 1.0
    gamma: float = 0.0
    reg_alpha: float = 0.1
    reg_lambda: float = 1.0
    nthread: int = 1

    def __post_init__(self) -> None:
        if self.n_estimators < 1 or self.max_depth < 1 or self.nthread < 1:
            raise ValueError("n_estimators, max_depth and nthread must be >= 1")
        if not 0.0 < self.learning_rate <= 1.0:
            raise ValueError("learning_rate must be in (0, 1]")
        if not (0.0 < self.subsample <= 1.0 and 0.0 < self.colsample_bytree <= 1.0):
            raise ValueError("subsample and colsample_bytree must be in (0, 1]")

    def params(self, seed: int) -> dict[str, Any]:
        """Return xgboost's native training parameters."""
        return {
            "objective": "multi:softprob",
            "num_class": N_CLASSES,
            "max_depth": self.max_depth,
            "eta": self.learning_rate,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "gamma": self.gamma,
            "alpha": self.reg_alpha,
            "lambda": self.reg_lambda,
            "tree_method": "hist",
            "device": "cpu",
            "nthread": self.nthread,
            "seed": int(seed),
            "eval_metric": "mlogloss",
        }

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-ready hyperparameters."""
        return asdict(self)


def _progress_callback(total: int, report: Report, cancel: Cancel, every: int) -> Any:
    """Build an xgboost callback that reports every `every` rounds and honours cancel."""
    import xgboost as xgb

    class Progress(xgb.callback.TrainingCallback):  # type: ignore[misc]
        done = 0  # rounds of this call (epoch counts on from a base model's trees)

        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            if cancel():
                raise TrainingCancelledError("xgboost training was cancelled")
            self.done += 1
            done = self.done
            if done % every == 0 or done == total:
                loss = evals_log.get("validation", {}).get("mlogloss")
                tail = f", validation mlogloss {loss[-1]:.4f}" if loss else ""
                report(done, total, f"xgboost: tree {done}/{total}{tail}")
            return False

    return Progress()


def _boost(
    config: XGBoostConfig,
    data: tuple[FloatArray, Any, FloatArray | None, Any],
    seed: int,
    rounds: int,
    base: Any,
    report: Report,
    cancel: Cancel,
) -> Any:
    """Run `rounds` boosting rounds (on top of `base` when given) and return the booster."""
    import xgboost as xgb

    x_train, y_train, x_val, y_val = data
    y = np.asarray(y_train, dtype=np.float64)
    if x_train.ndim != 2 or x_train.shape[0] != y.shape[0] or y.shape[0] == 0:
        raise ValueError(f"need matching non-empty rows, got {x_train.shape} and {y.shape}")
    if rounds < 1:
        raise ValueError(f"need at least one boosting round, got {rounds}")
    dtrain = xgb.DMatrix(x_train, label=y, nthread=config.nthread)
    evals = []
    if x_val is not None and y_val is not None and len(y_val):
        evals.append(
            (xgb.DMatrix(x_val, label=np.asarray(y_val), nthread=config.nthread), "validation")
        )
    return xgb.train(
        config.params(seed),
        dtrain,
        num_boost_round=rounds,
        evals=evals,
        verbose_eval=False,
        xgb_model=base,
        callbacks=[_progress_callback(rounds, report, cancel, every=max(1, rounds // 10))],
    )


class XGBoostMember:
    """A trained booster and its config; predicts class probabilities of feature rows."""

    name = "xgboost"

    def __init__(self, booster: Any, config: XGBoostConfig) -> None:
        self.booster = booster
        self.config = config

    @classmethod
    def train(
        cls,
        x_train: FloatArray,
        y_train: Any,
        *,
        x_val: FloatArray | None = None,
        y_val: Any = None,
        config: XGBoostConfig | None = None,
        seed: int = 42,
        report: Report = noop_report,
        cancel: Cancel = never_cancelled,
    ) -> XGBoostMember:
        """Train on (rows x features, classes) and return the member; reports per 10 trees."""
        config = config or XGBoostConfig()
        data = (x_train, y_train, x_val, y_val)
        booster = _boost(config, data, seed, config.n_estimators, None, report, cancel)
        return cls(booster, config)

    def fine_tune(
        self,
        x_train: FloatArray,
        y_train: Any,
        *,
        x_val: FloatArray | None = None,
        y_val: Any = None,
        trees: int = 20,
        seed: int = 42,
        report: Report = noop_report,
        cancel: Cancel = never_cancelled,
    ) -> XGBoostMember:
        """Return a new member with `trees` more trees fitted on new rows (self is unchanged)."""
        base = XGBoostMember.from_bytes(self.to_bytes(), self.config).booster
        data = (x_train, y_train, x_val, y_val)
        booster = _boost(self.config, data, seed, trees, base, report, cancel)
        return XGBoostMember(booster, self.config)

    def predict_proba(self, x: FloatArray) -> FloatArray:
        """Return (rows x 3) class probabilities of feature rows (float64)."""
        if x.shape[0] == 0:
            return np.empty((0, N_CLASSES))
        out = self.booster.inplace_predict(np.ascontiguousarray(x, dtype=np.float64))
        return np.asarray(out, dtype=np.float64).reshape(x.shape[0], N_CLASSES)

    def to_bytes(self) -> bytes:
        """Return the booster as UBJSON bytes (portable, no pickle)."""
        return bytes(self.booster.save_raw(raw_format="ubj"))

    @classmethod
    def from_bytes(cls, data: bytes, config: XGBoostConfig) -> XGBoostMember:
        """Load a booster saved by :meth:`to_bytes`."""
        import xgboost as xgb

        booster = xgb.Booster(params={"nthread": config.nthread})
        booster.load_model(bytearray(data))
        return cls(booster, config)
