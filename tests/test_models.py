"""Sequential / Model: fit, evaluate, predict, summary, masks, callbacks, NaN stop, bad input, tbptt."""
import math
import os

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import callbacks, layers, losses, optim
from fastrnn.models import Model, Sequential


def _linear_data(n=96, f=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, f)).astype(np.float32)
    w = np.array([[1.0], [-2.0], [0.5], [3.0]], np.float32)[:f]
    return x, x @ w + 0.5


def _dense_model(seed=0, lr=0.05):
    layers.set_seed(seed)
    m = Sequential([layers.Dense(1, input_shape=(4,))])
    m.compile(optimizer=optim.SGD(lr), loss="mse")
    return m


# ----------------------------------------------------------------------------- fit / evaluate / predict
def test_fit_reduces_loss_on_a_linear_problem():
    x, y = _linear_data()
    m = _dense_model()
    before = m.evaluate(x, y, verbose=0)
    hist = m.fit(x, y, epochs=15, batch_size=16, verbose=0, seed=0)
    assert set(hist.history) == {"loss"} and len(hist.history["loss"]) == 15 and hist.epoch == list(range(15))
    assert hist.history["loss"][-1] < 0.01 * hist.history["loss"][0]
    assert m.evaluate(x, y, verbose=0) < 1e-3 < before
    assert m.history is hist


def test_fit_learns_a_sequence_task_with_rnn():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, size=(128, 6, 1)).astype(np.float32)
    y = x.sum(axis=1) / 3.0
    layers.set_seed(1)
    m = Sequential([layers.SimpleRNN(8), layers.Dense(1)])
    m.compile(optimizer=optim.Adam(0.02), loss="mse", metrics=["mae"])
    h = m.fit(x, y, epochs=25, batch_size=32, verbose=0, seed=1)
    assert h.history["loss"][-1] < 0.1 * h.history["loss"][0]
    assert h.history["mae"][-1] < h.history["mae"][0]


def test_predict_is_batch_size_independent_and_matches_call():
    x, _ = _linear_data(n=10)
    m = _dense_model()
    full = m(x)
    np.testing.assert_allclose(m.predict(x, batch_size=3), full, rtol=1e-5, atol=1e-7)
    assert m.predict(x).shape == (10, 1)


def test_evaluate_returns_metrics_like_keras():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    layers.set_seed(2)
    m = Sequential([layers.Dense(1, activation="sigmoid")])
    m.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy", "mse"])
    res = m.evaluate(x, y, batch_size=7, verbose=0)
    p = m.predict(x)
    assert isinstance(res, list) and len(res) == 3
    assert res[0] == pytest.approx(losses.BinaryCrossentropy()(y, p)[0], rel=1e-5)
    assert res[1] == pytest.approx(np.mean((p > 0.5) == (y > 0.5)))
    assert res[2] == pytest.approx(np.mean((p - y) ** 2), rel=1e-5)
    d = m.evaluate(x, y, verbose=0, return_dict=True)
    assert set(d) == {"loss", "accuracy", "mse"}


def test_evaluate_progress_bar_shows_the_loss_and_metrics(capsys):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(20, 3)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    m = Sequential([layers.Dense(1, activation="sigmoid")])
    m.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    d = m.evaluate(x, y, batch_size=8, verbose=1, return_dict=True)
    err = capsys.readouterr().err  # tqdm writes to stderr
    assert f"loss={d['loss']:.4g}" in err and f"accuracy={d['accuracy']:.4g}" in err
    m.evaluate(x, y, verbose=0)
    assert "loss=" not in capsys.readouterr().err


