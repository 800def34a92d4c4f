"""The functional API: fr.Input, layers called on symbolic tensors, fr.Model(inputs, outputs).

Compared with Keras 3 (TensorFlow backend, which must be installed) on published model shapes:
predictions and the weights after one SGD step; gradients checked against finite differences in
float64 on graphs with a shared layer and a tensor used twice.
"""
from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

import fastrnn as fr
from _problems import numgrad
from fastrnn import interop
from fastrnn import layers as L

K = keras.layers
ATOL = 2e-5


def _randomize(klayer, seed):
    rng = np.random.default_rng(seed)
    klayer.set_weights([rng.uniform(-0.5, 0.5, size=w.shape).astype(np.float32) for w in klayer.get_weights()])


def _twins(pairs, seed):
    """Random weights for the Keras layers, copied into their fastrnn twins (through interop's
    converters); returns ``pairs``."""
    for i, (ours, klayer) in enumerate(pairs):
        _randomize(klayer, seed + i)
        ours.set_weights(interop.from_keras(klayer).get_weights())
    return pairs


def _assert_same_weights(pairs, atol):
    for ours, klayer in pairs:
        for a, b in zip(ours.get_weights(), interop.from_keras(klayer).get_weights()):
            np.testing.assert_allclose(a, b, atol=atol, rtol=0)


def _sgd_step_both(model, km, x, y, loss, lr=0.5):
    km.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss=loss)
    model.compile(optimizer=fr.optim.SGD(learning_rate=lr), loss=loss)
    k_loss = float(km.train_on_batch(x, y))
    f_loss = float(model.train_on_batch(x, y))
    return k_loss, f_loss


# ------------------------------------------------------------------------------------------------ Keras parity
def _seq2seq(n_in=5, n_out=4, units=7):
    """Keras's character-level seq2seq training model, in Keras and in fastrnn."""
    ei, di = keras.Input((None, n_in)), keras.Input((None, n_out))
    k_enc, k_dec = K.LSTM(units, return_state=True), K.LSTM(units, return_sequences=True)
    k_dense = K.Dense(n_out, activation="softmax")
    _, h, c = k_enc(ei)
    km = keras.Model([ei, di], k_dense(k_dec(di, initial_state=[h, c])))

    enc_in, dec_in = fr.Input((None, n_in)), fr.Input((None, n_out))
    enc, dec, dense = L.LSTM(units, return_state=True), L.LSTM(units, return_sequences=True), \
        L.Dense(n_out, activation="softmax")
    _, h, c = enc(enc_in)
    model = fr.Model([enc_in, dec_in], dense(dec(dec_in, initial_state=[h, c])))
    pairs = _twins([(enc, k_enc), (dec, k_dec), (dense, k_dense)], 10)
    return model, km, pairs


def test_seq2seq_matches_keras_predictions_and_one_sgd_step():
    rng = np.random.default_rng(0)
    model, km, pairs = _seq2seq()
    xe = rng.standard_normal((6, 8, 5)).astype(np.float32)
    xd = rng.standard_normal((6, 5, 4)).astype(np.float32)
    y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (6, 5))]
    got, want = model.predict([xe, xd]), km.predict([xe, xd], verbose=0)
    assert got.shape == want.shape == (6, 5, 4)
    np.testing.assert_allclose(got, want, atol=ATOL)
    k_loss, f_loss = _sgd_step_both(model, km, [xe, xd], y, "categorical_crossentropy")
    assert f_loss == pytest.approx(k_loss, abs=1e-5)
    _assert_same_weights(pairs, 1e-5)  # the encoder gets its gradient through the decoder's initial state
    np.testing.assert_allclose(model.predict([xe, xd]), km.predict([xe, xd], verbose=0), atol=ATOL)


