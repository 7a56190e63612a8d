"""The LSTM-attention member's forward pass in numpy: predictions without TensorFlow.

The serving process predicts with this, never with Keras: TensorFlow costs ~900 MB and
15-18 s to import and trace in a fresh process, for a network whose inference is a few
matrix products. Training and fine-tuning (worker processes) keep Keras
(:mod:`~services.predictor.ml.lstm`).

The portable form is the one training already writes: the ``.keras`` zip, whose
``model.weights.h5`` is read here with h5py (no Keras, no TensorFlow, no code executed). So
every stored version, old ones included, loads as it is: nothing to convert or re-export.
The network is rebuilt from the version's :class:`~services.predictor.ml.lstm.LSTMConfig` and
checked against the zip's ``config.json`` (layer names, kinds and units), so a file of another
architecture is refused instead of misread. ONNX Runtime would have been a second runtime
(and tf2onnx a TensorFlow-side exporter) for what is ~60 lines of numpy.

The arithmetic is Keras 3's, in float64 on the float32 weights: LSTM gates in Keras' order
(input, forget, cell, output; sigmoid and tanh), zero initial state; multi-head attention as
``keras.layers.MultiHeadAttention`` (query scaled by 1/sqrt(key_dim), softmax over keys, no
dropout at inference); the time average; dense ReLU layers; softmax. Float64 keeps the
difference to Keras' float32 probabilities to Keras' own rounding (below 1e-6, tested).
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np
from numba import njit

from services.predictor.ml.lstm import LSTMConfig
from services.predictor.ml.types import N_CLASSES, FloatArray

_CHUNK = 256  # windows per pass: bounds the (chunk x seq_len x 4 units) float64 gate inputs
_WEIGHTS = "model.weights.h5"
_UNWEIGHTED = ("InputLayer", "Dropout", "GlobalAveragePooling1D")  # layers with no weights

Weights = dict[str, list[np.ndarray]]


def read_keras_weights(data: bytes) -> tuple[Weights, dict[str, Any]]:
    """Return a ``.keras`` zip's weights by layer name, and its ``config.json``.

    Keras stores each layer's variables under ``layers/<python name>/vars/<i>``, with the
    layer's own name as that group's ``name`` attribute; the attention's four projections
    are sub-layers (``query``, ``key``, ``value``, ``attention_output``), stored as
    ``attention/<name>`` here.
    """
    import h5py

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        config = json.loads(archive.read("config.json"))
        blob = archive.read(_WEIGHTS)
    out: Weights = {}
    with h5py.File(io.BytesIO(blob), "r") as h5:
        for group in h5["layers"].values():
            name = str(group["vars"].attrs["name"])
            if "cell" in group:  # recurrent layers keep their variables on the cell
                out[name] = _variables(group["cell"]["vars"])
                continue
            for key, part in group.items():
                if key != "vars" and isinstance(part, h5py.Group) and "vars" in part:
                    sub = _variables(part["vars"])
                    if sub:
                        out[f"{name}/{part['vars'].attrs['name']}"] = sub
            own = _variables(group["vars"])
            if own:
                out[name] = own
    return out, config


def _variables(group: Any) -> list[np.ndarray]:
    return [np.asarray(group[str(i)][()]) for i in range(len(group))]


def _check_architecture(config: LSTMConfig, keras_config: dict[str, Any]) -> None:
    """Refuse a ``.keras`` file whose layers are not the ones config builds."""
    layers = {x["config"]["name"]: x for x in keras_config["config"]["layers"]}
    expected: list[tuple[str, str, int | None]] = [
        (f"lstm_{i}", "LSTM", units) for i, units in enumerate(config.lstm_units, start=1)
    ]
    expected.append(("attention", "MultiHeadAttention", None))
    expected += [
        (f"dense_{j}", "Dense", units) for j, units in enumerate(config.dense_units, start=1)
    ]
    expected.append(("probabilities", "Dense", N_CLASSES))
    weighted = {n for n, x in layers.items() if x["class_name"] not in _UNWEIGHTED}
    if weighted != {name for name, _, _ in expected}:
        raise ValueError(f"the saved LSTM's layers {sorted(weighted)} are not the config's")
    for name, kind, units in expected:
        layer = layers.get(name)
        if layer is None or layer["class_name"] != kind:
            raise ValueError(f"the saved LSTM has no {kind} layer {name!r}")
        cfg = layer["config"]
        if units is not None and int(cfg["units"]) != units:
            raise ValueError(f"layer {name!r} has {cfg['units']} units, the config {units}")
        if kind == "LSTM" and (
            cfg.get("activation") != "tanh"
            or cfg.get("recurrent_activation") != "sigmoid"
            or not cfg.get("use_bias", True)
            or cfg.get("go_backwards")
        ):
            raise ValueError(f"layer {name!r} is not a standard tanh/sigmoid LSTM")
        if kind == "MultiHeadAttention" and (
            int(cfg["num_heads"]) != config.attention_heads or int(cfg["key_dim"]) != config.key_dim
        ):
            raise ValueError("the saved attention's heads or key_dim differ from the config")


def _softmax(z: FloatArray, axis: int = -1) -> FloatArray:
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@njit(cache=True, nogil=True, error_model="numpy")
def _affine_nb(
    x: FloatArray, kernel: FloatArray, bias: FloatArray
) -> FloatArray:  # pragma: no cover
    """Return x @ kernel + bias for (m, k) x (k, n), on this thread (no BLAS thread pool)."""
    m, k = x.shape
    n = kernel.shape[1]
    out = np.empty((m, n))
    for i in range(m):
        for j in range(n):
            out[i, j] = bias[j]
        for p in range(k):
            xp = x[i, p]
            for j in range(n):  # contiguous rows of kernel: vectorised
                out[i, j] += xp * kernel[p, j]
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def _lstm_nb(projected: FloatArray, recurrent: FloatArray) -> FloatArray:  # pragma: no cover
    """Return every step's hidden state of Keras' LSTM (return_sequences=True).

    projected is (windows, steps, 4 x units): the inputs' part of the gates (x @ kernel +
    bias); recurrent is (units, 4 x units). Gates in Keras' order: input, forget, cell, output.
    """
    n, steps, four = projected.shape
    units = four // 4
    h = np.zeros(units)
    c = np.zeros(units)
    z = np.empty(four)
    out = np.empty((n, steps, units))
    for i in range(n):
        h[:] = 0.0
        c[:] = 0.0
        for t in range(steps):
            z[:] = projected[i, t]
            for p in range(units):
                hp = h[p]
                for j in range(four):
                    z[j] += hp * recurrent[p, j]
            for u in range(units):
                gi = 0.5 * (1.0 + np.tanh(0.5 * z[u]))  # sigmoid without exp overflow
                gf = 0.5 * (1.0 + np.tanh(0.5 * z[units + u]))
                gc = np.tanh(z[2 * units + u])
                go = 0.5 * (1.0 + np.tanh(0.5 * z[3 * units + u]))
                c[u] = gf * c[u] + gi * gc
                h[u] = go * np.tanh(c[u])
                out[i, t, u] = h[u]
    return out


def _affine(x: FloatArray, kernel: FloatArray, bias: FloatArray) -> FloatArray:
    """Return x @ kernel + bias over x's last axis (any leading shape)."""
    flat = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))
    out = _affine_nb(flat, np.ascontiguousarray(kernel), np.ascontiguousarray(bias))
    return out.reshape(*x.shape[:-1], kernel.shape[1])  # type: ignore[no-any-return]


