"""Seq2Seq with attention: gradients by finite differences, padding, learning a toy task, decoding,
save/load, the example script and input errors."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastrnn as fr
from _problems import numgrad
from fastrnn import Seq2Seq

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))
from seq2seq_attention import DIGIT0, END, make_data  # noqa: E402  (the example's toy task)


def reverse_task(n, seed):
    """Random digit sequences (ids 3..12, lengths 4..7, right-padded with 0) and their reversals + END."""
    return make_data(n, np.random.default_rng(seed))


@pytest.fixture
def one_thread():
    # the decoder alternates tiny kernel calls with NumPy matmuls: one kernel thread avoids the two
    # thread pools contending for the same cores
    old = fr.get_num_threads()
    fr.set_num_threads(1)
    yield
    fr.set_num_threads(old)


# ------------------------------------------------------------------------------------- gradients
TINY_X = np.array([[3, 4, 5, 0], [5, 3, 0, 0], [4, 4, 4, 3]])
TINY_Y = np.array([[5, 4, 3, 2, 0], [3, 5, 2, 0, 0], [3, 4, 4, 4, 2]])


@pytest.mark.parametrize("cell,attention,bidirectional", [
    ("lstm", "bahdanau", True), ("gru", "luong", False), ("gru", "bahdanau", True), ("lstm", "luong", False)])
def test_loss_gradient_matches_finite_differences(cell, attention, bidirectional):
    model = Seq2Seq(6, 6, embed_dim=3, units=2, cell=cell, attention=attention, bidirectional=bidirectional,
                    attention_units=3, dtype="float64", seed=1)
    for p in model.parameters():  # larger weights than the initialisation: every path matters
        p.value[...] = np.random.default_rng(abs(hash(p.name)) % 2**32).uniform(-0.8, 0.8, p.shape)
    loss_fn = fr.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loss():
        return loss_fn(TINY_Y, model.forward_teacher(TINY_X, TINY_Y), TINY_Y != 0)[0]

    value, _ = model.loss_and_grad(TINY_X, TINY_Y)
    assert value == pytest.approx(loss(), rel=1e-12)
    rng = np.random.default_rng(0)
    checked = 0
    for p in model.parameters():
        g = p.grad.copy()
        flat = p.value.reshape(-1)
        picks = set(rng.choice(flat.size, size=min(5, flat.size), replace=False).tolist())
        picks.add(int(np.argmax(np.abs(g))))
        for k in picks:
            one = flat[k:k + 1]  # a view: numgrad perturbs the parameter in place
            num = numgrad(loss, one)[0]
            assert g.reshape(-1)[k] == pytest.approx(num, rel=1e-5, abs=1e-8), (p.name, k)
            checked += 1
        assert np.any(g != 0), p.name
    assert checked >= 4 * len(model.parameters())


def test_padding_beyond_the_sequences_changes_nothing():
    model = Seq2Seq(6, 6, embed_dim=3, units=2, dtype="float64", seed=2)
    v1, _ = model.loss_and_grad(TINY_X, TINY_Y)
    g1 = [p.grad.copy() for p in model.parameters()]
    x2 = np.pad(TINY_X, ((0, 0), (0, 3)))
    y2 = np.pad(TINY_Y, ((0, 0), (0, 2)))
    v2, _ = model.loss_and_grad(x2, y2)
    assert v2 == pytest.approx(v1, rel=1e-12)
    for a, p in zip(g1, model.parameters()):
        np.testing.assert_allclose(p.grad, a, rtol=1e-10, atol=1e-14, err_msg=p.name)
    # the source padding row of the embedding gets no gradient
    assert np.all(model.src_embedding.embeddings.grad[0] == 0)


def test_float32_kernels_agree_with_float64_reference():
    m32 = Seq2Seq(6, 6, embed_dim=4, units=3, cell="gru", seed=3)
    m64 = Seq2Seq(6, 6, embed_dim=4, units=3, cell="gru", dtype="float64")
    m64.set_weights(m32.get_weights())
    np.testing.assert_allclose(m32.forward_teacher(TINY_X, TINY_Y), m64.forward_teacher(TINY_X, TINY_Y),
                               rtol=1e-4, atol=1e-5)
    m32.loss_and_grad(TINY_X, TINY_Y)
    m64.loss_and_grad(TINY_X, TINY_Y)
    for a, b in zip(m32.parameters(), m64.parameters()):
        np.testing.assert_allclose(a.grad, b.grad, rtol=1e-3, atol=1e-5, err_msg=a.name)


# ------------------------------------------------------------------------------------- learning
@pytest.fixture(scope="module")
def trained():
    old = fr.get_num_threads()
    fr.set_num_threads(1)
    try:
        x, y = reverse_task(1200, 0)
        xt, yt = reverse_task(200, 1)
        model = Seq2Seq(13, 13, embed_dim=16, units=32, seed=0)
        model.compile(optimizer=fr.optim.Adam(learning_rate=0.01), metrics=["accuracy"])
        t0 = time.perf_counter()
        acc, epochs = 0.0, 0
        while acc <= 0.95 and epochs < 12:
            model.fit(x, y, epochs=1, batch_size=48, verbose=0, seed=epochs)
            epochs += 1
            acc = float(np.mean(np.all(model.predict(xt, max_len=yt.shape[1]) == yt, axis=1)))
        seconds = time.perf_counter() - t0
    finally:
        fr.set_num_threads(old)
    return dict(model=model, x=x, y=y, xt=xt, yt=yt, acc=acc, seconds=seconds, epochs=epochs)


def test_learns_to_reverse_digit_sequences(trained):
    print(f"exact-sequence accuracy {trained['acc']:.3f} after {trained['epochs']} epochs, "
          f"{trained['seconds']:.1f} s")
    assert trained["acc"] > 0.9
    model, xt, yt = trained["model"], trained["xt"], trained["yt"]
    loss, acc = model.evaluate(xt, yt, verbose=0)
    assert loss < 0.3 and acc > 0.95


def test_greedy_decoding_and_attention_weights(trained, one_thread):
    model, xt = trained["model"], trained["xt"][:20]
    ids, att = model.predict(xt, max_len=10, batch_size=7, return_attention=True)
    assert ids.shape == (20, 10) and att.shape == (20, 10, xt.shape[1])
    src_mask = xt != 0
    for b in range(20):
        ends = np.flatnonzero(ids[b] == END)
        assert ends.size == 1  # decoding stops at the end token ...
        e = ends[0]
        assert np.all(ids[b, e + 1:] == 0) and np.all(att[b, e + 1:] == 0)  # ... and pads after it
        assert np.all(ids[b, :e] >= DIGIT0)
        np.testing.assert_allclose(att[b, :e + 1].sum(axis=1), 1.0, rtol=1e-5)
        assert np.all(att[b, :, ~src_mask[b]] == 0)
    # reversing: the first output attends mostly to the last source digit
    last = src_mask.sum(axis=1) - 1
    assert np.mean(att[:, 0].argmax(axis=1) == last) > 0.7
    # model(x) is the same greedy decoding
    np.testing.assert_array_equal(model(xt[:3])[:, :10], ids[:3])


def test_save_and_load_roundtrip(trained, tmp_path, one_thread):
    model, x, y, xt = trained["model"], trained["x"][:96], trained["y"][:96], trained["xt"][:30]
    path = tmp_path / "s2s.fastrnn"
    model.save(path)
    loaded = Seq2Seq.load(path)
    assert loaded.get_config() | {"name": None} == model.get_config() | {"name": None}
    np.testing.assert_array_equal(loaded.predict(xt), model.predict(xt))
    also = fr.load_model(path, custom_objects={"Seq2Seq": Seq2Seq})
    np.testing.assert_array_equal(also.predict(xt), model.predict(xt))
    # the optimizer state came along: one more identical step gives identical weights
    a = model.train_on_batch(x, y)
    b = loaded.train_on_batch(x, y)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    for p, q in zip(model.parameters(), loaded.parameters()):
        np.testing.assert_array_equal(p.value, q.value)
    with pytest.raises(ValueError, match="custom model class 'Seq2Seq'"):
        fr.load_model(path)


def test_fit_history_validation_and_summary(one_thread):
    x, y = reverse_task(64, 5)
    model = Seq2Seq(13, 13, embed_dim=4, units=4, cell="gru", attention="luong", bidirectional=False, seed=4)
    model.compile(metrics=["accuracy"])
    h = model.fit(x, y, epochs=2, batch_size=16, validation_split=0.25, verbose=0)
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(np.isfinite(v).all() for v in h.history.values())
    text = model.summary(print_fn=lambda s: None)
    assert "LuongAttention" in text and f"{model.count_params():,}" in text
    clone = Seq2Seq.from_config(model.get_config())
    assert [p.shape for p in clone.parameters()] == [p.shape for p in model.parameters()]


# ------------------------------------------------------------------------------------- errors
def test_bad_inputs_raise_clear_errors():
    model = Seq2Seq(6, 6, embed_dim=2, units=2, seed=0)
    model.compile()
    with pytest.raises(TypeError, match="x: expected an integer array"):
        model.fit(TINY_X.astype(float), TINY_Y, verbose=0)
    with pytest.raises(ValueError, match=r"y: token id 7 at position \(0, 1\)"):
        model.fit(TINY_X, np.where(TINY_Y == 4, 7, TINY_Y), verbose=0)
    with pytest.raises(ValueError, match="x: expected rank 2"):
        model.predict(TINY_X[:, :, None])
    with pytest.raises(ValueError, match="same number of samples"):
        model.evaluate(TINY_X, TINY_Y[:2], verbose=0)
    with pytest.raises(ValueError, match="tbptt"):
        model.fit(TINY_X, TINY_Y, tbptt=2, verbose=0)
    with pytest.raises(ValueError, match="max_len"):
        model.predict(TINY_X, max_len=0)
    with pytest.raises(RuntimeError, match="before a forward pass"):
        model.backward(np.zeros((3, 5, 6)))
    with pytest.raises(ValueError, match="cell"):
        Seq2Seq(6, 6, cell="rnn")
    with pytest.raises(ValueError, match="attention"):
        Seq2Seq(6, 6, attention="dot")
    with pytest.raises(ValueError, match="end_id"):
        Seq2Seq(6, 6, start_id=1, end_id=1)
    with pytest.raises(ValueError, match="start_id"):
        Seq2Seq(6, 6, start_id=6)
    with pytest.raises(TypeError, match="units"):
        Seq2Seq(6, 6, units=2.0)
    with pytest.raises(ValueError, match="dtype"):
        Seq2Seq(6, 6, dtype="float16")


# ------------------------------------------------------------------------------------- example
@pytest.mark.parametrize("isa", fr.available_isas())
def test_example_smoke(tmp_path, isa):
    """The lesson learns the reversal on every ISA path (its smoke configuration once sat at the edge
    of convergence: 0.355 exact on avx2 against 1.000 on the scalar path)."""
    import json

    proc = subprocess.run([sys.executable, str(EXAMPLES / "seq2seq_attention.py"), "--smoke", "--json",
                           "--out", str(tmp_path / "plots")], cwd=tmp_path,
                          env=dict(os.environ, FASTRNN_ISA=isa), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS_JSON ")]
    assert len(lines) == 1
    data = json.loads(lines[0][len("RESULTS_JSON "):])
    assert data["example"] == "seq2seq_attention" and data["mode"] == "smoke"
    res = data["results"]
    assert res["exact_sequence_accuracy"] >= 0.97 and res["token_accuracy"] >= 0.97, res
    assert res["params"] > 0 and res["seconds"] > 0
    assert "attention weights" in proc.stdout and "->" in proc.stdout
    with open(tmp_path / "plots" / "seq2seq_attention.png", "rb") as f:  # the heat map
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run([sys.executable, str(EXAMPLES / "seq2seq_attention.py"), "--smoke", "--epochs", "0"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "--epochs" in bad.stderr and "Traceback" not in bad.stderr


def test_empty_source_row_gives_finite_loss_gradients_and_decoding():
    model = Seq2Seq(6, 6, embed_dim=3, units=2, dtype="float64", seed=7)
    x = TINY_X.copy()
    x[1] = 0  # a source with no tokens: zero context, zero initial state, no NaN
    value, logits = model.loss_and_grad(x, TINY_Y)
    assert np.isfinite(value) and np.all(np.isfinite(logits))
    assert all(np.all(np.isfinite(p.grad)) for p in model.parameters())
    ids, att = model.predict(x, max_len=4, return_attention=True)
    assert np.all(att[1] == 0) and np.all(np.isfinite(att))
    assert np.all(ids[:, 0] != 0)  # greedy decoding never emits the padding id


# ------------------------------------------------------------------------------------- beam search
def _sequence_logprob(model, x, y):
    """Total log-probability of target rows y given sources x (teacher forcing), float64; the
    padding after a row's end (id 0) is not part of the sequence."""
    z = model.forward_teacher(x, y).astype(np.float64)
    zmax = z.max(axis=-1, keepdims=True)
    logp = z - zmax - np.log(np.exp(z - zmax).sum(axis=-1, keepdims=True))
    return (np.take_along_axis(logp, y[..., None], axis=-1)[..., 0] * (y != 0)).sum(axis=1)