def test_validation_split_takes_the_last_fraction_before_shuffling():
    x, y = _linear_data(n=100)
    y = y.copy()
    y[80:] += 100.0  # the held-out part is far away: val_loss is huge, training loss is not
    m = _dense_model(lr=0.01)
    seen = []

    class Record(callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(self.model.predict(np.zeros((1, 4), np.float32)).item())

    h = m.fit(x, y, epochs=2, batch_size=20, validation_split=0.2, verbose=0, callbacks=[Record()], seed=3)
    assert len(seen) == 2 * 4  # 80 training samples in batches of 20
    assert h.history["val_loss"][-1] == pytest.approx(m.evaluate(x[80:], y[80:], verbose=0), rel=1e-6)
    assert h.history["val_loss"][-1] > 1000 and h.history["loss"][-1] < 100


def test_validation_data_and_history_keys():
    x, y = _linear_data(n=64)
    m = _dense_model()
    m.compile(optimizer=optim.SGD(0.05), loss="mse", metrics=["mae"])
    h = m.fit(x, y, epochs=3, batch_size=16, validation_data=(x[:8], y[:8]), verbose=0)
    assert set(h.history) == {"loss", "mae", "val_loss", "val_mae"}
    assert all(len(v) == 3 for v in h.history.values())
    assert h.history["val_mae"][-1] == pytest.approx(m.evaluate(x[:8], y[:8], verbose=0)[1], rel=1e-6)


def test_fit_is_reproducible_with_a_seed():
    x, y = _linear_data(n=50)
    ws = []
    for _ in range(2):
        m = _dense_model(seed=4)
        m.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=11)
        ws.append(m.get_weights())
    for a, b in zip(*ws):
        np.testing.assert_array_equal(a, b)


def test_verbose_progress_bar_and_silence(capsys):
    x, y = _linear_data(n=32)
    m = _dense_model()
    m.fit(x, y, epochs=1, batch_size=8, verbose=0)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    m.fit(x, y, epochs=2, batch_size=8, verbose=1)
    err = capsys.readouterr().err
    assert "Epoch 1/2" in err and "Epoch 2/2" in err and "loss=" in err
    m.fit(x, y, epochs=1, batch_size=8, verbose=2)
    assert "Epoch 1/1 - loss:" in capsys.readouterr().out


# ----------------------------------------------------------------------------- masks
def _masked_seq_model(seed=5, dtype="float32"):
    layers.set_seed(seed)
    return Sequential([layers.Embedding(20, 6, mask_zero=True, dtype=dtype),
                       layers.LSTM(7, return_sequences=True, dtype=dtype),
                       layers.TimeDistributed(layers.Dense(3, dtype=dtype), dtype=dtype)])


def _masked_seq_data(B=6, T=9, seed=6):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 20, size=(B, T))
    lengths = rng.integers(2, T + 1, size=B)
    lengths[0] = T
    for b, n in enumerate(lengths):
        x[b, n:] = 0
    return x, rng.integers(0, 3, size=(B, T)), lengths


def test_mask_propagates_to_the_loss():
    x, y, _ = _masked_seq_data()
    m = _masked_seq_model()
    loss = losses.SparseCategoricalCrossentropy(from_logits=True)
    m.compile(optimizer="sgd", loss=loss)
    m(x)
    m.layers[2].layer.bias.assign([1.0, -1.0, 0.5])  # padded steps' logits (= bias) depend on the target
    out = m(x)
    assert m.output_mask is not None and np.array_equal(m.output_mask, x != 0)
    expected = loss(y, out, x != 0)[0]
    assert m.evaluate(x, y, verbose=0, batch_size=4) == pytest.approx(expected, rel=1e-5)
    y2 = y.copy()
    y2[x == 0] = (y2[x == 0] + 1) % 3  # targets at padded steps do not matter
    assert m.evaluate(x, y2, verbose=0) == pytest.approx(m.evaluate(x, y, verbose=0), rel=1e-12)
    assert loss(y2, out)[0] != pytest.approx(loss(y, out)[0], rel=1e-9)  # without the mask they would differ