def _two_branch(V=20, E=6, U=5, F=3, D=4):
    """Two inputs: token ids -> Embedding(mask_zero) -> LSTM, and features -> Dense; Concatenate ->
    Dense(1, sigmoid)."""
    kt, kf = keras.Input((None,), dtype="int32"), keras.Input((F,))
    k_emb, k_lstm = K.Embedding(V, E, mask_zero=True), K.LSTM(U)
    k_feat, k_out = K.Dense(D, activation="tanh"), K.Dense(1, activation="sigmoid")
    km = keras.Model([kt, kf], k_out(K.Concatenate()([k_lstm(k_emb(kt)), k_feat(kf)])))

    tok, feat = fr.Input((None,), dtype="int32"), fr.Input((F,))
    emb, lstm = L.Embedding(V, E, mask_zero=True), L.LSTM(U)
    dfeat, dout = L.Dense(D, activation="tanh"), L.Dense(1, activation="sigmoid")
    model = fr.Model([tok, feat], dout(L.Concatenate()([lstm(emb(tok)), dfeat(feat)])))
    pairs = _twins([(emb, k_emb), (lstm, k_lstm), (dfeat, k_feat), (dout, k_out)], 20)
    return model, km, pairs


def _padded_ids(rng, B, T, V):
    ids = rng.integers(1, V, (B, T))
    for b, n in enumerate(rng.integers(1, T + 1, B)):
        ids[b, n:] = 0  # padding after each sequence's end
    return ids.astype(np.int32)


def test_two_branch_classifier_with_masked_embedding_matches_keras():
    rng = np.random.default_rng(1)
    model, km, pairs = _two_branch()
    ids, feats = _padded_ids(rng, 8, 7, 20), rng.standard_normal((8, 3)).astype(np.float32)
    assert (ids == 0).any()
    y = rng.integers(0, 2, (8, 1)).astype(np.float32)
    np.testing.assert_allclose(model.predict([ids, feats]), km.predict([ids, feats], verbose=0), atol=ATOL)
    # the mask matters: without it the LSTM would read the padding
    unmasked = fr.Model.from_config(json.loads(json.dumps(model.get_config()).replace(
        '"mask_zero": true', '"mask_zero": false')))
    unmasked.set_weights(model.get_weights())
    assert np.abs(unmasked.predict([ids, feats]) - model.predict([ids, feats])).max() > 1e-4
    k_loss, f_loss = _sgd_step_both(model, km, [ids, feats], y, "binary_crossentropy")
    assert f_loss == pytest.approx(k_loss, abs=1e-5)
    _assert_same_weights(pairs, 1e-5)


def _shared(T=6, F=4, U=5):
    """A shared LSTM reading two sequences (a siamese encoder); the two codes are joined and one of
    them also feeds a second head (a tensor used twice)."""
    ka, kb = keras.Input((T, F)), keras.Input((T, F))
    k_lstm, k_head, k_aux = K.LSTM(U), K.Dense(1), K.Dense(1, activation="tanh")
    k_a, k_b = k_lstm(ka), k_lstm(kb)
    km = keras.Model([ka, kb], K.Concatenate()([k_head(K.Concatenate()([k_a, k_b])), k_aux(k_a)]))

    a, b = fr.Input((T, F)), fr.Input((T, F))
    lstm, head, aux = L.LSTM(U), L.Dense(1), L.Dense(1, activation="tanh")
    ca, cb = lstm(a), lstm(b)
    model = fr.Model([a, b], L.Concatenate()([head(L.Concatenate()([ca, cb])), aux(ca)]))
    pairs = _twins([(lstm, k_lstm), (head, k_head), (aux, k_aux)], 30)
    return model, km, pairs


def test_shared_layer_model_matches_keras_and_counts_the_layer_once():
    rng = np.random.default_rng(2)
    model, km, pairs = _shared()
    xa, xb = (rng.standard_normal((5, 6, 4)).astype(np.float32) for _ in range(2))
    y = rng.standard_normal((5, 2)).astype(np.float32)
    assert model.count_params() == km.count_params()
    assert len(model.parameters()) == len(km.trainable_weights)
    np.testing.assert_allclose(model.predict([xa, xb]), km.predict([xa, xb], verbose=0), atol=ATOL)
    k_loss, f_loss = _sgd_step_both(model, km, [xa, xb], y, "mse")
    assert f_loss == pytest.approx(k_loss, abs=1e-5)
    _assert_same_weights(pairs, 1e-5)  # the shared LSTM's update is the sum of both calls' gradients