def test_beam_search_of_width_one_is_greedy_decoding(trained, one_thread):
    model, xt = trained["model"], trained["xt"][:25]
    g_ids, g_att = model._greedy(xt, 9)
    b_ids, b_att, _ = model._beam(xt, 9, 1)
    np.testing.assert_array_equal(b_ids, g_ids)
    np.testing.assert_allclose(b_att, g_att, rtol=0, atol=0)


def test_wide_beam_finds_the_most_likely_sequence_exhaustively(one_thread):
    """With width >= V^(L-1) beam search keeps every prefix until the last step, so it must return
    the most likely of all V^L outputs (end_id=None: every output has length L)."""
    rng = np.random.default_rng(3)
    model = Seq2Seq(6, 4, embed_dim=5, units=6, cell="gru", end_id=None, seed=4)
    model.set_weights([w + rng.normal(0, 0.8, w.shape).astype(np.float32) for w in model.get_weights()])
    x = np.array([[3, 4, 5, 0], [5, 2, 0, 0], [2, 2, 3, 4], [4, 0, 0, 0], [5, 5, 3, 0]])
    L = 3
    tokens = np.array(np.meshgrid(*[np.arange(1, 4)] * L, indexing="ij")).reshape(L, -1).T  # 27 rows
    ids, _, scores = model._beam(x, L, 9)
    assert np.array_equal(model.predict(x, max_len=L, beam_width=9), ids)
    narrow, _, narrow_scores = model._beam(x, L, 2)
    # the search's own scores are the sequences' log-probabilities, for every beam it keeps
    np.testing.assert_allclose(scores, _sequence_logprob(model, x, ids), rtol=0, atol=1e-4)
    every, every_att, every_scores = model._beam(x, L, 9, all_beams=True)
    assert np.all(np.diff(every_scores, axis=1) <= 0) and np.all(np.isfinite(every_scores))
    rows = np.repeat(x, 9, axis=0)
    flat = every.reshape(-1, L)
    np.testing.assert_allclose(every_scores.ravel(), _sequence_logprob(model, rows, flat), rtol=0, atol=1e-4)
    # each beam's attention weights are those of decoding its own tokens step by step
    enc_out, mask, state = model._encode(rows, False)
    prev = np.full(len(rows), model.start_id)
    for i in range(L):
        state, w, _ = model._step(model.tgt_embedding.embeddings.value[prev], state, enc_out, mask, False)
        np.testing.assert_allclose(every_att.reshape(-1, L, x.shape[1])[:, i], w, rtol=0, atol=1e-6)
        prev = flat[:, i]
    for b in range(len(x)):
        lp = _sequence_logprob(model, np.repeat(x[b:b + 1], len(tokens), axis=0), tokens)
        best = tokens[lp.argmax()]
        assert np.sort(lp)[-1] - np.sort(lp)[-2] > 1e-4  # a unique optimum, so the check is exact
        np.testing.assert_array_equal(ids[b], best)
        assert narrow_scores[b] <= lp.max() + 1e-4


