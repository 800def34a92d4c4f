"""fastrnn.onnx: the exported graphs against model.predict, run by onnxruntime.

Every model is first run (and exported) at batch 4, length 6; the file is then run at other batch
sizes and lengths (1, 5, 9, 13: the batch and time axes are symbolic). Tolerance: abs 1e-5 +
rel 1e-5 (|ort - predict| <= 1e-5 + 1e-5 * |predict|), float32, random weights.
"""
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import fastrnn as fr
from fastrnn import layers as L
from fastrnn.data import WordVectorizer
from fastrnn.datasets import load_sentiment

RTOL = ATOL = 1e-5
CELLS = {
    "rnn_tanh": lambda h, **kw: L.SimpleRNN(h, **kw),
    "rnn_relu": lambda h, **kw: L.SimpleRNN(h, activation="relu", **kw),
    "lstm": lambda h, **kw: L.LSTM(h, **kw),
    "gru": lambda h, **kw: L.GRU(h, **kw),
}
SIZES = [(1, 9), (5, 1), (7, 13)]  # (batch, time) at run time; export at (4, 6)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _random_biases(model, seed=0):
    """Non-zero biases everywhere (the initial ones are zeros / ones, which would hide a bias
    misplaced in the gate order)."""
    rng = _rng(seed + 100)
    model.set_weights([w + rng.uniform(-0.5, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])


def _export(model, tmp_path, name="m.onnx", **kw):
    path = str(tmp_path / name)
    fr.onnx.export(model, path, **kw)
    return path


def _session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _run(path, xs):
    sess = _session(path)
    xs = xs if isinstance(xs, list) else [xs]
    feeds = {i.name: x for i, x in zip(sess.get_inputs(), xs)}
    return sess.run(None, feeds)


def _check(model, tmp_path, make_x, sizes=SIZES, **kw):
    """Export after a predict at (4, 6); compare at every (batch, time) of ``sizes``."""
    model.predict(make_x(4, 6))
    path = _export(model, tmp_path, **kw)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    # nothing dead in the graph: every initializer and some output of every node is read
    read = {i for n in proto.graph.node for i in n.input} | {o.name for o in proto.graph.output}
    assert [t.name for t in proto.graph.initializer if t.name not in read] == []
    assert [n.name for n in proto.graph.node if not any(o in read for o in n.output)] == []
    for B, T in sizes:
        x = make_x(B, T)
        want = model.predict(x)
        want = want if isinstance(want, list) else [want]
        got = _run(path, x)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape, (B, T)
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL, err_msg=f"batch {B}, time {T}")
    return path


def _floats(F, seed=0):
    rng = _rng(seed)
    return lambda B, T: rng.standard_normal((B, T, F)).astype(np.float32)


def _padded(F, seed=0, holes=True):
    """[B, T, F] with zero steps (Masking(0.0)): lengths 1..T over the rows, a row with no valid
    step, and (``holes``) masked steps in the middle and at the front."""
    rng = _rng(seed)

    def make(B, T):
        x = rng.standard_normal((B, T, F)).astype(np.float32)
        for b in range(B):
            x[b, 1 + b % T:] = 0.0  # lengths 1..T
        if B > 1:
            x[1] = 0.0  # no valid step
        if holes and B > 2 and T > 2:
            x[2, 1] = 0.0  # a hole after the first step
            x[2, 0] = rng.standard_normal(F)
            x[2, 2:] = rng.standard_normal((T - 2, F))
        if holes and B > 3 and T > 1:
            x[3, :] = rng.standard_normal((T, F))
            x[3, 0] = 0.0  # masked first step
        return x

    return make


def _ids(vocab, seed=0, holes=True):
    """Token ids [B, T] padded with 0 at the end (lengths 1..T), a row of zeros, and (``holes``)
    zeros in the middle."""
    rng = _rng(seed)

    def make(B, T):
        x = rng.integers(1, vocab, (B, T))
        for b in range(B):
            x[b, 1 + b % T:] = 0
        if B > 1:
            x[1] = 0
        if holes and B > 2 and T > 2:
            x[2] = rng.integers(1, vocab, T)
            x[2, 1] = 0
        return x.astype(np.int64)

    return make


# ------------------------------------------------------------------------------------ one recurrent layer
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("units", [3, 17])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_one_recurrent_layer(tmp_path, cell, units, return_sequences, go_backwards):
    model = fr.Sequential([CELLS[cell](units, return_sequences=return_sequences, go_backwards=go_backwards,
                                       input_shape=(None, 5), seed=1)])
    _random_biases(model)
    _check(model, tmp_path, _floats(5))