# ----------------------------------------------------------------------------- summary / params
def test_summary_table_and_keras_parameter_counts(capsys):
    m = Sequential([layers.Embedding(10000, 100, mask_zero=True), layers.LSTM(128),
                    layers.Dense(1, activation="sigmoid")])
    with pytest.raises(ValueError, match="needs a built model"):
        m.count_params()
    with pytest.raises(ValueError, match="needs a built model"):
        m.summary()
    m.build((None,))
    text = m.summary()
    assert text in capsys.readouterr().out
    for piece in ["Layer (type)", "Output Shape", "Param #", "(None, None, 100)", "(None, 128)", "(None, 1)",
                  "1,000,000", "117,248", "129", "Total params: 1,117,377", "Trainable params: 1,117,377",
                  "Non-trainable params: 0"]:
        assert piece in text, piece
    assert m.count_params() == 1_117_377
    assert [type(lay).__name__ for lay in m.layers] == ["Embedding", "LSTM", "Dense"]


def test_summary_counts_frozen_layers_as_non_trainable():
    layers.set_seed(0)
    m = Sequential([layers.Dense(4, input_shape=(3,)), layers.Dense(2)])
    m.layers[0].trainable = False
    text = m.summary(print_fn=lambda s: None)
    assert "Total params: 26" in text and "Trainable params: 10" in text and "Non-trainable params: 16" in text


# ----------------------------------------------------------------------------- subclassed models
class TwoLayerNet(Model):
    def __init__(self, units=5):
        super().__init__()
        self.units = units
        self.rnn = layers.GRU(units, return_sequences=True)
        self.head = [layers.TimeDistributed(layers.Dense(1))]

    def get_config(self):
        return {"units": self.units}

    def forward(self, x, training=False, mask=None):
        h = self.rnn(x, training=training, mask=mask)
        self.output_mask = self.rnn.compute_mask(x, mask)
        return self.head[0](h, training=training)

    def backward(self, dy):
        return self.rnn.backward(self.head[0].backward(dy))


def test_subclassed_model_collects_layers_and_trains():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(32, 5, 2)).astype(np.float32)
    y = np.cumsum(x[..., :1], axis=1) * 0.5
    layers.set_seed(7)
    net = TwoLayerNet()
    assert net.layers == [net.rnn, net.head[0]]
    net.compile(optimizer=optim.Adam(0.03), loss="mse")
    h = net.fit(x, y, epochs=20, batch_size=8, verbose=0, seed=0)
    assert len(net.parameters()) == 6  # GRU w_ih, w_hh, b_ih, b_hh + Dense kernel, bias
    assert h.history["loss"][-1] < 0.3 * h.history["loss"][0]
    assert net.count_params() == 3 * (5 * 2 + 5 * 5 + 2 * 5) + 6
    assert "gru" in net.summary(print_fn=lambda s: None)


class EncoderDecoder(Model):
    """Keras's encoder-decoder pattern: two inputs, the encoder's states start the decoder."""

    def __init__(self, units=6, vocab=4):
        super().__init__()
        self.units, self.vocab = units, vocab
        self.enc = layers.LSTM(units, return_state=True)
        self.dec = layers.LSTM(units, return_sequences=True)
        self.head = layers.TimeDistributed(layers.Dense(vocab, activation="softmax"))

    def get_config(self):
        return {"units": self.units, "vocab": self.vocab}

    def forward(self, x, training=False, mask=None):
        x_enc, x_dec = x
        _, h, c = self.enc(x_enc, training=training)
        return self.head(self.dec(x_dec, training=training, initial_state=[h, c]), training=training)

    def backward(self, dy):
        dx_dec = self.dec.backward(self.head.backward(dy))
        dx_enc = self.enc.backward([None] + list(self.dec.initial_state_grads))
        return [dx_enc, dx_dec]


def _enc_dec_data(n=24, tx=5, ty=4, f=3, vocab=4, seed=8):
    rng = np.random.default_rng(seed)
    xe = rng.normal(size=(n, tx, f)).astype(np.float32)
    xd = rng.normal(size=(n, ty, f)).astype(np.float32)
    y = (xe[:, :ty, 0] > 0).astype(np.int64) + 2 * (xd[..., 0] > 0)
    return xe, xd, y


