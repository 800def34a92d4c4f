"""fit / evaluate / train_on_batch with sample_weight and class_weight, against Keras (the same
weights ported with from_keras, the same batches): weighted losses and the update they give."""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import callbacks, layers, losses


def _keras_pair(kind, rng):
    """(keras model, fastrnn model with its weights, x, y) for one of the lessons' model shapes."""
    import keras

    keras.utils.set_random_seed(0)
    if kind == "binary":  # sentiment: Embedding -> LSTM -> Dense(1, sigmoid)
        km = keras.Sequential([keras.Input((6,), dtype="int32"), keras.layers.Embedding(20, 4),
                               keras.layers.LSTM(5), keras.layers.Dense(1, activation="sigmoid")])
        x = rng.integers(1, 20, (24, 6)).astype(np.int32)
        y = rng.integers(0, 2, (24, 1)).astype(np.float32)
        loss = "binary_crossentropy"
    elif kind == "sparse":  # classification of sequences into 3 classes, logits
        km = keras.Sequential([keras.Input((5, 2)), keras.layers.GRU(6), keras.layers.Dense(3)])
        x = rng.standard_normal((24, 5, 2)).astype(np.float32)
        y = rng.integers(0, 3, (24,)).astype(np.int64)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:  # per-step regression: SimpleRNN(return_sequences) -> TimeDistributed Dense, mse
        km = keras.Sequential([keras.Input((7, 1)), keras.layers.SimpleRNN(4, return_sequences=True),
                               keras.layers.Dense(1)])
        x = rng.standard_normal((24, 7, 1)).astype(np.float32)
        y = rng.standard_normal((24, 7, 1)).astype(np.float32)
        loss = "mse"
    km.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5), loss=loss)
    fm = fr.interop.from_keras(km)
    floss = {"binary": "binary_crossentropy", "sparse": losses.SparseCategoricalCrossentropy(from_logits=True),
             "mse": "mse"}[kind]
    fm.compile(optimizer=fr.optim.SGD(learning_rate=0.5), loss=floss)
    return km, fm, x, y


@pytest.mark.parametrize("kind", ["binary", "sparse", "mse"])
def test_weighted_evaluate_and_step_match_keras(kind):
    rng = np.random.default_rng(3)
    km, fm, x, y = _keras_pair(kind, rng)
    w = rng.uniform(0.0, 3.0, x.shape[0]).astype(np.float32)
    if kind == "mse":  # per step: [B, T]
        w = rng.uniform(0.0, 3.0, (x.shape[0], x.shape[1])).astype(np.float32)
    ours = fm.evaluate(x, y, sample_weight=w, verbose=0, batch_size=64)
    theirs = km.evaluate(x, y, sample_weight=w, verbose=0, batch_size=64)
    assert ours == pytest.approx(theirs, rel=1e-5)
    assert ours != pytest.approx(fm.evaluate(x, y, verbose=0, batch_size=64), rel=1e-3)  # the weights matter
    fm.train_on_batch(x, y, sample_weight=w)
    km.train_on_batch(x, y, sample_weight=w)
    for a, b in zip(fm.get_weights(), fr.interop.from_keras(km).get_weights()):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)


def test_class_weight_is_keras_class_weight():
    rng = np.random.default_rng(4)
    km, fm, x, y = _keras_pair("binary", rng)
    cw = {0: 0.25, 1: 3.0}
    fm.fit(x, y, epochs=2, batch_size=8, shuffle=False, class_weight=cw, verbose=0)
    km.fit(x, y, epochs=2, batch_size=8, shuffle=False, class_weight=cw, verbose=0)
    for a, b in zip(fm.get_weights(), fr.interop.from_keras(km).get_weights()):
        np.testing.assert_allclose(a, b, rtol=5e-4, atol=5e-6)