def _lstm(x: FloatArray, kernel: FloatArray, recurrent: FloatArray, bias: FloatArray) -> FloatArray:
    """Return the hidden states of every time step (the input projection in one product)."""
    return _lstm_nb(_affine(x, kernel, bias), np.ascontiguousarray(recurrent))  # type: ignore[no-any-return]


@njit(cache=True, nogil=True, error_model="numpy")
def _attend_nb(
    query: FloatArray, key: FloatArray, value: FloatArray, scale: float
) -> FloatArray:  # pragma: no cover
    """Return softmax(scale * query . key) . value per window and head: (n, t, heads, k)."""
    n, steps, heads, depth = query.shape
    out = np.zeros((n, steps, heads, depth))
    scores = np.empty(steps)
    for i in range(n):
        for h in range(heads):
            for t in range(steps):
                top = -np.inf
                for s in range(steps):
                    acc = 0.0
                    for d in range(depth):
                        acc += query[i, t, h, d] * scale * key[i, s, h, d]
                    scores[s] = acc
                    top = max(top, acc)
                total = 0.0
                for s in range(steps):
                    scores[s] = np.exp(scores[s] - top)
                    total += scores[s]
                for s in range(steps):
                    weight = scores[s] / total
                    for d in range(depth):
                        out[i, t, h, d] += weight * value[i, s, h, d]
    return out