# ------------------------------------------------------------------------------------------------ gradients
def _loss_and_grads(model, xs, r):
    """sum(r * model(xs)) and, from backward, its gradients w.r.t. the parameters and the inputs."""
    model.zero_grad()
    y = model(xs, training=True)
    dxs = model.backward(r)
    return float(np.sum(r * y)), [p.grad.copy() for p in model.parameters()], dxs


def test_gradients_of_a_graph_with_a_shared_layer_and_a_tensor_used_twice_match_finite_differences():
    rng = np.random.default_rng(3)
    d64 = {"dtype": "float64"}
    a, b = fr.Input((4, 3), dtype="float64"), fr.Input((4, 3), dtype="float64")
    rnn = L.GRU(3, return_sequences=True, **d64)  # shared: called on a and on b
    ya = rnn(a)
    yb = rnn(b)
    mix = L.Dense(3, activation="tanh", **d64)
    h = mix(ya)                                     # ya feeds mix and the Concatenate below
    h2 = mix(h)                                     # mix shared as well, called on its own output
    out = L.LSTM(2, **d64)(L.Concatenate(**d64)([h2, ya, yb]))
    model = fr.Model([a, b], out)
    xs = [rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 4, 3))]
    r = rng.standard_normal((2, 2))
    _, grads, dxs = _loss_and_grads(model, xs, r)
    for p, g in zip(model.parameters(), grads):
        want = numgrad(lambda: float(np.sum(r * model(xs))), p.value)
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-8, err_msg=p.name)
    for x, dx in zip(xs, dxs):
        np.testing.assert_allclose(dx, numgrad(lambda: float(np.sum(r * model(xs))), x), rtol=1e-5, atol=1e-8)


def test_gradients_through_initial_states_attention_and_return_state_match_finite_differences():
    rng = np.random.default_rng(4)
    d64 = {"dtype": "float64"}
    ei, di = fr.Input((5, 3), dtype="float64"), fr.Input((4, 2), dtype="float64")
    e_seq, h, c = L.LSTM(3, return_sequences=True, return_state=True, **d64)(ei)
    d_seq = L.LSTM(3, return_sequences=True, **d64)(di, initial_state=[h, c])
    ctx, _ = L.LuongAttention("general", **d64)([d_seq, e_seq])
    out = L.TimeDistributed(L.Dense(2, **d64), **d64)(L.Concatenate(**d64)([ctx, d_seq]))
    model = fr.Model([ei, di], [out, h])            # two outputs; h also feeds the decoder
    xs = [rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 4, 2))]
    r = [rng.standard_normal((2, 4, 2)), rng.standard_normal((2, 3))]

    def f():
        y = model(xs)
        return float(np.sum(r[0] * y[0]) + np.sum(r[1] * y[1]))

    model.zero_grad()
    model(xs, training=True)
    dxs = model.backward(r)
    for p in model.parameters():
        np.testing.assert_allclose(p.grad, numgrad(f, p.value), rtol=1e-5, atol=1e-8, err_msg=p.name)
    for x, dx in zip(xs, dxs):
        np.testing.assert_allclose(dx, numgrad(f, x), rtol=1e-5, atol=1e-8)


# ------------------------------------------------------------------------------------------------ the model API
def test_symbolic_tensors_have_shapes_dtypes_and_their_layer():
    tok = fr.Input((None,), dtype="int32", name="tokens")
    assert tok.shape == (None, None) and tok.dtype == np.int32 and tok.layer.name == "tokens"
    assert fr.layers.Input is fr.Input
    e = L.Embedding(10, 4, mask_zero=True)(tok)
    seq, h, c = L.LSTM(3, return_sequences=True, return_state=True)(e)
    assert (e.shape, seq.shape, h.shape, c.shape) == ((None, None, 4), (None, None, 3), (None, 3), (None, 3))
    assert e.dtype == np.float32 and seq.layer is h.layer
    ctx, w = L.BahdanauAttention(5)([h, seq])
    assert (ctx.shape, w.shape) == ((None, 3), (None, None))
    assert L.Concatenate()([ctx, h]).shape == (None, 6)
    assert L.Dense(2)(fr.Input((7, 5))).shape == (None, 7, 2)