def test_model_with_two_inputs_fits_evaluates_predicts_and_saves(tmp_path):
    """fit / evaluate / predict / train_on_batch take a list of input arrays, as Keras's do."""
    xe, xd, y = _enc_dec_data()
    layers.set_seed(8)
    m = EncoderDecoder()
    m.compile(optimizer=optim.Adam(0.02), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    h = m.fit([xe, xd], y, epochs=15, batch_size=8, verbose=0, seed=0, validation_split=0.25)
    assert h.history["loss"][-1] < 0.7 * h.history["loss"][0] and "val_loss" in h.history
    p = m.predict([xe, xd], batch_size=5)
    assert p.shape == (24, 4, 4)
    np.testing.assert_allclose(p, m((xe, xd)), rtol=1e-6, atol=1e-7)  # a tuple works too
    loss, acc = m.evaluate([xe, xd], y, batch_size=7, verbose=0)
    want = losses.get("sparse_categorical_crossentropy")(y, p)[0]
    assert loss == pytest.approx(want, rel=1e-5)
    assert acc == pytest.approx(np.mean(p.argmax(-1) == y))
    assert m._build_input_shape == [(5, 3), (4, 3)]
    path = str(tmp_path / "encdec.fastrnn")
    m.save(path)
    m2 = fr.load_model(path, custom_objects={"EncoderDecoder": EncoderDecoder})
    np.testing.assert_array_equal(m2.predict([xe, xd]), p)
    assert isinstance(m.train_on_batch([xe[:8], xd[:8]], y[:8]), list)


def test_model_with_two_inputs_rejects_bad_input_lists():
    xe, xd, y = _enc_dec_data()
    m = EncoderDecoder()
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    m.predict([xe, xd])
    with pytest.raises(ValueError, match=r"x\[1\]"):
        m.fit([xe, xd[:10]], y, verbose=0)
    with pytest.raises(ValueError, match="takes 2 inputs, got a list of 3"):
        m.predict([xe, xd, xd])
    with pytest.raises(ValueError, match="takes 2 inputs; pass a list of 2 arrays"):
        m.predict(xe)
    with pytest.raises(ValueError, match=r"x\[0\]: expected rank 3"):
        m.predict([xe[..., 0], xd])
    with pytest.raises(ValueError, match="tbptt"):
        m.fit([xe, xd], y, tbptt=2, verbose=0)
    with pytest.raises(ValueError, match="tbptt"):
        m.train_on_batch([xe, xd], y, tbptt=2)


def test_model_with_two_inputs_recovers_from_a_failed_first_call_and_prebuilt_layers():
    xe, xd, y = _enc_dec_data()
    layers.set_seed(8)
    want = EncoderDecoder().predict([xe, xd])
    layers.set_seed(8)
    m = EncoderDecoder()
    with pytest.raises(ValueError):
        m.predict([xe, xd[:, 0]])  # the decoder's input lacks its time axis; the encoder got built
    np.testing.assert_array_equal(m.predict([xe, xd]), want)
    layers.set_seed(8)
    m2 = EncoderDecoder()
    m2.enc.build((None, 3))  # a first layer built before any call
    np.testing.assert_array_equal(m2.predict([xe, xd]), want)


def test_sequential_still_stacks_a_list_of_sample_arrays():
    m = Sequential([layers.Dense(2, input_shape=(3,))])
    samples = [np.ones(3, np.float32), np.zeros(3, np.float32)]
    np.testing.assert_array_equal(m.predict(samples), m.predict(np.stack(samples)))


def test_failed_add_leaves_the_model_unchanged():
    m = Sequential([layers.LSTM(4, input_shape=(5, 3))])
    with pytest.raises(ValueError, match=r"input shape must be \(time, features\).*return_sequences=True"):
        m.add(layers.LSTM(2))  # the LSTM's output [B, 4] is not a sequence
    assert [type(lay).__name__ for lay in m.layers] == ["LSTM"]
    assert m.predict(np.zeros((2, 5, 3), np.float32), verbose=0).shape == (2, 4)
    m.add(layers.Dense(1))
    assert m.predict(np.zeros((2, 5, 3), np.float32), verbose=0).shape == (2, 1)


class StatefulNet(Model):
    def __init__(self):
        super().__init__()
        self.rnn = layers.SimpleRNN(4, stateful=True)
        self.out = layers.Dense(1)

    def forward(self, x, training=False, mask=None):
        return self.out(self.rnn(x, training=training), training=training)

    def backward(self, dy):
        return self.rnn.backward(self.out.backward(dy))


def test_build_leaves_carried_states_alone():
    x = np.ones((8, 5, 3), np.float32)
    net = StatefulNet()
    net.build((5, 3))
    assert net.rnn.states is None
    net.compile(optimizer="sgd", loss="mse")
    net.fit(x, np.zeros((8, 1), np.float32), batch_size=8, verbose=0)  # batch 8 after a batch-1 build
    before = [s.copy() for s in net.rnn.states]
    assert before[0].shape == (8, 4)
    net.build((5, 3))  # rebuilding keeps the carried batch-8 state, unchanged
    for a, b in zip(before, net.rnn.states):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- callbacks
class FakeModel:
    def __init__(self):
        self.stop_training = False
        self.w = 0

    def get_weights(self):
        return [np.array(self.w)]

    def set_weights(self, ws):
        self.w = int(ws[0])


def _drive(cb, values, monitor="val_loss"):
    model = FakeModel()
    cb.set_model(model)
    cb.on_train_begin()
    ran = 0
    for epoch, v in enumerate(values):
        model.w = epoch
        cb.on_epoch_end(epoch, {monitor: v})
        ran += 1
        if model.stop_training:
            break
    cb.on_train_end()
    return ran, model


def test_early_stopping_patience_min_delta_and_restore():
    ran, model = _drive(callbacks.EarlyStopping(patience=2), [1.0, 0.5, 0.6, 0.7, 0.1])
    assert ran == 4 and model.w == 3  # best at epoch 1, two epochs without improvement
    ran, model = _drive(callbacks.EarlyStopping(patience=2, restore_best_weights=True), [1.0, 0.5, 0.6, 0.7])
    assert ran == 4 and model.w == 1
    ran, _ = _drive(callbacks.EarlyStopping(patience=1, min_delta=0.2), [1.0, 0.9, 0.85, 0.5])
    assert ran == 2  # 0.9 is not an improvement of more than 0.2
    ran, model = _drive(callbacks.EarlyStopping(monitor="val_accuracy", patience=0, restore_best_weights=True),
                        [0.5, 0.8, 0.7, 0.9], monitor="val_accuracy")
    assert ran == 3 and model.w == 1  # 'auto' maximises accuracies
    ran, model = _drive(callbacks.EarlyStopping(patience=5, restore_best_weights=True), [3.0, 1.0, 2.0])
    assert ran == 3 and model.w == 1  # ran out of epochs: best weights still restored


def test_early_stopping_in_fit_stops_and_restores_best_weights():
    x, y = _linear_data(n=64)
    m = _dense_model(lr=0.05)
    snaps = []

    class Snap(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snaps.append((logs["val_loss"], m.get_weights()))

    es = callbacks.EarlyStopping(patience=1, restore_best_weights=True)
    # validation targets are the negated training targets: the better it fits, the worse val_loss gets
    h = m.fit(x, y, epochs=20, batch_size=16, validation_data=(x, -y), callbacks=[Snap(), es], verbose=0)
    assert len(h.history["loss"]) < 20 and es.stopped_epoch == len(h.history["loss"]) - 1
    best = min(range(len(snaps)), key=lambda i: snaps[i][0])
    for a, b in zip(m.get_weights(), snaps[best][1]):
        np.testing.assert_array_equal(a, b)


def test_model_checkpoint_save_best_only(tmp_path):
    x, y = _linear_data(n=64)
    m = _dense_model(lr=0.05)
    path = str(tmp_path / "ckpt-{epoch:02d}.fastrnn")
    vals = [2.0, 1.0, 1.5, 0.5]

    class FakeVal(callbacks.Callback):  # put a scripted val_loss into the logs before the checkpoint
        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = vals[epoch]

    ck = callbacks.ModelCheckpoint(path, save_best_only=True)
    m.fit(x, y, epochs=4, batch_size=32, callbacks=[FakeVal(), ck], verbose=0)
    assert sorted(os.listdir(tmp_path)) == ["ckpt-01.fastrnn", "ckpt-02.fastrnn", "ckpt-04.fastrnn"]
    loaded = fr.load_model(str(tmp_path / "ckpt-04.fastrnn"))
    np.testing.assert_array_equal(loaded.predict(x), m.predict(x))
    ckw = callbacks.ModelCheckpoint(str(tmp_path / "w.fastrnn"), save_weights_only=True, monitor="loss")
    m.fit(x, y, epochs=1, batch_size=32, callbacks=[ckw], verbose=0)
    other = _dense_model(seed=9)
    other.load_weights(str(tmp_path / "w.fastrnn"))
    np.testing.assert_array_equal(other.predict(x), m.predict(x))


def test_learning_rate_scheduler():
    x, y = _linear_data(n=32)
    m = _dense_model(lr=0.1)
    h = m.fit(x, y, epochs=3, batch_size=32, verbose=0,
              callbacks=[callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5)])
    assert h.history["learning_rate"] == pytest.approx([0.05, 0.025, 0.0125])
    h = m.fit(x, y, epochs=2, batch_size=32, verbose=0,
              callbacks=[callbacks.LearningRateScheduler(lambda epoch: 0.001 * (epoch + 1))])
    assert h.history["learning_rate"] == pytest.approx([0.001, 0.002])


# ----------------------------------------------------------------------------- NaN stop
def test_nan_loss_stops_training_naming_epoch_and_batch():
    x, y = _linear_data(n=40)
    y = y.copy()
    y[25] = np.nan  # batch 3 of 4 (batch_size 10, no shuffling)
    m = _dense_model()
    before = m.get_weights()
    seen = []

    class Count(callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(m.get_weights())

    with pytest.raises(FloatingPointError, match=r"loss became nan at epoch 1, batch 3 of 4"):
        m.fit(x, y, epochs=2, batch_size=10, shuffle=False, verbose=0, callbacks=[Count()])
    assert len(seen) == 2
    for a, b in zip(m.get_weights(), seen[-1]):  # the bad batch's update was not applied
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(before[0], seen[-1][0])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow on the way to inf is the point
def test_diverging_loss_becomes_inf_and_stops():
    x, y = _linear_data(n=32)
    m = _dense_model(lr=1e3)
    with pytest.raises(FloatingPointError, match=r"loss became (inf|nan) at epoch \d+, batch \d+"):
        m.fit(x * 100, y, epochs=50, batch_size=8, verbose=0)


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_give_clear_errors():
    x, y = _linear_data(n=20)
    m = Sequential([layers.Dense(1, input_shape=(4,))])
    with pytest.raises(RuntimeError, match="must be compiled first"):
        m.fit(x, y)
    with pytest.raises(RuntimeError, match="must be compiled first"):
        m.evaluate(x, y)
    with pytest.raises(ValueError, match="unknown optimizer 'adamx'"):
        m.compile(optimizer="adamx", loss="mse")
    with pytest.raises(ValueError, match="unknown loss 'mean_error'"):
        m.compile(optimizer="adam", loss="mean_error")
    with pytest.raises(ValueError, match="unknown metric 'acc_top5'"):
        m.compile(optimizer="adam", loss="mse", metrics=["acc_top5"])
    m.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="x and y must have the same number of samples.*x has 20, y has 19"):
        m.fit(x, y[:19], verbose=0)
    with pytest.raises(ValueError, match=r"x: expected rank 2 input of shape \(batch,\) \+ \(4,\), got rank 3"):
        m.fit(x[:, None, :], y, verbose=0)
    with pytest.raises(ValueError, match=r"x: expected rank 2") as info:
        m.predict(x[:, None, :])
    assert "one sample" not in str(info.value)
    with pytest.raises(ValueError, match=r"got rank 1 with shape \(4,\) \(one sample\? x\[None\] adds the batch axis\)"):
        m.predict(x[0])
    with pytest.raises(ValueError, match=r"y_true: expected shape \(20, 1\)"):
        m.evaluate(x, y[:, :, None].repeat(2, axis=2), verbose=0, batch_size=20)
    with pytest.raises(ValueError, match=r"validation_split: expected a float in \[0, 1\)"):
        m.fit(x, y, validation_split=1.5, verbose=0)
    with pytest.raises(ValueError, match="leaves no training samples"):
        m.fit(x, y, validation_split=0.97, verbose=0)
    with pytest.raises(ValueError, match="batch_size: expected a positive int, got 0"):
        m.fit(x, y, batch_size=0, verbose=0)
    with pytest.raises(TypeError, match="epochs: expected an int"):
        m.fit(x, y, epochs=1.5, verbose=0)
    with pytest.raises(TypeError, match="x: expected a numeric array"):
        m.fit(np.array(["a"] * 20), y, verbose=0)
    with pytest.raises(ValueError, match="validation_data: expected a tuple"):
        m.fit(x, y, validation_data=x, verbose=0)
    with pytest.raises(TypeError, match="add: expected a fastrnn Layer"):
        Sequential([layers.Dense(2), "dense"])
    d = layers.Dense(2, name="same")
    with pytest.raises(ValueError, match="already has a layer named 'same'"):
        Sequential([d, layers.Dense(2, name="same")])
    with pytest.raises(TypeError, match=r"callbacks\[0\]: expected a fastrnn.callbacks.Callback"):
        m.fit(x, y, callbacks=[print], verbose=0)


# ----------------------------------------------------------------------------- truncated BPTT
def _clone(model):
    twin = Sequential.from_config(model.get_config())
    twin.set_weights(model.get_weights())
    return twin


def _one_pass_grads(model, x, y, loss, k):
    twin = _clone(model)
    for lay in twin.layers:
        for sub in [lay, getattr(lay, "layer", None)]:
            if sub is not None and hasattr(sub, "bptt_steps"):
                sub.bptt_steps = k
    twin.zero_grad()
    out = twin(x, training=True)
    value, g = loss(y, out, twin.output_mask)
    twin.backward(g)
    return value, [p.grad.copy() for p in twin.parameters()]


def _tbptt_grads(model, x, y, loss, k):
    """fit(tbptt=k) on one batch with learning rate 0: the weights stay and .grad keeps the batch's gradient."""
    model.compile(optimizer=optim.SGD(0.0), loss=loss)
    h = model.fit(x, y, epochs=1, batch_size=len(x), shuffle=False, tbptt=k, verbose=0)
    grads = [p.grad.copy() for p in model.parameters()]
    value = model.train_on_batch(x, y, tbptt=k)  # the same step through the Keras-style single-batch API
    assert value == pytest.approx(h.history["loss"][0], rel=1e-12)
    for p, g in zip(model.parameters(), grads):
        np.testing.assert_array_equal(p.grad, g)
    return value, grads


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-10), ("float32", 2e-4)])
@pytest.mark.parametrize("k", [1, 3, 4, 9])
def test_tbptt_equals_one_pass_with_bptt_steps_seq_to_seq(dtype, rtol, k):
    rng = np.random.default_rng(8)
    B, T, F = 4, 9, 3
    x = rng.normal(size=(B, T, F)).astype(dtype)
    y = rng.normal(size=(B, T, 2))
    layers.set_seed(8)
    model = Sequential([layers.LSTM(5, return_sequences=True, dtype=dtype),
                        layers.GRU(4, return_sequences=True, dtype=dtype),
                        layers.TimeDistributed(layers.Dense(2, dtype=dtype), dtype=dtype)])
    model.build((None, F))
    loss = losses.MeanSquaredError()
    v_ref, g_ref = _one_pass_grads(model, x, y, loss, k)
    v, g = _tbptt_grads(model, x, y, loss, k)
    assert v == pytest.approx(v_ref, rel=rtol)
    for a, b in zip(g, g_ref):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * 1e-2 * np.abs(b).max())
    if k < T:  # truncation changes the gradient: the comparison above is not vacuous
        _, g_full = _one_pass_grads(model, x, y, loss, None)
        assert not np.allclose(g_full[1], g_ref[1], rtol=1e-6)
    assert all(lay.carry_state is False and lay.states is None for lay in model.layers[:2])


