"""The LSTM-with-attention member (Keras 3 on TensorFlow), imported lazily.

The architecture is the seed's: sequences of ``seq_len`` (60) bars x the features (50) go
through LSTM layers of 128, 128 and 64 units, each followed by dropout 0.2; 8-head
self-attention (key_dim 16) over the last LSTM's sequence, averaged over time; dense 32
(ReLU, dropout 0.3) and 16 (ReLU); softmax over the 3 classes. Adam at 1e-3 on the sparse
categorical cross-entropy in mini-batches (seeded shuffling), early stopping on the validation
loss with Keras' ``EarlyStopping`` rule (best weights restored). The loop is our own, not
``model.fit``: its one train step is traced once (``fit`` traced twice, and a trace of this
graph costs seconds on 2 cores), and validation reuses the inference function.
The third LSTM returns its sequence, not only its last state, so that the attention has
something to attend over; with 50 features the model has 308,515 parameters.

Reproducibility: :func:`tensorflow` turns on TensorFlow's op determinism once per process and
training calls ``keras.utils.set_random_seed(seed)`` first, so the same data, config and seed
give the same weights bit for bit. Inference runs one ``tf.function`` with a fixed input
signature (any batch size), never an eager per-row call. This module runs in job workers
(training, online updates): the serving process predicts with the same network in numba
(:mod:`~services.predictor.ml.lstm_inference`) and never imports TensorFlow. A Keras model
can also be prepared (:meth:`LSTMMember.prepare`): a second function, traced with the LSTM layers
unrolled (the same cell ops step by step instead of a ``while`` loop), run on TensorFlow's
single-threaded executor. For one window the cost is op dispatch, not arithmetic, and this
halves it; the probabilities are the same bit for bit (a test compares the two). Its trace
takes seconds, so it can run in a background thread while the looped function answers.
TensorFlow is imported by the first call that needs it, not by importing this module.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
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

log = logging.getLogger(__name__)

_PREDICT_CHUNK = 4096  # rows per compiled call, to bound memory on long histories
_EXECUTOR = "SINGLE_THREADED_EXECUTOR"  # runs a graph's ops in order: no scheduling overhead
_TRACE = threading.Lock()  # tracing flips the LSTM layers' `unroll` while it runs
_TF: Any = None
_PREPARER: ThreadPoolExecutor | None = None
_COPY_WARNING = r"__array__ implementation doesn't accept a copy keyword"
QUIET_TENSORFLOW = {"TF_CPP_MIN_LOG_LEVEL": "2"}  # C++ logs: errors only (no INFO/WARNING)
# Lines TensorFlow's native code writes at import whatever TF_CPP_MIN_LOG_LEVEL says (2.21:
# absl logs before absl::InitializeLog() are unfiltered; seen on AVX-512 machines).
IMPORT_NOISE = (
    "absl::InitializeLog()",
    "oneDNN custom operations",
    "cpu_feature_guard",
    "To enable the following instructions",
    "rebuild TensorFlow",
)


@contextmanager
def _native_stderr_without(noise: tuple[str, ...]) -> Iterator[None]:
    """Hold what native code writes to file descriptor 2 meanwhile; pass on all but noise.

    Nothing is lost: every other line (a real error, another thread's output) is written to
    stderr when the block ends, in order.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [
                line
                for line in held.read().splitlines(keepends=True)
                if not any(n.encode() in line for n in noise)
            ]
            if kept:
                os.write(2, b"".join(kept))


def tensorflow() -> Any:
    """Import TensorFlow once, quiet and with op determinism on, and return the module.

    TensorFlow's C++ logging is set to errors only before the import (unless the environment
    already says otherwise): its oneDNN, cpu_feature_guard and absl lines are info for
    TensorFlow's developers, noise between a user's results.
    """
    global _TF
    if _TF is None:
        for name, value in QUIET_TENSORFLOW.items():
            os.environ.setdefault(name, value)
        with _native_stderr_without(IMPORT_NOISE):
            import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
        _TF = tf
    return _TF


@dataclass(frozen=True)
class LSTMConfig:
    """Architecture and training settings of the LSTM member (the seed's, by default)."""

    seq_len: int = 60
    lstm_units: tuple[int, ...] = (128, 128, 64)
    dropout: float = 0.2
    attention_heads: int = 8
    key_dim: int = 16
    dense_units: tuple[int, ...] = (32, 16)
    dense_dropout: float = 0.3
    learning_rate: float = 1e-3
    epochs: int = 50
    batch_size: int = 64
    patience: int = 5

    def __post_init__(self) -> None:
        if self.seq_len < 1 or not self.lstm_units or min(self.lstm_units) < 1:
            raise ValueError("seq_len and every LSTM layer's units must be >= 1")
        if self.attention_heads < 1 or self.key_dim < 1:
            raise ValueError("attention_heads and key_dim must be >= 1")
        if self.dense_units and min(self.dense_units) < 1:
            raise ValueError("dense units must be >= 1")
        if not (0.0 <= self.dropout < 1.0 and 0.0 <= self.dense_dropout < 1.0):
            raise ValueError("dropout rates must be in [0, 1)")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 0:
            raise ValueError("epochs and batch_size must be >= 1, patience >= 0")
        if not self.learning_rate > 0.0:
            raise ValueError("learning_rate must be > 0")

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-ready settings."""
        out = asdict(self)
        out["lstm_units"] = list(self.lstm_units)
        out["dense_units"] = list(self.dense_units)
        return out

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> LSTMConfig:
        """Rebuild from :meth:`to_dict` output."""
        values = dict(state)
        values["lstm_units"] = tuple(values["lstm_units"])
        values["dense_units"] = tuple(values["dense_units"])
        return cls(**values)


def build_model(config: LSTMConfig, n_features: int) -> Any:
    """Build and compile the (untrained) Keras model for (seq_len, n_features) inputs."""
    tensorflow()
    import keras
    from keras import layers

    inputs = keras.Input(shape=(config.seq_len, n_features), name="features")
    x = inputs
    for i, units in enumerate(config.lstm_units, start=1):
        x = layers.LSTM(units, return_sequences=True, name=f"lstm_{i}")(x)
        x = layers.Dropout(config.dropout, name=f"lstm_{i}_dropout")(x)
    x = layers.MultiHeadAttention(
        num_heads=config.attention_heads, key_dim=config.key_dim, name="attention"
    )(x, x)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    for j, units in enumerate(config.dense_units, start=1):
        x = layers.Dense(units, activation="relu", name=f"dense_{j}")(x)
        if j == 1 and config.dense_dropout > 0.0:
            x = layers.Dropout(config.dense_dropout, name="dense_1_dropout")(x)
    outputs = layers.Dense(N_CLASSES, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="lstm_attention")
    _compile(model, config.learning_rate)
    return model


def _compile(model: Any, learning_rate: float) -> None:
    """Compile with Adam and the sparse categorical cross-entropy."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=False,
    )


