"""Quant library shared by the services: numba indicator kernels and the indicator registry.

Imports no service. Kernels (numpy in, numpy out) live in :mod:`shared.quant.kernels`; the
registry and its wrapper, re-exported here, in :mod:`shared.quant.indicators`.
"""

from shared.quant.indicators import (
    INDICATORS,
    IndicatorParamError,
    IndicatorSpec,
    LatestRoute,
    Param,
    all_columns,
    column_name,
    compute,
    default_names,
    get_spec,
    lookback,
    validate_params,
    warmup_bars,
)

__all__ = [
    "INDICATORS",
    "IndicatorParamError",
    "IndicatorSpec",
    "LatestRoute",
    "Param",
    "all_columns",
    "column_name",
    "compute",
    "default_names",
    "get_spec",
    "lookback",
    "validate_params",
    "warmup_bars",
]
