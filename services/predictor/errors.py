"""The predictor's domain errors (rendered as RFC 9457 problem details by shared.api)."""

from __future__ import annotations

from shared.errors import AppError, NotFoundError


class ModelNotFoundError(NotFoundError):
    """No version of this model name was ever trained (or none is kept)."""

    code = "model_not_found"


class VersionNotFoundError(NotFoundError):
    """The model has no kept version with this number."""

    code = "version_not_found"


class InsufficientDataError(AppError):
    """The symbol's bars are too few to train or predict on (not a rule of the input)."""

    status = 409
    code = "insufficient_data"
    title = "Not enough data"


class FeatureMismatchError(AppError):
    """The market's features no longer match those the model was trained on."""

    status = 502
    code = "feature_mismatch"
    title = "Upstream contract changed"