@pytest.mark.parametrize("zero_output_for_mask", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_masked_recurrent_layer(tmp_path, cell, return_sequences, go_backwards, zero_output_for_mask):
    # padding at the end (lengths 1..T), in the middle and at the front, and a row with no valid step
    model = fr.Sequential([L.Masking(0.0, input_shape=(None, 4)),
                           CELLS[cell](17, return_sequences=return_sequences, go_backwards=go_backwards,
                                       zero_output_for_mask=zero_output_for_mask, seed=2)])
    _random_biases(model)
    _check(model, tmp_path, _padded(4), sizes=[(9, 9), (5, 1), (6, 13)])


def test_the_masked_outputs_differ_from_unmasked_ones(tmp_path):
    # the check above could pass only if the mask mattered: with a mask the outputs at masked
    # steps repeat the last valid one, which a plain run of the padded input does not give
    x = _padded(4)(6, 8)
    masked = fr.Sequential([L.Masking(0.0, input_shape=(None, 4)), L.LSTM(5, return_sequences=True, seed=2)])
    plain = fr.Sequential([L.LSTM(5, return_sequences=True, input_shape=(None, 4), seed=2)])
    plain.set_weights(masked.get_weights())
    got = _run(_export(masked, tmp_path), x)[0]
    assert not np.allclose(got, plain.predict(x), atol=1e-3)
    np.testing.assert_allclose(got[0, 1:], np.repeat(got[0, :1], 7, axis=0), rtol=0, atol=0)  # length 1


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave"])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_bidirectional(tmp_path, cell, merge_mode, return_sequences):
    model = fr.Sequential([L.Bidirectional(CELLS[cell](3, return_sequences=return_sequences, seed=3),
                                           merge_mode=merge_mode, input_shape=(None, 2))])
    _random_biases(model)
    _check(model, tmp_path, _floats(2))


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave"])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_masked_bidirectional(tmp_path, cell, merge_mode, return_sequences):
    model = fr.Sequential([L.Masking(0.0, input_shape=(None, 3)),
                           L.Bidirectional(CELLS[cell](17, return_sequences=return_sequences, seed=3),
                                           merge_mode=merge_mode)])
    _random_biases(model)
    _check(model, tmp_path, _padded(3), sizes=[(9, 9), (6, 13), (3, 1)])


def test_bidirectional_of_a_backwards_layer_and_a_custom_backward_layer(tmp_path):
    fw = L.GRU(4, return_sequences=True, go_backwards=True, seed=4)
    bw = L.GRU(4, return_sequences=True, go_backwards=False, seed=5)
    model = fr.Sequential([L.Masking(0.0, input_shape=(None, 3)), L.Bidirectional(fw, backward_layer=bw)])
    _random_biases(model)
    _check(model, tmp_path, _padded(3), sizes=[(9, 9), (5, 4)])


# ------------------------------------------------------------------------------------ stacks and other layers
def test_embedding_stack_with_mask_zero(tmp_path):
    model = fr.Sequential([
        L.Embedding(30, 6, mask_zero=True, seed=1),
        L.Bidirectional(L.LSTM(5, return_sequences=True, seed=2), merge_mode="sum"),
        L.GRU(17, return_sequences=True, go_backwards=True, seed=3),
        L.SimpleRNN(3, return_sequences=True, seed=4),
        L.TimeDistributed(L.Dense(4, activation="softmax", seed=5)),
        L.Dropout(0.5),
        L.LSTM(3, seed=6),
        L.Dense(2, activation="tanh", seed=7),
    ])
    _check(model, tmp_path, _ids(30), sizes=[(9, 9), (5, 1), (6, 13)])


def test_embedding_without_mask_and_stacked_cells(tmp_path):
    model = fr.Sequential([L.Embedding(11, 4, seed=1), L.LSTM(3, return_sequences=True, seed=2),
                           L.GRU(3, return_sequences=True, use_bias=False, seed=3), L.SimpleRNN(3, seed=4),
                           L.Dense(1, activation="sigmoid", seed=5)])
    _random_biases(model)
    _check(model, tmp_path, lambda B, T: _rng(B * T).integers(0, 11, (B, T)).astype(np.int64))


def test_dense_activation_dropout_timedistributed(tmp_path):
    model = fr.Sequential([L.Dense(7, activation="relu", input_shape=(None, 3), seed=1), L.Dropout(0.3),
                           L.Activation("tanh"), L.TimeDistributed(L.Dense(5, seed=2)),
                           L.GRU(4, return_sequences=True, seed=3), L.Activation("softmax"),
                           L.TimeDistributed(L.Dense(2, activation="sigmoid", use_bias=False, seed=4))])
    _random_biases(model)
    _check(model, tmp_path, _floats(3))


def test_flatten_keeps_the_length_and_repeatvector(tmp_path):
    model = fr.Sequential([L.LSTM(4, return_sequences=True, input_shape=(6, 3), seed=1), L.Flatten(),
                           L.Dense(5, seed=2), L.RepeatVector(3), L.GRU(2, return_sequences=True, seed=3)])
    _random_biases(model)
    path = _check(model, tmp_path, _floats(3), sizes=[(1, 6), (9, 6)])
    dims = [d.dim_value or d.dim_param for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 6, 3]


def test_time_series_model_without_time_axis_input(tmp_path):
    # a [B, F] input (no time axis) through Dense and RepeatVector into an LSTM
    model = fr.Sequential([L.Dense(4, input_shape=(3,), seed=1), L.RepeatVector(5), L.LSTM(2, seed=2)])
    model.predict(np.ones((4, 3), np.float32))
    path = _export(model, tmp_path)
    x = _rng().standard_normal((7, 3)).astype(np.float32)
    np.testing.assert_allclose(_run(path, x)[0], model.predict(x), rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------------------------ functional models
def test_functional_two_inputs_concatenate_and_several_outputs(tmp_path):
    a = fr.Input((None, 3), name="a")
    b = fr.Input((None,), dtype="int64", name="ids")
    ha = L.Masking(0.0)(a)
    hb = L.Embedding(9, 2, mask_zero=True, seed=1)(b)
    h = L.Concatenate()([ha, hb])
    seq = L.Bidirectional(L.GRU(3, return_sequences=True, seed=2), merge_mode=None)(h)
    y1 = L.LSTM(4, seed=3, name="last")(seq[0])
    y2 = L.TimeDistributed(L.Dense(2, seed=4), name="steps")(seq[1])
    model = fr.Model([a, b], [y1, y2])
    pad, ids = _padded(3, holes=False), _ids(9, holes=False)

    def make(B, T):
        return [pad(B, T), ids(B, T)]

    model.predict(make(4, 6))
    path = _export(model, tmp_path)
    sess = _session(path)
    assert [i.name for i in sess.get_inputs()] == ["a", "ids"]
    assert [o.name for o in sess.get_outputs()] == ["last", "steps"]
    for B, T in [(9, 9), (3, 2)]:
        xs = make(B, T)
        for g, w in zip(_run(path, xs), model.predict(xs)):
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_functional_return_state(tmp_path, bidirectional):
    x = fr.Input((None, 3))
    rnn = L.LSTM(4, return_state=True, return_sequences=True, seed=1)
    outs = L.Bidirectional(rnn)(L.Masking(0.0)(x)) if bidirectional else rnn(L.Masking(0.0)(x))
    model = fr.Model(x, outs)
    _random_biases(model)
    _check(model, tmp_path, _padded(3), sizes=[(9, 9), (5, 2)])


def test_a_chain_exports_the_same_as_a_sequential(tmp_path):
    x = fr.Input((None, 2))
    y = L.Dense(1, seed=2)(L.GRU(3, seed=1)(x))
    model = fr.Model(x, y)
    _check(model, tmp_path, _floats(2))


# ------------------------------------------------------------------------------------ the operators
def _nodes(path, op_type):
    return [n for n in onnx.load(path).graph.node if n.op_type == op_type]


def test_gru_is_exported_as_the_reset_after_gru(tmp_path):
    model = fr.Sequential([L.GRU(5, return_sequences=True, input_shape=(None, 3), seed=1)])
    _random_biases(model)
    path = _export(model, tmp_path)
    (node,) = _nodes(path, "GRU")
    assert onnx.helper.get_node_attr_value(node, "linear_before_reset") == 1
    # the attribute matters: the other GRU gives other outputs (so the comparison could fail)
    proto = onnx.load(path)
    for n in proto.graph.node:
        if n.op_type == "GRU":
            for attr in n.attribute:
                if attr.name == "linear_before_reset":
                    attr.i = 0
    other = str(tmp_path / "other.onnx")
    onnx.save(proto, other)
    x = _rng().standard_normal((3, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(_run(path, x)[0], model.predict(x), rtol=RTOL, atol=ATOL)
    assert np.abs(_run(other, x)[0] - model.predict(x)).max() > 1e-3


def test_operators_and_dynamic_axes(tmp_path):
    model = fr.Sequential([L.Embedding(10, 3, mask_zero=True, input_length=6),
                           L.Bidirectional(L.LSTM(4, return_sequences=True)), L.SimpleRNN(2, activation="relu")])
    model.predict(np.ones((4, 6), np.int64))
    path = _export(model, tmp_path)
    proto = onnx.load(path)
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {fr.onnx.DEFAULT_OPSET}
    (lstm,) = _nodes(path, "LSTM")
    assert onnx.helper.get_node_attr_value(lstm, "direction") == b"bidirectional"
    assert lstm.input[4] != ""  # sequence_lens from the mask
    (rnn,) = _nodes(path, "RNN")
    assert onnx.helper.get_node_attr_value(rnn, "activations") == [b"Relu"]
    inp = proto.graph.input[0].type.tensor_type
    assert inp.elem_type == onnx.TensorProto.INT64
    assert [d.dim_param for d in inp.shape.dim] == ["batch", "time"]
    out = proto.graph.output[0].type.tensor_type.shape
    assert [d.dim_value or d.dim_param for d in out.dim] == ["batch", 2]


def test_a_length_given_at_build_stays_symbolic(tmp_path):
    # input_shape=(6, 3): fastrnn takes other lengths, so does the file, and says so in its outputs
    model = fr.Sequential([L.Bidirectional(L.LSTM(4, return_sequences=True), input_shape=(6, 3)),
                           L.TimeDistributed(L.Dense(2))])
    path = _check(model, tmp_path, _floats(3), sizes=[(2, 9), (3, 1)])
    graph = onnx.load(path).graph
    assert [d.dim_value or d.dim_param for d in graph.input[0].type.tensor_type.shape.dim] == ["batch", "time", 3]
    assert [d.dim_value or d.dim_param for d in graph.output[0].type.tensor_type.shape.dim] == ["batch", "time", 2]


def test_a_float_input_into_an_embedding_becomes_ids(tmp_path):
    x = fr.Input((None,))  # float32 by default; the Embedding reads ids
    model = fr.Model(x, L.GRU(3)(L.Embedding(7, 2, mask_zero=True)(x)))
    path = _export(model, tmp_path)
    assert onnx.load(path).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    ids = _ids(7)(5, 4)
    np.testing.assert_allclose(_run(path, ids)[0], model.predict(ids.astype(np.float32)), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("opset", [14, 17, 21])
def test_opsets(tmp_path, opset):
    model = fr.Sequential([L.Masking(0.0, input_shape=(None, 3)), L.Bidirectional(L.GRU(3, return_sequences=True)),
                           L.LSTM(2)])
    path = _check(model, tmp_path, _padded(3), sizes=[(5, 7)], opset=opset)
    assert onnx.load(path).opset_import[0].version == opset


@pytest.mark.parametrize("opset", [13, 0, 99, 17.0, "17", True])
def test_bad_opset_is_refused(tmp_path, opset):
    model = fr.Sequential([L.LSTM(2, input_shape=(None, 3))])
    with pytest.raises(ValueError, match="opset"):
        fr.onnx.export(model, str(tmp_path / "m.onnx"), opset=opset)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------ refusals and the file
def test_unsupported_layer_is_refused_by_name(tmp_path):
    q = fr.Input((None, 4))
    v = fr.Input((None, 4))
    ctx = L.LuongAttention(name="my_attention")([q, v])
    model = fr.Model([q, v], ctx)
    with pytest.raises(ValueError, match="my_attention.*LuongAttention.*not supported"):
        model.export_onnx(str(tmp_path / "m.onnx"))
    assert os.listdir(tmp_path) == []


def test_a_custom_layer_is_refused_by_name(tmp_path):
    class Doubler(L.Layer):
        def call(self, x, training=False, mask=None):
            return 2 * x

    model = fr.Sequential([L.Dense(2, input_shape=(None, 3)), Doubler(name="twice"), L.LSTM(2)])
    model.predict(np.ones((1, 2, 3), np.float32))
    with pytest.raises(ValueError, match="'twice' \\(Doubler\\) is not supported"):
        model.export_onnx(str(tmp_path / "m.onnx"))
    assert os.listdir(tmp_path) == []


def test_stateful_layer_is_refused(tmp_path):
    model = fr.Sequential([L.LSTM(3, stateful=True, input_shape=(None, 2), name="carrier")])
    with pytest.raises(ValueError, match="carrier.*stateful"):
        model.export_onnx(str(tmp_path / "m.onnx"))
    bi = fr.Sequential([L.Bidirectional(L.GRU(3, stateful=True), input_shape=(None, 2), name="bi")])
    with pytest.raises(ValueError, match="'bi'.*stateful"):
        bi.export_onnx(str(tmp_path / "m.onnx"))
    assert os.listdir(tmp_path) == []


def test_float64_layers_unbuilt_models_and_subclassed_models_are_refused(tmp_path):
    path = str(tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="float64"):
        fr.Sequential([L.GRU(3, dtype="float64", input_shape=(None, 2), name="g64")]).export_onnx(path)
    with pytest.raises(ValueError, match="not built"):
        fr.Sequential([L.GRU(3)]).export_onnx(path)

    class Custom(fr.Model):
        def __init__(self):
            super().__init__()
            self.rnn = L.LSTM(2, input_shape=(None, 3))

        def forward(self, x, training=False, mask=None):
            return self.rnn(x, training=training, mask=mask)

    with pytest.raises(ValueError, match="subclassed"):
        Custom().export_onnx(path)
    with pytest.raises(TypeError, match="model"):
        fr.onnx.export(L.LSTM(2), path)
    assert os.listdir(tmp_path) == []


def test_a_call_with_initial_state_is_refused(tmp_path):
    x = fr.Input((None, 3))
    h = fr.Input((4,))
    y = L.GRU(4, name="dec")(x, initial_state=[h])
    with pytest.raises(ValueError, match="dec.*initial_state"):
        fr.Model([x, h], y).export_onnx(str(tmp_path / "m.onnx"))


def test_file_is_written_atomically(tmp_path, monkeypatch):
    model = fr.Sequential([L.LSTM(2, input_shape=(None, 3), seed=0)])
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    fr.onnx.export(model, path)  # a PathLike
    assert onnx.load(str(path)).producer_name == "fastrnn"
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]
    before = path.read_bytes()

    # a failure while writing leaves the old file and no temporary file
    def boom(self):
        raise OSError("disk full")

    monkeypatch.setattr(onnx.ModelProto, "SerializeToString", boom)
    with pytest.raises(OSError, match="disk full"):
        fr.onnx.export(model, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError):
        fr.onnx.export(model, tmp_path / "missing" / "m.onnx")
    with pytest.raises(IsADirectoryError):
        fr.onnx.export(model, tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_import_fastrnn_does_not_import_onnx():
    code = ("import sys, fastrnn\nassert 'onnx' not in sys.modules and 'onnxruntime' not in sys.modules\n"
            "fastrnn.onnx.export\nassert 'onnx' not in sys.modules\nprint(fastrnn.onnx.DEFAULT_OPSET)")
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "python"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "17"
    with pytest.raises(AttributeError, match="no attribute 'onnxx'"):
        fr.onnxx


# ------------------------------------------------------------------------------------ a trained lesson model
def test_trained_sentiment_model(tmp_path):
    sentences, labels, _ = load_sentiment(("amazon",))
    sentences, labels = sentences[:400], labels[:400].astype(np.float32).reshape(-1, 1)
    vec = WordVectorizer().fit(sentences[:300])
    x = vec(sentences, maxlen=20, padding="post", truncating="post").astype(np.int64)
    fr.set_seed(0)
    model = fr.Sequential([L.Embedding(vec.vocab_size, 16, mask_zero=True, input_length=20),
                           L.LSTM(16), L.Dense(1, activation="sigmoid")])
    model.compile(optimizer=fr.optim.Adam(learning_rate=0.01), loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(x[:300], labels[:300], epochs=3, batch_size=32, verbose=0)
    path = _export(model, tmp_path)
    test = x[300:]
    want = model.predict(test)
    assert want.std() > 0.05  # trained: the predictions are not one constant
    np.testing.assert_allclose(_run(path, test)[0], want, rtol=RTOL, atol=ATOL)
    # at another length (shorter sentences) and batch size
    short = vec(sentences[300:333], maxlen=11, padding="post", truncating="post").astype(np.int64)
    np.testing.assert_allclose(_run(path, short)[0], model.predict(short), rtol=RTOL, atol=ATOL)