def test_tbptt_with_masks_weights_chunks_by_valid_steps():
    x, y, _ = _masked_seq_data(B=5, T=10, seed=9)
    model = _masked_seq_model(seed=9, dtype="float64")
    model.build((None,))
    loss = losses.SparseCategoricalCrossentropy(from_logits=True)
    v_ref, g_ref = _one_pass_grads(model, x, y, loss, 4)
    v, g = _tbptt_grads(model, x, y, loss, 4)
    assert v == pytest.approx(v_ref, rel=1e-10)
    for a, b in zip(g, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-13)


def test_tbptt_many_to_one_uses_the_last_chunk():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(3, 10, 2))
    y = rng.normal(size=(3, 1))
    layers.set_seed(10)
    model = Sequential([layers.SimpleRNN(4, return_sequences=True, dtype="float64"),
                        layers.LSTM(3, dtype="float64"), layers.Dense(1, dtype="float64")])
    model.build((None, 2))
    loss = losses.MeanSquaredError()
    v_ref, g_ref = _one_pass_grads(model, x, y, loss, 4)
    v, g = _tbptt_grads(model, x, y, loss, 4)
    assert v == pytest.approx(v_ref, rel=1e-12)
    for a, b in zip(g, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


def test_fit_with_tbptt_trains_and_restores_layers():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(32, 12, 1)).astype(np.float32)
    y = np.concatenate([np.zeros((32, 1, 1), np.float32), x[:, :-1]], axis=1)  # echo the previous step
    layers.set_seed(11)
    m = Sequential([layers.LSTM(8, return_sequences=True), layers.TimeDistributed(layers.Dense(1))])
    m.compile(optimizer=optim.Adam(0.02), loss="mse")
    h = m.fit(x, y, epochs=15, batch_size=8, tbptt=4, verbose=0, validation_data=(x[:4], y[:4]), seed=0)
    assert h.history["loss"][-1] < 0.3 * h.history["loss"][0]
    assert m.layers[0].carry_state is False
    assert h.history["val_loss"][-1] == pytest.approx(m.evaluate(x[:4], y[:4], verbose=0), rel=1e-6)