def test_layers_are_built_from_symbolic_shapes_and_check_them():
    x = fr.Input((None, 8))
    lstm = L.LSTM(4)
    lstm(x)
    assert lstm.built and lstm.input_shape == (None, 8) and lstm.count_params() == 4 * 4 * (8 + 4 + 1)
    with pytest.raises(ValueError, match=r"LSTM .*expected input with 8 features"):
        lstm(fr.Input((None, 5)))
    with pytest.raises(ValueError, match=r"LSTM .*rank 3"):
        L.LSTM(4)(fr.Input((8,)))
    with pytest.raises(ValueError, match=r"Concatenate .*differs from inputs\[0\]"):
        L.Concatenate()([fr.Input((3, 2)), fr.Input((4, 2))])
    with pytest.raises(ValueError, match=r"initial_state\[0\] must have shape \(batch, 4\)"):
        L.LSTM(4)(x, initial_state=[fr.Input((3,)), fr.Input((4,))])


def test_clear_errors_for_misuse():
    a, b = fr.Input((None, 3)), fr.Input((None, 3))
    y = L.LSTM(4)(a)
    with pytest.raises(TypeError, match="symbolic tensor .* has no values"):
        np.asarray(y)
    with pytest.raises(TypeError, match=r"numpy.tanh: a symbolic tensor"):
        np.tanh(y)
    with pytest.raises(TypeError, match="arithmetic: a symbolic tensor"):
        y + 1
    with pytest.raises(ValueError, match=r"graph disconnected: .*InputLayer 'input_layer.*needed by LSTM"):
        fr.Model(b, y)  # y depends on a, which is not an input
    with pytest.raises(ValueError, match="graph disconnected"):
        fr.Model(a, L.Concatenate()([y, L.LSTM(4)(b)]))
    with pytest.raises(ValueError, match="must be a tensor made by fr.Input"):
        fr.Model(y, L.Dense(1)(y))
    with pytest.raises(TypeError, match="outputs must be a symbolic tensor"):
        fr.Model(a, np.zeros(3))
    with pytest.raises(TypeError, match="mix of symbolic tensors and other values"):
        L.Concatenate()([y, np.zeros((2, 4), np.float32)])
    with pytest.raises(TypeError, match="needs both inputs and outputs"):
        fr.Model(inputs=a)
    model = fr.Model([a, b], L.Concatenate()([y, L.LSTM(4)(b)]))
    model.compile("sgd", "mse")
    x = np.zeros((2, 5, 3), np.float32)
    with pytest.raises(ValueError, match="the model takes 2 inputs, got a list of 3 arrays"):
        model.fit([x, x, x], np.zeros((2, 8)), verbose=0)
    with pytest.raises(ValueError, match="the model takes 2 inputs; pass a list of 2 arrays"):
        model.fit(x, np.zeros((2, 8)), verbose=0)
    with pytest.raises(ValueError, match=r"InputLayer .*expected input of shape \(batch,\) \+ \(None, 3\)"):
        model.predict([x, np.zeros((2, 5, 4), np.float32)])
    d1, d2 = L.Dense(2, name="same"), L.Dense(2, name="same")
    with pytest.raises(ValueError, match="two different layers are named 'same'"):
        fr.Model(a, d2(d1(a)))


def test_subclassed_models_and_sequential_are_unchanged():
    class M(fr.Model):
        def __init__(self):
            super().__init__(name="mine")
            self.dense = L.Dense(2)

        def forward(self, x, training=False, mask=None):
            return self.dense(x, training=training)

        def backward(self, dy):
            return self.dense.backward(dy)

    m = M()
    assert type(m) is M and m.name == "mine" and m.predict(np.ones((3, 4), np.float32)).shape == (3, 2)
    assert type(fr.Model()) is fr.Model and type(fr.Model(name="base")) is fr.Model
    seq = fr.Sequential([fr.Input((None, 3)), L.LSTM(2)])
    assert type(seq.layers[0]).__name__ == "InputLayer" and seq.built