def _attention(x: FloatArray, w: Weights, key_dim: int) -> FloatArray:
    """Return Keras' MultiHeadAttention(x, x) without mask or dropout.

    The projections are Keras' einsums as one matrix product each over all time steps; the
    scores and the mixing run per window and head in a kernel.
    """
    n, steps, dim = x.shape

    def project(name: str) -> FloatArray:
        kernel, bias = w[f"attention/{name}"]
        heads, depth = bias.shape
        out = _affine(x, kernel.reshape(dim, heads * depth), bias.reshape(-1))
        return out.reshape(n, steps, heads, depth)

    scale = 1.0 / np.sqrt(float(key_dim))
    mixed = _attend_nb(project("query"), project("key"), project("value"), scale)
    kernel, bias = w["attention/attention_output"]
    return _affine(mixed.reshape(n, steps, -1), kernel.reshape(-1, kernel.shape[-1]), bias)


class LSTMInference:
    """A trained LSTM-attention member that predicts in numpy (loaded from ``.keras`` bytes)."""

    name = "lstm"
    prepared = True  # nothing to trace: kernels are compiled once per install, on disk

    def __init__(
        self, data: bytes, config: LSTMConfig, epochs_run: int = 0, *, weights: Weights
    ) -> None:
        self.config = config
        self.epochs_run = epochs_run
        self._bytes = data
        self._w = {k: [np.asarray(a, dtype=np.float64) for a in v] for k, v in weights.items()}
        self.n_features = int(self._w["lstm_1"][0].shape[0])

    @classmethod
    def from_bytes(cls, data: bytes, config: LSTMConfig, epochs_run: int = 0) -> LSTMInference:
        """Load the weights of a model saved by ``LSTMMember.to_bytes`` (h5py, no Keras)."""
        weights, keras_config = read_keras_weights(data)
        _check_architecture(config, keras_config)
        return cls(data, config, epochs_run, weights=weights)

    def prepare(self, *, wait: bool = True) -> None:
        """Load (or compile, once per install: ``cache=True``) the kernels with one window."""
        self.predict_proba(np.zeros((1, self.config.seq_len, self.n_features)))

    @property
    def parameters(self) -> int:
        """Return the number of weights (Keras' ``count_params``)."""
        return int(sum(a.size for arrays in self._w.values() for a in arrays))

    def to_bytes(self) -> bytes:
        """Return the ``.keras`` bytes this member was loaded from."""
        return self._bytes

    def predict_proba(self, windows: np.ndarray) -> FloatArray:
        """Return (samples x 3) class probabilities of windows (samples x seq_len x features)."""
        x = np.asarray(windows, dtype=np.float32)  # Keras' input dtype: the same rounding
        if x.ndim != 3 or x.shape[1:] != (self.config.seq_len, self.n_features):
            raise ValueError(
                f"windows must be (samples, {self.config.seq_len}, {self.n_features}), "
                f"got {x.shape}"
            )
        if x.shape[0] == 0:
            return np.empty((0, N_CLASSES))
        parts = [self._forward(x[i : i + _CHUNK]) for i in range(0, x.shape[0], _CHUNK)]
        return np.concatenate(parts)

    def _forward(self, x32: np.ndarray) -> FloatArray:
        w, config = self._w, self.config
        h = x32.astype(np.float64)
        for i in range(1, len(config.lstm_units) + 1):
            h = _lstm(h, *w[f"lstm_{i}"])
        h = _attention(h, w, config.key_dim).mean(axis=1)
        for j in range(1, len(config.dense_units) + 1):
            kernel, bias = w[f"dense_{j}"]
            h = np.maximum(_affine(h, kernel, bias), 0.0)
        kernel, bias = w["probabilities"]
        return _softmax(_affine(h, kernel, bias))


def warm_kernels() -> None:
    """Compile (once per install: ``cache=True``) or load the forward pass's kernels.

    A one-unit network on one window: the kernels' types are the same for every size.
    """
    config = LSTMConfig(
        seq_len=2, lstm_units=(1,), attention_heads=1, key_dim=1, dense_units=(1,), epochs=1
    )
    ones = np.ones
    weights: Weights = {
        "lstm_1": [ones((1, 4)), ones((1, 4)), ones(4)],
        "attention/query": [ones((1, 1, 1)), ones((1, 1))],
        "attention/key": [ones((1, 1, 1)), ones((1, 1))],
        "attention/value": [ones((1, 1, 1)), ones((1, 1))],
        "attention/attention_output": [ones((1, 1, 1)), ones(1)],
        "dense_1": [ones((1, 1)), ones(1)],
        "probabilities": [ones((1, N_CLASSES)), ones(N_CLASSES)],
    }
    LSTMInference(b"", config, weights=weights).prepare()
