"""Names shared by the ML modules: the classes, array aliases, progress and cancel hooks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

CLASSES: tuple[str, str, str] = ("down", "neutral", "up")
DOWN, NEUTRAL, UP = 0, 1, 2
N_CLASSES = len(CLASSES)

# report(done, total, message): the job runner's `task_report` fits as is.
Report = Callable[[float, float, str], Any]
# cancelled() -> True once the job was cancelled: `task_cancelled` fits as is.
Cancel = Callable[[], bool]


class TrainingCancelledError(RuntimeError):
    """Raised inside training when the cancel hook says the job was cancelled."""


def noop_report(done: float, total: float, message: str) -> None:
    """Ignore a progress report."""


def never_cancelled() -> bool:
    """Return False: nothing cancels."""
    return False


def check_cancel(cancel: Cancel) -> None:
    """Raise TrainingCancelledError when the cancel hook says so."""
    if cancel():
        raise TrainingCancelledError("training was cancelled")