def test_fit_evaluate_callbacks_save_and_load_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    tok, feat = fr.Input((None,), dtype="int32"), fr.Input((3,))
    emb = L.Embedding(15, 4, mask_zero=True)
    shared = L.Dense(4, activation="tanh")
    code = L.GRU(4)(emb(tok))
    out = L.Dense(1, activation="sigmoid")(L.Concatenate()([shared(code), shared(L.Dense(4)(feat))]))
    model = fr.Model([tok, feat], out, name="two_branch")
    ids, feats = _padded_ids(rng, 32, 6, 15), rng.standard_normal((32, 3)).astype(np.float32)
    y = (feats[:, :1] > 0).astype(np.float32)
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    seen = []

    class Seen(fr.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((epoch, self.model is model))

    ckpt = tmp_path / "best.fastrnn"
    hist = model.fit([ids, feats], y, epochs=3, batch_size=8, validation_split=0.25, verbose=0,
                     callbacks=[Seen(), fr.callbacks.ModelCheckpoint(str(ckpt), monitor="val_loss")])
    assert seen == [(0, True), (1, True), (2, True)] and ckpt.exists()
    assert set(hist.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    loss, acc = model.evaluate([ids, feats], y, verbose=0)
    assert np.isfinite(loss) and 0 <= acc <= 1
    assert isinstance(model.train_on_batch([ids[:4], feats[:4]], y[:4]), list)

    text = model.summary(print_fn=lambda s: None)
    for row in ("two_branch", "embedding", "(None, None, 4)", "gru", "(None, 4)", "concatenate", "(None, 8)",
                f"Total params: {model.count_params():,}"):
        assert row in text
    assert model.count_params() == 15 * 4 + 3 * 4 * (4 + 4 + 2) + 4 * 4 + 4 + 3 * 4 + 4 + 8 + 1

    cfg = json.loads(json.dumps(model.get_config()))
    assert [lay["class_name"] for lay in cfg["layers"]][:2] == ["InputLayer", "InputLayer"]
    shared_entry = next(lay for lay in cfg["layers"] if lay["name"] == shared.name)
    assert len(shared_entry["inbound_nodes"]) == 2  # one per call
    clone = fr.Model.from_config(cfg)
    assert type(clone).__name__ == "Functional" and clone.count_params() == model.count_params()
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(clone.predict([ids, feats]), model.predict([ids, feats]))

    path = tmp_path / "m.fastrnn"
    model.save(path)
    loaded = fr.load_model(path)
    assert loaded.name == "two_branch" and loaded.inputs[0].dtype == np.int32
    np.testing.assert_array_equal(loaded.predict([ids, feats]), model.predict([ids, feats]))
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # the optimizer state came along: one more step is the same step
    model.train_on_batch([ids[:8], feats[:8]], y[:8])
    loaded.train_on_batch([ids[:8], feats[:8]], y[:8])
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    model.save_weights(tmp_path / "w.fastrnn")
    clone.load_weights(tmp_path / "w.fastrnn")
    np.testing.assert_array_equal(clone.predict([ids, feats]), model.predict([ids, feats]))


def test_loading_replays_calls_only_of_registered_layers(tmp_path):
    x = fr.Input((4,))
    model = fr.Model(x, L.Dense(2)(x))
    cfg = model.get_config()
    cfg["layers"][1]["class_name"] = "os.system"
    with pytest.raises(ValueError, match="unknown layer class 'os.system'"):
        fr.Model.from_config(cfg)


def test_several_outputs_predict_and_call():
    x = fr.Input((None, 3))
    seq, h = L.GRU(4, return_sequences=True, return_state=True)(x)
    model = fr.Model(x, [L.Dense(2)(seq), h])
    xs = np.random.default_rng(6).standard_normal((5, 7, 3)).astype(np.float32)
    y_seq, y_h = model.predict(xs, batch_size=2)
    assert y_seq.shape == (5, 7, 2) and y_h.shape == (5, 4)
    a, b = model(xs)
    np.testing.assert_allclose(a, y_seq, atol=1e-6)
    np.testing.assert_allclose(b, y_h, atol=1e-6)


def _two_outputs():
    """One encoder, two heads: a sequence regression and a sigmoid classifier from the final state."""
    kx = keras.Input((6, 3))
    k_rnn = K.GRU(5, return_sequences=True, return_state=True)
    k_seq_head, k_cls_head = K.Dense(2, name="seq_head"), K.Dense(1, activation="sigmoid", name="cls_head")
    k_seq, k_h = k_rnn(kx)
    km = keras.Model(kx, [k_seq_head(k_seq), k_cls_head(k_h)])
    x = fr.Input((6, 3))
    rnn = L.GRU(5, return_sequences=True, return_state=True)
    seq_head, cls_head = L.Dense(2, name="seq_head"), L.Dense(1, activation="sigmoid", name="cls_head")
    seq, h = rnn(x)
    model = fr.Model(x, [seq_head(seq), cls_head(h)])
    pairs = _twins([(rnn, k_rnn), (seq_head, k_seq_head), (cls_head, k_cls_head)], 40)
    return model, km, pairs


@pytest.mark.parametrize("as_dict", [False, True])
def test_two_outputs_with_weighted_losses_match_keras(as_dict):
    rng = np.random.default_rng(7)
    model, km, pairs = _two_outputs()
    assert model.output_names == ["seq_head", "cls_head"]
    x = rng.standard_normal((8, 6, 3)).astype(np.float32)
    y = [rng.standard_normal((8, 6, 2)).astype(np.float32), rng.integers(0, 2, (8, 1)).astype(np.float32)]
    for got, want in zip(model.predict(x), km.predict(x, verbose=0)):
        np.testing.assert_allclose(got, want, atol=ATOL)
    loss, weights = ["mse", "binary_crossentropy"], [1.0, 0.3]
    if as_dict:
        loss, weights = dict(zip(model.output_names, loss)), dict(zip(model.output_names, weights))
        y = dict(zip(model.output_names, y))
    km.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5), loss=loss, loss_weights=weights)
    model.compile(optimizer=fr.optim.SGD(learning_rate=0.5), loss=loss, loss_weights=weights)
    k_out = km.train_on_batch(x, y)
    f_loss = model.train_on_batch(x, y)
    assert f_loss == pytest.approx(float(np.ravel(k_out)[0]), abs=1e-5)
    _assert_same_weights(pairs, 1e-5)
    assert model.evaluate(x, y, verbose=0) == pytest.approx(float(np.ravel(km.evaluate(x, y, verbose=0))[0]),
                                                              abs=1e-5)