def test_tbptt_refuses_backward_running_layers():
    x = np.zeros((2, 6, 3), np.float32)
    y = np.zeros((2, 6, 2), np.float32)
    for rnn in [layers.LSTM(2, return_sequences=True, go_backwards=True),
                layers.Bidirectional(layers.GRU(1, return_sequences=True))]:
        m = Sequential([rnn])
        m.compile(optimizer="sgd", loss="mse")
        with pytest.raises(ValueError, match="runs backwards in time"):
            m.fit(x, y, tbptt=2, verbose=0)
    m = Sequential([layers.Dense(2)])
    m.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="no recurrent layer"):
        m.fit(x, y, tbptt=2, verbose=0)
    with pytest.raises(ValueError, match="tbptt: expected a positive int, got 0"):
        m.fit(x, y, tbptt=0, verbose=0)
    assert math.isfinite(m.evaluate(x, y, verbose=0))


def test_evaluate_and_predict_check_verbose_as_fit_does():
    m = fr.Sequential([fr.layers.Dense(1, input_shape=(2,))])
    m.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((4, 2), np.float32), np.ones((4, 1), np.float32)
    for call in (lambda v: m.fit(x, y, verbose=v), lambda v: m.evaluate(x, y, verbose=v),
                 lambda v: m.predict(x, verbose=v)):
        with pytest.raises(ValueError, match="verbose: expected 0, 1, 2 or 'auto', got 3"):
            call(3)
        with pytest.raises(ValueError, match="verbose: expected"):
            call("loud")
        call(0)
        call("auto")
