"""Public contract of the predictor service: every field documented for a cold reader.

These models become the MCP tool descriptions, so units and meanings are spelled out.
Classes are `down | neutral | up`: the move of the close over `horizon` bars against a
neutral band scaled by the trailing volatility (`PREDICTOR_LABEL_BAND`).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from shared.health import Health as BaseHealth
from shared.rules import DATE_1900_2099, TextRule
from shared.verdicts import PairedVerdict

MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,49}$"
VERSION_PATTERN = r"^[0-9]{1,5}\.[0-9]{1,5}\.[0-9]{1,5}$"
# The market service's ticker rule (its validation.SYMBOL_RE, before upper-casing), at most
# 20 characters (the `predictions.symbol` column).
SYMBOL_PATTERN = r"^\^?[A-Za-z0-9]{1,10}(?:[.\-][A-Za-z0-9]{1,10}){0,2}(?:=[A-Za-z]{1,2})?$"
SYMBOL_RULE = TextRule(
    SYMBOL_PATTERN,
    "expected a ticker such as AAPL, BRK-B, ^GSPC, EURUSD=X or BTC-USD (1-10 letters or "
    "digits, an optional leading ^, up to two more parts after . or -, an optional = suffix of "
    "1-2 letters; at most 20 characters)",
)
Day = Annotated[date, DATE_1900_2099]


def json_integer(value: Any) -> Any:
    """Accept a JSON integer (`17` or `17.0`); refuse booleans, strings and fractions."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("int_type", "Input should be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise PydanticCustomError("int_from_float", "Input should be a whole number")
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(json_integer)]

ModelName = Annotated[
    str,
    Field(
        pattern=MODEL_PATTERN,
        description="Model name: letters, digits, `_`, `.`, `-`, at most 50 characters.",
    ),
]
Version = Annotated[
    str, Field(pattern=VERSION_PATTERN, description="Semantic version, e.g. `1.2.0`.")
]
SYMBOL_DOC = "Ticker, case-insensitive: e.g. `AAPL`, `BRK-B`, `^GSPC`, `BTC-USD`."
Symbol = Annotated[str, SYMBOL_RULE, Field(max_length=20, description=SYMBOL_DOC)]
Member = Literal["lstm", "xgboost"]
MEMBERS: tuple[Member, ...] = ("lstm", "xgboost")
Direction = Literal["down", "neutral", "up"]

VERDICT_DOC = (
    "Plain words: the three-way verdict (`beats`, `does_not_beat`, `insufficient_evidence`) "
    "of the ensemble against the naive baselines (majority class, yesterday's direction) out "
    "of sample, by the exact McNemar test on the bars where they disagree, with the sample, "
    "the counts and the p-values. Below the minimum of realised calls (default 100) there is "
    "no verdict: treat the calls as unproven."
)
BEATS_DOC = "True only when `baseline_test.verdict` is `beats` (derived from it)."
TEST_DOC = (
    "The paired test behind the verdict: `verdict`, the realised out-of-sample calls `n`, the "
    "minimum, and per baseline the counts (`model_only` = b, `baseline_only` = c) and the "
    "exact McNemar p-value."
)


class Request(BaseModel):
    """Base of the request bodies: unknown fields are an error (a typo never passes), and
    numbers and booleans must be JSON numbers and booleans (no `true` for 1)."""

    model_config = ConfigDict(extra="forbid")


class Answer(BaseModel):
    """Base of the answers: frozen, so a cached answer can be shared but never changed."""

    model_config = ConfigDict(frozen=True)


# ---- training ------------------------------------------------------------------------------


class LSTMOptions(Request):
    """How to train the LSTM member."""

    epochs: JsonInt = Field(
        default=50,
        ge=1,
        le=200,
        description="Most epochs; early stopping may end sooner. A training job stops after "
        "JOB_MAX_RUN_S (1 hour by default) and ends failed with code `timeout`.",
    )
    batch_size: JsonInt = Field(default=64, ge=32, le=1024, description="Samples per Adam step.")
    patience: JsonInt = Field(
        default=5, ge=0, le=50, description="Epochs without a better validation loss to stop."
    )
    size: Literal["seed", "small"] = Field(
        default="seed",
        description="`seed`: the design's network (60 steps x 50 features, LSTM 128/128/64, "
        "8-head attention, dense 32/16; 308,515 parameters). `small`: 20 steps, LSTM 16/16/8, "
        "2 heads, dense 16/8, for demos and smoke tests (seconds to train).",
    )