def test_two_outputs_fit_save_load_and_errors(tmp_path):
    rng = np.random.default_rng(8)
    model, _, _ = _two_outputs()
    x = rng.standard_normal((16, 6, 3)).astype(np.float32)
    y = [rng.standard_normal((16, 6, 2)).astype(np.float32), rng.integers(0, 2, (16, 1)).astype(np.float32)]
    model.compile("adam", loss={"cls_head": "binary_crossentropy"})  # the sequence head is not trained
    before = [w.copy() for w in model.layers[2].get_weights()]  # seq_head
    hist = model.fit(x, [None, y[1]], epochs=2, batch_size=4, validation_split=0.25, verbose=0)
    assert set(hist.history) == {"loss", "val_loss"}
    for a, b in zip(before, model.layers[2].get_weights()):
        np.testing.assert_array_equal(a, b)
    model.compile("adam", loss=["mse", "binary_crossentropy"], loss_weights=[0.5, 2.0])
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    path = tmp_path / "two.fastrnn"
    model.save(path)
    loaded = fr.load_model(path)
    assert loaded.loss.weights == [0.5, 2.0]
    assert loaded.evaluate(x, y, verbose=0) == pytest.approx(model.evaluate(x, y, verbose=0), abs=1e-6)
    with pytest.raises(ValueError, match=r"the model has 2 outputs \['seq_head', 'cls_head'\]; pass a list"):
        model.fit(x, y[0], verbose=0)
    with pytest.raises(ValueError, match="expected 2 entries"):
        model.compile("sgd", loss=["mse"])
    with pytest.raises(ValueError, match=r"unknown output name\(s\) \['nope'\]"):
        model.compile("sgd", loss={"nope": "mse"})
    with pytest.raises(ValueError, match="metrics: not supported for a model with several outputs"):
        model.compile("sgd", loss="mse", metrics=["mae"])