def test_class_weight_equals_the_sample_weights_it_stands_for():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((30, 4, 2)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 30)]  # one-hot: the class is the argmax
    cw = {0: 2.0, 2: 0.5}  # class 1 missing: weight 1
    per_sample = np.array([cw.get(int(c), 1.0) for c in y.argmax(1)])
    runs = []
    for kw in (dict(class_weight=cw), dict(sample_weight=per_sample),
               dict(sample_weight=np.sqrt(per_sample), class_weight={k: np.sqrt(v) for k, v in cw.items()})):
        fr.layers.set_seed(1)
        m = fr.Sequential([layers.LSTM(3), layers.Dense(3, activation="softmax")])
        m.compile(optimizer="adam", loss="categorical_crossentropy")
        h = m.fit(x, y, epochs=2, batch_size=10, seed=0, verbose=0, **kw)
        runs.append((h.history["loss"], m.get_weights()))
    for loss, weights in runs[1:]:
        np.testing.assert_allclose(loss, runs[0][0], rtol=1e-6)
        for a, b in zip(weights, runs[0][1]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_validation_weights_follow_the_split_and_validation_data():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((40, 3, 1)).astype(np.float32)
    y = rng.standard_normal((40, 1)).astype(np.float32)
    w = rng.uniform(0.1, 2.0, 40)
    fr.layers.set_seed(2)
    m = fr.Sequential([layers.SimpleRNN(2), layers.Dense(1)])
    m.compile(optimizer="sgd", loss="mse")
    seen = {}

    class Grab(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen["val"] = logs["val_loss"]
            seen["weights"] = self.model.get_weights()

    m.fit(x, y, epochs=1, batch_size=8, validation_split=0.25, sample_weight=w, verbose=0, callbacks=[Grab()])
    expect = m.evaluate(x[30:], y[30:], sample_weight=w[30:], verbose=0)
    assert seen["val"] == pytest.approx(expect, rel=1e-6)
    assert expect != pytest.approx(m.evaluate(x[30:], y[30:], verbose=0), rel=1e-3)
    m.fit(x[:30], y[:30], epochs=1, validation_data=(x[30:], y[30:], w[30:]), verbose=0, callbacks=[Grab()])
    assert seen["val"] == pytest.approx(m.evaluate(x[30:], y[30:], sample_weight=w[30:], verbose=0), rel=1e-6)


def test_weight_errors_name_the_argument():
    m = fr.Sequential([layers.Dense(2, activation="softmax")])
    m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = np.ones((6, 3), np.float32)
    y = np.array([0, 1, 0, 1, 1, 0])
    with pytest.raises(ValueError, match=r"sample_weight: expected one weight per sample, shape \(6,\)"):
        m.fit(x, y, sample_weight=np.ones(5), verbose=0)
    with pytest.raises(ValueError, match="sample_weight: weights must be finite"):
        m.evaluate(x, y, sample_weight=np.array([1, 1, np.nan, 1, 1, 1.0]), verbose=0)
    with pytest.raises(TypeError, match="class_weight: expected a dict"):
        m.fit(x, y, class_weight=[1.0, 2.0], verbose=0)
    with pytest.raises(ValueError, match="class_weight: keys must be class indices"):
        m.fit(x, y, class_weight={"a": 1.0}, verbose=0)
    with pytest.raises(ValueError, match="sample_weight: expected shape"):
        m.train_on_batch(x, y, sample_weight=np.ones((6, 4)))
    seq = fr.Sequential([layers.SimpleRNN(2, return_sequences=True)])
    seq.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="class_weight: supported for targets of shape"):
        seq.fit(np.ones((4, 3, 1), np.float32), np.ones((4, 3, 2), np.float32), class_weight={0: 1.0}, verbose=0)
    wrapped = fr.Sequential([layers.Dense(1)])
    wrapped.compile(optimizer="sgd", loss=lambda yt, yp: (float(np.mean((yp - yt) ** 2)), 2 * (yp - yt) / yp.size))
    with pytest.raises(ValueError, match="cannot be weighted per sample"):
        wrapped.fit(x, np.ones((6, 1), np.float32), sample_weight=np.ones(6), verbose=0)