class TrainRequest(Request):
    """What to train: a new version of a named model on some symbols' daily bars."""

    model: ModelName = "default"
    symbols: list[Symbol] = Field(
        default_factory=lambda: ["AAPL"],
        min_length=1,
        max_length=5,
        description="Symbols whose bars train one model (split on common dates); a symbol "
        "given twice (in any case) counts once.",
    )
    start_date: Day | None = Field(
        default=None,
        description="First bar, YYYY-MM-DD. Default: 5 years before `end_date`. Features use "
        "earlier bars for warm-up only.",
    )
    end_date: Day | None = Field(
        default=None, description="Last bar, YYYY-MM-DD. Default: the latest available bar."
    )
    models: list[Member] = Field(
        default_factory=lambda: list(MEMBERS),
        min_length=1,
        max_length=2,
        json_schema_extra={"uniqueItems": True},
        description="Ensemble members to train, each at most once.",
    )
    horizon: JsonInt = Field(
        default=1, ge=1, le=20, description="Bars ahead the direction is predicted for."
    )
    seed: JsonInt = Field(
        default=42,
        ge=0,
        le=2**31 - 1,
        description="Random seed: the same data, options and seed give the same model.",
    )
    lstm: LSTMOptions = Field(default_factory=LSTMOptions)
    activate: StrictBool = Field(
        default=True, description="Make the new version the active one when training ends."
    )

    @field_validator("end_date")
    @classmethod
    def _after_start(cls, value: date | None, info: ValidationInfo) -> date | None:
        start = info.data.get("start_date")
        if value is not None and start is not None and value <= start:
            raise ValueError(f"must be after start_date ({start})")
        return value

    @field_validator("symbols")
    @classmethod
    def _distinct_symbols(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(s.upper() for s in value))

    @field_validator("models")
    @classmethod
    def _distinct_models(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("models must be distinct")
        return value


class Figures(BaseModel):
    """Classification, calibration and trading figures of direction calls on realised bars."""

    rows: int = Field(description="Calls evaluated.")
    accuracy: float = Field(description="Share of correct calls, 0..1.")
    precision: float = Field(description="Macro-averaged precision over the 3 classes.")
    recall: float = Field(description="Macro-averaged recall over the 3 classes.")
    f1: float = Field(description="Macro-averaged F1 over the 3 classes.")
    ece: float = Field(
        description="Expected calibration error (10 confidence bins); lower is better."
    )
    brier: float = Field(description="Multi-class Brier score, 0..2; lower is better.")
    log_loss: float | None = Field(
        default=None, description="Mean negative log-probability of the realised class."
    )
    sharpe: float = Field(
        description="Annualised Sharpe ratio of trading the calls (long on up, short on down, "
        "flat on neutral, for `horizon` bars), before costs."
    )
    sharpe_calls: int | None = Field(
        default=None, description="Non-neutral calls (trades) behind `sharpe`."
    )
    sharpe_p_value: float | None = Field(
        default=None,
        description="Two-sided one-sample t-test p-value of the mean return of the non-neutral "
        "calls being 0 (optimistic for horizon > 1: overlapping returns); null below 2 trades.",
    )


class Evaluation(BaseModel):
    """Figures of each member, the ensemble and the naive baselines on one set of rows."""

    rows: int = Field(description="Rows evaluated (0: the segment was empty).")
    members: dict[str, Figures] = Field(default_factory=dict, description="Per member.")
    ensemble: Figures | None = None
    baselines: dict[str, Figures] = Field(
        default_factory=dict,
        description="`majority`: always the most frequent training class; `previous`: the "
        "last realised direction (yesterday's, for horizon 1).",
    )
    climatology: Figures | None = Field(
        default=None,
        description="The class-frequency forecast (the training labels' class frequencies on "
        "every bar): the baseline of `brier` and `log_loss` for probabilities.",
    )
    baseline_tests: dict[str, PairedVerdict] = Field(
        default_factory=dict,
        description="Per member and `ensemble`: the exact McNemar test against each hard "
        "baseline and the three-way verdict.",
    )
    beats_baselines: dict[str, bool] = Field(
        default_factory=dict,
        description="Per member and `ensemble`: its `baseline_tests` verdict is `beats`.",
    )


class TrainResult(BaseModel):
    """A trained version: its number, what it was trained on, and how it did out of sample."""

    model: str
    version: str = Field(description="The new version (semantic: minor bump per training).")
    previous_version: str | None = Field(description="The active version before this one.")
    active: bool = Field(description="True when this version is now the active one.")
    symbols: list[str]
    start_date: date | None = Field(description="First bar trained on.")
    end_date: date | None = Field(description="Last bar trained on.")
    models: list[str]
    horizon: int
    seed: int
    rows: dict[str, int] = Field(description="Samples in `train`, `validation` and `test`.")
    epochs_run: int | None = Field(description="LSTM epochs before early stopping.")
    validation: Evaluation = Field(description="Figures on the validation segment.")
    test: Evaluation = Field(description="Out-of-sample figures on the final, untouched segment.")
    baseline_test: PairedVerdict = Field(description=TEST_DOC)
    beats_baselines: bool = Field(description=BEATS_DOC)
    verdict: str = Field(description=VERDICT_DOC)
    degenerate: dict[str, str] = Field(
        default_factory=dict,
        description="Members that call one class on every validation bar -> that class; "
        "their ensemble weight is 0 (see `weight_reasons`).",
    )
    weights: dict[str, float] = Field(default_factory=dict, description="Ensemble weights.")
    weight_reasons: dict[str, str] = Field(
        default_factory=dict, description="Member -> why its weight is what it is (if special)."
    )
    training_seconds: float = Field(description="Wall time of the training task.")


# ---- predictions ---------------------------------------------------------------------------


class PredictRequest(Request):
    """What to predict: the direction of one symbol over the model's horizon."""

    symbol: Symbol
    model: ModelName = "default"
    version: Version | None = Field(
        default=None, description="A kept version to ask (default: the active one)."
    )
    as_of: Day | None = Field(
        default=None,
        description="Predict from the last bar on or before this date (YYYY-MM-DD). Default: "
        "the latest available bar.",
    )


class Probabilities(Answer):
    """Class probabilities, summing to 1."""

    down: float
    neutral: float
    up: float


class MemberCall(Answer):
    """One member's probabilities and its weight in the ensemble."""

    probabilities: Probabilities
    weight: float = Field(description="Weight in the ensemble's average, 0..1.")


class Prediction(Answer):
    """The ensemble's call for one symbol over the model's horizon, with each member's."""

    symbol: str
    model: str
    version: str = Field(description="The model version that made the call.")
    as_of: datetime = Field(description="The bar the call was made at (its close), UTC.")
    horizon: int = Field(description="Bars ahead the call is about.")
    direction: Direction = Field(description="The most probable class.")
    probabilities: Probabilities
    confidence: float = Field(description="Probability of the called class.")
    members: dict[str, MemberCall] = Field(description="`lstm`, `xgboost`: what each said.")
    baseline_test: PairedVerdict = Field(description=TEST_DOC + " (the version's test segment)")
    beats_baselines: bool = Field(description=BEATS_DOC)
    verdict: str = Field(description=VERDICT_DOC)
    trained_on_symbol: bool = Field(
        default=True, description="False when the version was not trained on this symbol."
    )
    in_sample: bool = Field(
        default=False,
        description="True when `as_of` lies inside the version's training or validation "
        "range: the model has seen that bar's neighbourhood, the call is not a forecast.",
    )
    notes: list[str] = Field(
        default_factory=list, description="Caveats: an untrained symbol, an in-sample bar."
    )
    cached: bool = Field(description="True when served from the 30-second prediction cache.")


class PredictRangeRequest(Request):
    """Calls of one model version on every bar of a date range (signals for a backtest)."""

    symbol: Symbol
    model: ModelName = "default"
    version: Version | None = Field(
        default=None, description="A kept version to ask (default: the active one)."
    )
    start: Day = Field(description="First bar, YYYY-MM-DD.")
    end: Day | None = Field(default=None, description="Last bar. Default: the latest bar.")

    @field_validator("end")
    @classmethod
    def _not_before_start(cls, value: date | None, info: ValidationInfo) -> date | None:
        start = info.data.get("start")
        if value is not None and start is not None and value < start:
            raise ValueError(f"must be on or after start ({start})")
        return value


class PredictionSeries(BaseModel):
    """A version's call on every bar of a range, columnar: `timestamps[i]` goes with
    `direction[i]`, `confidence[i]` and `probabilities[class][i]`."""

    symbol: str
    model: str
    version: str
    horizon: int = Field(description="Bars ahead each call is about.")
    timestamps: list[datetime] = Field(description="The bars called at (their close), UTC.")
    direction: list[Direction]
    confidence: list[float] = Field(description="Probability of each called class.")
    probabilities: dict[str, list[float]] = Field(
        description="`down`, `neutral`, `up`: one array of class probabilities each."
    )
    weights: dict[str, float] = Field(description="The members' ensemble weights.")
    skipped: int = Field(
        description="Bars of the range without a complete feature window (too early in the "
        "symbol's history): not called."
    )
    outcome: list[Direction | None] = Field(
        description="The realised class of each bar (the version's labels: its horizon and "
        "neutral band), from bars within the range; null where not known yet (the last "
        "`horizon` bars)."
    )
    realised: int = Field(description="Bars whose outcome is known.")
    in_sample: list[bool] = Field(
        default_factory=list,
        description="Per bar: inside the version's training or validation range (in sample: "
        "left out of `hit_rate` and the verdict).",
    )
    baseline_calls: dict[str, list[Direction]] = Field(
        default_factory=dict,
        description="Per bar, what the naive baselines called: `majority` (the training "
        "labels' most frequent class) and `previous` (the last realised class; neutral when "
        "not known).",
    )
    out_of_sample_realised: int = Field(
        default=0, description="Realised bars outside the training range (judged)."
    )
    hit_rate: dict[str, float | None] = Field(
        description="Share of correct calls on the realised out-of-sample bars: `model`, and "
        "the naive baselines `majority` and `previous`; null without such bars."
    )
    in_sample_hit_rate: dict[str, float | None] = Field(
        default_factory=dict,
        description="The same on realised in-sample bars (they flatter the model).",
    )
    range_test: PairedVerdict = Field(
        description="The paired test of this range's realised out-of-sample calls against the "
        "baselines (three-way verdict, counts, p-values)."
    )
    range_verdict: str = Field(description="`range_test` in plain words.")
    baseline_test: PairedVerdict = Field(description=TEST_DOC + " (the version's test segment)")
    beats_baselines: bool = Field(description=BEATS_DOC + " (the version's test segment)")
    verdict: str = Field(description=VERDICT_DOC)


# ---- registry ------------------------------------------------------------------------------


class OnlineState(BaseModel):
    """What online learning did with a version."""

    updates: int = Field(default=0, description="Accepted online updates in this lineage.")
    watermark: datetime | None = Field(
        default=None, description="Outcomes of bars after this one count as new."
    )
    last_attempt: dict[str, Any] | None = Field(
        default=None, description="The last update tried from this version: when, verdict, why."
    )


class VersionInfo(BaseModel):
    """One kept version of a model and its metadata."""

    version: str
    active: bool
    created_at: datetime
    kind: Literal["trained", "online_update"]
    parent_version: str | None = Field(description="The version it was updated from.")
    models: list[str]
    symbols: list[str]
    start_date: date | None
    end_date: date | None
    horizon: int
    seed: int
    hyperparameters: dict[str, Any] = Field(description="The full training configuration.")
    rows: dict[str, int]
    validation: Evaluation
    test: Evaluation
    weights: dict[str, float] = Field(description="Ensemble weights of the members.")
    weight_reasons: dict[str, str] = Field(
        default_factory=dict, description="Member -> why its weight is special (degenerate)."
    )
    in_sample_first: datetime | None = Field(
        default=None, description="First bar of the training range (in sample from here)."
    )
    in_sample_last: datetime | None = Field(
        default=None,
        description="Last bar of the training and validation range (an online update: of the "
        "outcomes it learnt from); later bars are out of sample.",
    )
    baseline_test: PairedVerdict = Field(description=TEST_DOC)
    beats_baselines: bool = Field(description=BEATS_DOC)
    verdict: str = Field(description=VERDICT_DOC)
    online: OnlineState


class Adaptation(BaseModel):
    """How the model adapts to realised outcomes by itself."""

    automatic_update: bool = Field(
        description="Whether the online update starts by itself (a job) once `update_after` "
        "new outcomes are realised."
    )
    update_after: int = Field(description="New realised outcomes that trigger an update.")
    tolerance: float = Field(
        description="An update is kept only if not more than this much worse (relative) on "
        "the newest held-out outcomes; else it is discarded and the version stays."
    )
    check_every_s: float = Field(description="Seconds between looks at the outcomes (0: off).")
    weights_min_outcomes: int = Field(
        description="Realised out-of-sample outcomes below which the weights do not move."
    )
    weights_window: int = Field(description="The newest outcomes the weights are set from.")
    last_check: dict[str, Any] | None = Field(
        default=None, description="The last look at the outcomes: when, weights, update, job."
    )


class ModelInfo(BaseModel):
    """A model's active version and its kept versions, newest first."""

    model: str
    active_version: str
    adaptation: Adaptation
    keep_versions: int = Field(description="Versions whose weights are kept.")
    versions: list[VersionInfo]
    archived_versions: list[str] = Field(
        description="Older versions: metadata kept, weights deleted (no rollback to them)."
    )


class WeightChange(BaseModel):
    """One reweighting of the members from realised out-of-sample outcomes."""

    at: datetime = Field(description="When the weights changed.")
    outcomes: int = Field(description="Realised out-of-sample outcomes they were set from.")
    first_bar: datetime
    last_bar: datetime = Field(description="The newest outcome's bar.")
    sharpes: dict[str, float | None] = Field(
        description="Member -> annualised Sharpe ratio of trading its own calls on them."
    )
    trades: dict[str, int] = Field(description="Member -> its non-neutral calls among them.")
    before: dict[str, float] = Field(description="The weights before.")
    weights: dict[str, float] = Field(description="The weights after (softmax of `sharpes`).")


class Weights(BaseModel):
    """The active version's ensemble weights and where they came from."""

    model: str
    version: str
    weights: dict[str, float] = Field(description="Member -> weight, summing to 1.")
    sharpes: dict[str, float] = Field(
        description="Member -> recent Sharpe ratio of its own calls that set the weights "
        "(a softmax); empty while the weights are the equal ones of training."
    )
    temperature: float = Field(description="Softmax temperature of the Sharpe ratios.")
    source: str = Field(description="How the weights were set.")
    reasons: dict[str, str] = Field(
        default_factory=dict, description="Member -> why its weight is special (degenerate: 0)."
    )
    min_outcomes: int = Field(
        description="Realised out-of-sample outcomes below which the weights do not move."
    )
    window: int = Field(description="The newest realised outcomes the weights are set from.")
    history: list[WeightChange] = Field(
        default_factory=list,
        description="Every change of the weights of this version and of the versions it was "
        "updated from, oldest first.",
    )
    last_check: dict[str, Any] | None = Field(
        default=None, description="The last look at the outcomes (this process)."
    )


class RollbackRequest(Request):
    """Which kept version to make active again."""

    model: ModelName = "default"
    version: Version


class RollbackResult(BaseModel):
    """The model's active version after a rollback."""

    model: str
    version: str = Field(description="The version now active.")
    previous_version: str = Field(description="The version active before.")
    changed: bool = Field(description="False when the version already was the active one.")
    baseline_test: PairedVerdict = Field(description=TEST_DOC)
    beats_baselines: bool = Field(description=BEATS_DOC)
    verdict: str = Field(description=VERDICT_DOC)


# ---- performance and online learning -------------------------------------------------------


class Latency(BaseModel):
    """Server-side time of `/predict` calls (cache hits included)."""

    calls: int
    p50_ms: float | None
    p99_ms: float | None


class PerformanceResult(BaseModel):
    """Live figures of a model version on its realised predictions, beside the baselines."""

    model: str
    version: str
    symbol: str | None = Field(description="The symbol filter, if any.")
    horizon: int
    calls: int = Field(description="Logged `/predict` calls in the window (cache hits too).")
    predictions: int = Field(description="Distinct (symbol, bar) predictions among them.")
    realised: int = Field(description="Predictions whose outcome is known.")
    out_of_sample: int = Field(
        description="Realised predictions on bars after the version's training range: the "
        "only ones the figures and the verdict use."
    )
    pending: int = Field(description="Predictions whose horizon has not passed yet.")
    first_bar: datetime | None
    last_bar: datetime | None
    in_sample_first: datetime | None = Field(description="The version's training range, from.")
    in_sample_last: datetime | None = Field(description="The version's training range, to.")
    ensemble: Figures | None = Field(
        description="The ensemble's out-of-sample calls; null without such outcomes."
    )
    members: dict[str, Figures]
    baselines: dict[str, Figures]
    climatology: Figures | None = Field(
        default=None, description="The class-frequency forecast (Brier / log-loss baseline)."
    )
    baseline_test: PairedVerdict = Field(description=TEST_DOC)
    beats_baselines: bool | None = Field(
        description=BEATS_DOC + " Null without out-of-sample outcomes."
    )
    verdict: str
    in_sample: Evaluation | None = Field(
        default=None,
        description="Realised predictions on bars inside the training range, reported apart "
        "with `in_sample_warning`: they flatter the model and are never judged.",
    )
    in_sample_warning: str | None = None
    latency: Latency


class UpdateOnlineRequest(Request):
    """Fold realised outcomes of logged predictions into a model (an online update)."""

    model: ModelName = "default"
    force: StrictBool = Field(
        default=False, description="Update even if fewer new outcomes than needed arrived."
    )
    epochs: JsonInt = Field(default=5, ge=1, le=50, description="LSTM fine-tuning epochs.")
    trees: JsonInt = Field(default=20, ge=1, le=500, description="XGBoost trees added.")
    metric: Literal["accuracy", "f1", "brier"] = Field(
        default="accuracy", description="The figure the 5% acceptance rule compares."
    )


class UpdateSamples(BaseModel):
    """The realised outcomes behind an online update."""

    buffer: int = Field(description="Realised outcomes in the buffer (the newest, at most 1,000).")
    new: int = Field(description="Outcomes of bars after the version's watermark.")
    needed: int = Field(description="New outcomes an update waits for.")
    train: int = Field(default=0, description="Rows the candidate was fine-tuned on.")
    validation: int = Field(default=0, description="Recent held-out rows both were judged on.")


class UpdateOnlineResult(BaseModel):
    """What an online update did: nothing yet, a new version, or a discarded candidate."""

    model: str
    status: Literal["not_due", "accepted", "discarded"]
    reason: str = Field(description="Why, with the figures.")
    active_version: str = Field(description="The active version after this call.")
    new_version: str | None = Field(description="The version made by an accepted update.")
    samples: UpdateSamples
    active: Figures | None = Field(default=None, description="The active ensemble, validation.")
    candidate: Figures | None = Field(default=None, description="The updated one, validation.")
    weights: dict[str, float] = Field(
        default_factory=dict, description="The candidate's ensemble weights."
    )


class Health(BaseHealth):
    """Liveness, backing stores, and what this process holds in memory."""

    loaded_models: list[str] = Field(description="`model@version` held for predictions.")
    tensorflow_loaded: bool = Field(description="Whether this process imported TensorFlow.")
