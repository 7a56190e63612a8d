"""The predictor's ML core: numpy in, numpy out, no I/O, no web framework.

- :mod:`.labels`: `down | neutral | up` over a horizon with a volatility-scaled neutral band.
- :mod:`.dataset`: usable rows, the purged train/validation/test split, the training-row
  scaler, 60-step sequence windows.
- :mod:`.lstm` and :mod:`.xgboost_model`: the two members (TensorFlow and xgboost are
  imported by the first call that needs them, never by importing this package).
- :mod:`.ensemble`: the adaptive ensemble (softmax over the members' recent Sharpe ratios).
- :mod:`.metrics`: accuracy, macro precision/recall/F1, ECE, Brier, Sharpe of the calls, the
  majority-class and previous-direction baselines.
- :mod:`.training`: :func:`train_ensemble` and :class:`EnsembleModel` (predict, portable bytes).
- :mod:`.online`: the update buffer and :func:`update_model` (fine-tune, validate on recent
  rows, keep the candidate only if it is not more than 5% worse).

Training takes `report(done, total, message)` and `cancel() -> bool` hooks: the job runner's
`shared.jobs.task_report` and `task_cancelled` fit as they are.
"""

from services.predictor.ml.ensemble import AdaptiveEnsemble, EnsembleOutput
from services.predictor.ml.lstm import LSTMConfig
from services.predictor.ml.training import EnsembleModel, SeriesData, TrainConfig, train_ensemble
from services.predictor.ml.types import CLASSES, TrainingCancelledError
from services.predictor.ml.xgboost_model import XGBoostConfig

__all__ = [
    "CLASSES",
    "AdaptiveEnsemble",
    "EnsembleModel",
    "EnsembleOutput",
    "LSTMConfig",
    "SeriesData",
    "TrainConfig",
    "TrainingCancelledError",
    "XGBoostConfig",
    "train_ensemble",
]