def _cross_entropy(proba: np.ndarray, y: np.ndarray) -> float:
    """Return the mean sparse categorical cross-entropy (Keras' 1e-7 clip) in float64."""
    p = np.clip(np.asarray(proba, dtype=np.float64)[np.arange(y.size), y], 1e-7, 1.0)
    return float(-np.log(p).mean())


class _Compiled:
    """The model's compiled functions, each traced once for any batch size.

    ``predict`` is the inference function: the Keras model as it is, its LSTM layers looping
    over time. ``fast`` is the same model traced with those layers unrolled; once
    :meth:`prepare` has traced and warmed it (seconds: thousands of ops), :meth:`infer` runs
    it on TensorFlow's single-threaded executor instead of ``predict``. Both give the same
    probabilities bit for bit (a test compares them), so which one answered never shows.
    ``train_step`` runs one Adam step and returns the batch loss; the optimizer's variables
    are built first, so tracing creates no variable and happens once (Keras' ``fit`` traced
    its step twice, at ~5 s a trace on these cores).
    """

    def __init__(self, model: Any, seq_len: int, n_features: int) -> None:
        tf = tensorflow()
        import keras

        x_spec = tf.TensorSpec([None, seq_len, n_features], tf.float32)
        y_spec = tf.TensorSpec([None], tf.int64)
        loss_fn = keras.losses.SparseCategoricalCrossentropy()
        recurrent = [layer for layer in model.layers if isinstance(layer, keras.layers.RNN)]

        def forward(x: Any) -> Any:
            return model(x, training=False)

        def unrolled(x: Any) -> Any:
            # Runs only while tracing (under _TRACE): the graph gets each time step's ops;
            # the saved model, `predict` and the training step keep their loops.
            saved = [layer.unroll for layer in recurrent]
            for layer in recurrent:
                layer.unroll = True
            try:
                return model(x, training=False)
            finally:
                for layer, unroll in zip(recurrent, saved, strict=True):
                    layer.unroll = unroll

        def step(x: Any, y: Any) -> Any:
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            variables = model.trainable_variables
            grads = tape.gradient(loss, variables)
            model.optimizer.apply_gradients(zip(grads, variables, strict=True))
            return loss

        self.predict = tf.function(forward, input_signature=[x_spec])
        self.fast = tf.function(unrolled, input_signature=[x_spec])
        self._fast_ready = False
        self._fast_fn: Any = None
        self.warm_input = np.zeros((1, seq_len, n_features), dtype=np.float32)
        self._step = step
        self._signature = [x_spec, y_spec]
        self._train_step: Any = None
        self._model = model

    @property
    def fast_ready(self) -> bool:
        """Return True once :meth:`infer` runs the unrolled function."""
        return self._fast_ready

    def prepare(self) -> None:
        """Trace the unrolled function and warm it on the fast executor (seconds; idempotent)."""
        if self._fast_ready:
            return
        tf = tensorflow()
        with _TRACE:
            if self._fast_ready:
                return
            concrete = self.fast.get_concrete_function()
        with tf.experimental.function_executor_type(_EXECUTOR):
            concrete(tf.constant(self.warm_input))  # the first run optimises the graph
        self._fast_fn = concrete
        self._fast_ready = True

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Return the probabilities (float32) of a batch of windows."""
        if self._fast_ready:  # the concrete function: no argument binding per call
            with _TF.experimental.function_executor_type(_EXECUTOR):
                return np.asarray(self._fast_fn(_TF.constant(x)))
        if self.predict.experimental_get_tracing_count() == 0:
            with _TRACE:
                self.predict.get_concrete_function()
        return np.asarray(self.predict(x))

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """Run one optimiser step on a batch and return its loss."""
        if self._train_step is None:
            with _TRACE:
                self._model.optimizer.build(self._model.trainable_variables)
                step = tensorflow().function(self._step, input_signature=self._signature)
                step.get_concrete_function()
                self._train_step = step
        return float(self._train_step(x, y))


def _fit(
    compiled: _Compiled,
    model: Any,
    config: LSTMConfig,
    data: tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None],
    seed: int,
    report: Report,
    cancel: Cancel,
) -> int:
    """Train with seeded shuffling and early stopping on the validation loss; return epochs."""
    x, y, x_val, y_val = data
    order_rng = np.random.default_rng(seed)
    has_val = x_val is not None and y_val is not None and y_val.size > 0
    best_loss, best_weights, stale, stop = np.inf, None, 0, False
    epochs_run = 0
    for epoch in range(1, config.epochs + 1):
        order = order_rng.permutation(x.shape[0])
        total = 0.0
        for start in range(0, x.shape[0], config.batch_size):
            if cancel():
                raise TrainingCancelledError("lstm training was cancelled")
            idx = order[start : start + config.batch_size]
            total += compiled.train_step(x[idx], y[idx]) * idx.size
        epochs_run = epoch
        message = f"lstm: epoch {epoch}/{config.epochs}, loss {total / x.shape[0]:.4f}"
        if has_val:
            assert x_val is not None and y_val is not None
            val_loss = _cross_entropy(_predict(compiled, x_val), y_val)
            message += f", val_loss {val_loss:.4f}"
            if val_loss < best_loss:
                best_loss, best_weights, stale = val_loss, model.get_weights(), 0
            else:
                stale += 1  # Keras' EarlyStopping: stop after `patience` epochs without gain
                stop = stale >= config.patience
        report(epoch, config.epochs, message)
        if stop:
            break
    if best_weights is not None:
        model.set_weights(best_weights)
    return epochs_run


def _predict(compiled: _Compiled, x: np.ndarray) -> FloatArray:
    """Run the compiled inference over chunks of windows; return float64 probabilities."""
    if x.shape[0] == 0:
        return np.empty((0, N_CLASSES))
    chunks = range(0, x.shape[0], _PREDICT_CHUNK)
    parts = [compiled.infer(x[i : i + _PREDICT_CHUNK]) for i in chunks]
    return np.concatenate(parts).astype(np.float64)


def _log_failure(future: Future[None]) -> None:
    """Log a background preparation that failed (inference keeps the looped function)."""
    error = future.exception()
    if error is not None:
        log.warning("LSTM fast inference not prepared (%s: %s)", type(error).__name__, error)


class LSTMMember:
    """A trained Keras model with its compiled inference function."""

    name = "lstm"

    def __init__(
        self, model: Any, config: LSTMConfig, epochs_run: int = 0, compiled: Any = None
    ) -> None:
        self.model = model
        self.config = config
        self.epochs_run = epochs_run
        self.n_features = int(model.input_shape[-1])
        self._compiled = compiled or _Compiled(model, config.seq_len, self.n_features)

    def prepare(self, *, wait: bool = True) -> Future[None] | None:
        """Make inference use the unrolled function; in a background thread unless wait.

        Predictions are the same bit for bit before and after; only their cost changes.
        """
        if self._compiled.fast_ready:
            return None
        if wait:
            self._compiled.prepare()
            return None
        self._compiled.infer(self._compiled.warm_input)  # the looped function, traced here
        global _PREPARER
        if _PREPARER is None:
            _PREPARER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lstm-prepare")
        future = _PREPARER.submit(self._compiled.prepare)
        future.add_done_callback(_log_failure)
        return future

    @property
    def prepared(self) -> bool:
        """Return True once inference runs the unrolled function."""
        return bool(self._compiled.fast_ready)

    @classmethod
    def train(
        cls,
        x_train: np.ndarray,
        y_train: Any,
        *,
        x_val: np.ndarray | None = None,
        y_val: Any = None,
        config: LSTMConfig | None = None,
        seed: int = 42,
        report: Report = noop_report,
        cancel: Cancel = never_cancelled,
    ) -> LSTMMember:
        """Train on windows (samples x seq_len x features) and classes; report per epoch."""
        config = config or LSTMConfig()
        if x_train.ndim != 3 or x_train.shape[1] != config.seq_len:
            raise ValueError(f"x_train must be (samples, {config.seq_len}, features)")
        y = np.asarray(y_train, dtype=np.int64)
        if y.shape != (x_train.shape[0],) or y.size == 0:
            raise ValueError("y_train must hold one class per (non-empty) sample")
        tensorflow()
        import keras

        keras.utils.set_random_seed(int(seed))
        model = build_model(config, x_train.shape[2])
        compiled = _Compiled(model, config.seq_len, x_train.shape[2])
        data = (
            np.asarray(x_train, np.float32),
            y,
            None if x_val is None else np.asarray(x_val, np.float32),
            None if y_val is None else np.asarray(y_val, np.int64),
        )
        epochs = _fit(compiled, model, config, data, int(seed), report, cancel)
        return cls(model, config, epochs_run=epochs, compiled=compiled)

    def fine_tune(
        self,
        x_train: np.ndarray,
        y_train: Any,
        *,
        x_val: np.ndarray | None = None,
        y_val: Any = None,
        epochs: int = 5,
        seed: int = 42,
        report: Report = noop_report,
        cancel: Cancel = never_cancelled,
    ) -> LSTMMember:
        """Return a copy trained `epochs` more epochs on new windows (self is unchanged)."""
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        y = np.asarray(y_train, dtype=np.int64)
        if x_train.ndim != 3 or x_train.shape[1:] != (self.config.seq_len, self.n_features):
            raise ValueError(f"x_train must be (samples, {self.config.seq_len}, {self.n_features})")
        if y.shape != (x_train.shape[0],) or y.size == 0:
            raise ValueError("y_train must hold one class per (non-empty) sample")
        tensorflow()
        import keras

        keras.utils.set_random_seed(int(seed))
        model = keras.models.clone_model(self.model)
        model.set_weights(self.model.get_weights())
        _compile(model, self.config.learning_rate)
        compiled = _Compiled(model, self.config.seq_len, self.n_features)
        data = (
            np.asarray(x_train, np.float32),
            y,
            None if x_val is None else np.asarray(x_val, np.float32),
            None if y_val is None else np.asarray(y_val, np.int64),
        )
        config = replace(self.config, epochs=epochs)
        ran = _fit(compiled, model, config, data, int(seed), report, cancel)
        return LSTMMember(model, self.config, self.epochs_run + ran, compiled)

    @property
    def parameters(self) -> int:
        """Return the number of trainable and non-trainable parameters."""
        return int(self.model.count_params())

    def predict_proba(self, windows: np.ndarray) -> FloatArray:
        """Return (samples x 3) class probabilities of windows through the compiled function."""
        x = np.asarray(windows, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (self.config.seq_len, self.n_features):
            raise ValueError(
                f"windows must be (samples, {self.config.seq_len}, {self.n_features}), "
                f"got {x.shape}"
            )
        return _predict(self._compiled, x)

    def to_bytes(self) -> bytes:
        """Return the model in Keras' portable `.keras` format, as bytes."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.keras"
            with warnings.catch_warnings():
                # Keras' saver calls np.array() on TF variables; numpy 2 warns about `copy`.
                warnings.filterwarnings("ignore", _COPY_WARNING, DeprecationWarning)
                self.model.save(path)
            return path.read_bytes()

    @classmethod
    def from_bytes(cls, data: bytes, config: LSTMConfig, epochs_run: int = 0) -> LSTMMember:
        """Load a model saved by :meth:`to_bytes` (safe mode: no Python code is deserialised)."""
        tensorflow()
        import keras

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.keras"
            path.write_bytes(data)
            model = keras.models.load_model(path, compile=False, safe_mode=True)
        _compile(model, config.learning_rate)
        return cls(model, config, epochs_run=epochs_run)