def test_summary_of_a_shared_layer_on_two_shapes_and_a_one_input_list():
    a, b = fr.Input((5, 3)), fr.Input((3,))
    dense = L.Dense(2)
    model = fr.Model([a, b], L.Concatenate()([L.Flatten()(dense(a)), dense(b)]))
    text = model.summary(print_fn=lambda s: None)
    assert f"{dense.name} (Dense)" in text and "multiple" in text and "(None, 12)" in text
    x = fr.Input((4,))
    one = fr.Model(x, L.Dense(1)(x))
    xs = np.ones((3, 4), np.float32)
    np.testing.assert_array_equal(one.predict([xs]), one.predict(xs))


def test_masks_of_several_inputs_are_joined_as_in_keras():
    """Two padded id sequences, each Embedding(mask_zero) -> LSTM(return_sequences): Concatenate
    passes their mask on to the LSTM after it; a dot attention over a masked sequence uses the
    values' mask. The two have different padding, so the joined mask (an OR, as in Keras 3) differs
    from each input's."""
    ka, kb = keras.Input((None,), dtype="int32"), keras.Input((None,), dtype="int32")
    k_ea, k_eb = K.Embedding(12, 3, mask_zero=True), K.Embedding(12, 3, mask_zero=True)
    k_la, k_lb = K.LSTM(4, return_sequences=True), K.LSTM(4, return_sequences=True)
    k_top = K.LSTM(3)
    k_sa, k_sb = k_la(k_ea(ka)), k_lb(k_eb(kb))
    k_ctx = K.Attention()([k_sa, k_sb])
    km = keras.Model([ka, kb], K.Concatenate()([k_top(K.Concatenate()([k_sa, k_sb])),
                                                K.GlobalAveragePooling1D()(k_ctx)]))

    a, b = fr.Input((None,), dtype="int32"), fr.Input((None,), dtype="int32")
    ea, eb = L.Embedding(12, 3, mask_zero=True), L.Embedding(12, 3, mask_zero=True)
    la, lb, top = L.LSTM(4, return_sequences=True), L.LSTM(4, return_sequences=True), L.LSTM(3)
    sa, sb = la(ea(a)), lb(eb(b))
    ctx, _ = L.LuongAttention("dot")([sa, sb])
    model = fr.Model([a, b], [top(L.Concatenate()([sa, sb])), ctx])
    _twins([(ea, k_ea), (eb, k_eb), (la, k_la), (lb, k_lb), (top, k_top)], 50)
    rng = np.random.default_rng(9)
    ia = _padded_ids(rng, 6, 5, 12)
    ib = rng.integers(1, 12, ia.shape).astype(np.int32)
    for row, n in enumerate((5, 1, 3, 2, 5, 4)):  # other lengths than ia's
        ib[row, n:] = 0
    assert ((ia != 0) != (ib != 0)).any() and (ia == 0).any()
    k_out = km.predict([ia, ib], verbose=0)
    top_out, ctx_out = model.predict([ia, ib])
    np.testing.assert_allclose(top_out, k_out[:, :3], atol=ATOL)
    # Keras averages the context over the query's valid steps (its mask is sa's)
    valid = (ia != 0)[..., None]
    np.testing.assert_allclose((ctx_out * valid).sum(1) / valid.sum(1), k_out[:, 3:], atol=ATOL)


@pytest.mark.parametrize("axis", [-1, 1, 2])
def test_concatenate_mask_is_keras_3s(axis):
    """Concatenate.compute_mask equals Keras 3's for masks of [B, T], masks of the input's shape,
    None (every entry kept) and a join along the time axis."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(3, 5, 2)).astype(np.float32), rng.normal(size=(3, 5, 4)).astype(np.float32)
    if axis == 1:
        b = b[:, :, :2]
    ma, mb = rng.random((3, 5)) < 0.6, rng.random((3, 5)) < 0.4
    for masks in ([ma, mb], [ma, None], [None, mb], [ma[..., None] & np.ones(a.shape, bool), mb]):
        want = np.asarray(K.Concatenate(axis=axis).compute_mask([a, b], masks))
        got = L.Concatenate(axis=axis).compute_mask([a, b], masks)
        np.testing.assert_array_equal(got, want)
    assert L.Concatenate(axis=axis).compute_mask([a, b], [None, None]) is None
    with pytest.raises(ValueError, match=r"mask\[1\] has shape \(3, 4\)"):
        L.Concatenate(axis=axis).compute_mask([a, b], [ma, np.ones((3, 4), bool)])