def test_beam_search_output_ends_and_pads_like_greedy(trained, one_thread):
    model, xt, yt = trained["model"], trained["xt"][:30], trained["yt"][:30]
    ids, att = model.predict(xt, max_len=10, beam_width=3, return_attention=True)
    for b in range(len(xt)):
        e = np.flatnonzero(ids[b] == END)[0]
        assert np.all(ids[b, e + 1:] == 0) and np.all(att[b, e + 1:] == 0)
        np.testing.assert_allclose(att[b, :e + 1].sum(axis=1), 1.0, rtol=1e-5)
    assert np.mean(np.all(ids[:, :yt.shape[1]] == yt, axis=1)) > 0.9  # a trained model: mostly right
    greedy = model.predict(xt, max_len=10)
    lp_beam = _sequence_logprob(model, xt, ids)
    lp_greedy = _sequence_logprob(model, xt, greedy)
    assert np.mean(lp_beam >= lp_greedy - 1e-5) > 0.9  # the wider search scores at least as well, mostly
    with pytest.raises(ValueError, match="beam_width"):
        model.predict(xt, beam_width=0)


def test_length_penalty_picks_the_best_normalised_beam(one_thread):
    rng = np.random.default_rng(5)
    model = Seq2Seq(8, 6, embed_dim=6, units=8, seed=2)  # untrained, perturbed: beams of many lengths
    model.set_weights([w + rng.normal(0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    xt = rng.integers(3, 8, size=(20, 5))
    every, _, scores = model._beam(xt, 10, 4, all_beams=True)
    n = (every != 0).sum(axis=2)
    # a strong penalty changes the choice somewhere (else this test could not tell it is applied)
    assert np.any((scores / ((5.0 + n) / 6.0) ** 3.0).argmax(axis=1) != scores.argmax(axis=1))
    for alpha in (0.0, 0.6, 3.0):
        ids = model.predict(xt, max_len=10, beam_width=4, length_penalty=alpha)
        want = (scores / ((5.0 + n) / 6.0) ** alpha).argmax(axis=1)
        np.testing.assert_array_equal(ids, every[np.arange(len(xt)), want])
    np.testing.assert_array_equal(model.predict(xt, max_len=10, beam_width=4, length_penalty=0.0),
                                  model.predict(xt, max_len=10, beam_width=4))
    for bad in (-0.5, float("nan"), "1"):
        with pytest.raises(ValueError, match="length_penalty"):
            model.predict(xt, beam_width=4, length_penalty=bad)
    with pytest.raises(ValueError, match="beam_width > 1"):
        model.predict(xt, length_penalty=0.6)


# ------------------------------------------------------------------------------------- dropout
def _reseed_dropout(model, seed):
    """The same dropout masks on the next training forward (each dropping layer's Philox key set
    and its call counter rewound)."""
    model.output_dropout._stream.key, model.output_dropout._stream.calls = seed, 0
    enc = model.encoder
    for i, lay in enumerate((enc.forward_layer, enc.backward_layer) if model.bidirectional else (enc,)):
        lay._dropout_stream.key, lay._dropout_stream.calls = seed + 1 + i, 0


@pytest.mark.parametrize("cell,bidirectional", [("lstm", True), ("gru", False)])
def test_dropout_gradients_match_finite_differences_with_fixed_masks(cell, bidirectional):
    model = Seq2Seq(6, 6, embed_dim=3, units=2, cell=cell, bidirectional=bidirectional, attention_units=3,
                    dropout=0.4, dtype="float64", seed=1)
    for p in model.parameters():
        p.value[...] = np.random.default_rng(abs(hash(p.name)) % 2**32).uniform(-0.8, 0.8, p.shape)
    loss_fn = fr.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loss():
        _reseed_dropout(model, 7)
        return loss_fn(TINY_Y, model.forward_teacher(TINY_X, TINY_Y, training=True), TINY_Y != 0)[0]

    _reseed_dropout(model, 7)
    value, _ = model.loss_and_grad(TINY_X, TINY_Y)
    assert value == pytest.approx(loss(), rel=1e-12)
    assert value != pytest.approx(loss_fn(TINY_Y, model.forward_teacher(TINY_X, TINY_Y), TINY_Y != 0)[0],
                                  rel=1e-6)  # the masks change the training loss
    for p in model.parameters():
        g = p.grad.copy()
        flat = p.value.reshape(-1)
        for k in {0, int(np.argmax(np.abs(g)))}:
            num = numgrad(loss, flat[k:k + 1])[0]
            assert g.reshape(-1)[k] == pytest.approx(num, rel=1e-5, abs=1e-8), (p.name, k)


def test_dropout_only_in_training_and_in_the_config(one_thread):
    x, y = reverse_task(40, 3)
    plain = Seq2Seq(13, 13, embed_dim=8, units=8, seed=5)
    drop = Seq2Seq(13, 13, embed_dim=8, units=8, seed=5, dropout=0.5)
    drop.set_weights(plain.get_weights())
    np.testing.assert_array_equal(drop.predict(x[:8], max_len=6), plain.predict(x[:8], max_len=6))
    np.testing.assert_array_equal(drop.forward_teacher(x, y), plain.forward_teacher(x, y))
    a, b = drop.forward_teacher(x, y, training=True), drop.forward_teacher(x, y, training=True)
    assert not np.allclose(a, b)  # a new mask every training call
    assert Seq2Seq.from_config(drop.get_config()).dropout == 0.5
    assert Seq2Seq.from_config({k: v for k, v in plain.get_config().items() if k != "dropout"}).dropout == 0.0
    for bad in (1.0, -0.1, "0.2", True):
        with pytest.raises(ValueError, match="dropout"):
            Seq2Seq(13, 13, dropout=bad)
