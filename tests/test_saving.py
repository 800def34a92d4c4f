"""save/load: round trips, identical continued training, atomic writes, corrupt and foreign files."""
import json
import os
import zipfile

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import _saving_io, layers, losses, metrics, optim, saving
from fastrnn.models import Model, Sequential


def _data(seed=0, B=24, T=7):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 30, size=(B, T))
    for b in range(B):
        x[b, rng.integers(3, T + 1):] = 0
    y = (x[:, :1] % 2).astype(np.float32)
    return x, y


def _model(seed=0):
    layers.set_seed(seed)
    m = Sequential([layers.Embedding(30, 5, mask_zero=True), layers.GRU(6, return_sequences=True),
                    layers.LSTM(4), layers.Dense(1, activation="sigmoid")])
    m.compile(optimizer=optim.Adam(optim.ExponentialDecay(0.01, 5, 0.9), clipnorm=1.0),
              loss="binary_crossentropy", metrics=["accuracy"])
    return m


def test_save_load_gives_identical_predictions_and_continued_training(tmp_path):
    x, y = _data()
    m = _model()
    m.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=1)
    path = str(tmp_path / "model.fastrnn")
    m.save(path)
    back = fr.load_model(path)
    assert isinstance(back, Sequential) and [lay.name for lay in back.layers] == [lay.name for lay in m.layers]
    assert [type(lay).__name__ for lay in back.layers] == ["Embedding", "GRU", "LSTM", "Dense"]
    np.testing.assert_array_equal(back.predict(x), m.predict(x))
    # compile configuration and the full optimizer state came back
    assert isinstance(back.loss, losses.BinaryCrossentropy)
    assert isinstance(back.compiled_metrics[0], metrics.BinaryAccuracy) and back.compiled_metrics[0].name == "accuracy"
    assert isinstance(back.optimizer, optim.Adam) and back.optimizer.clipnorm == 1.0
    assert isinstance(back.optimizer.learning_rate, optim.ExponentialDecay)
    assert back.optimizer.iterations == m.optimizer.iterations == 6
    for k in m.optimizer.state_dict()["slots"]:
        for a, b in zip(m.optimizer.state_dict()["slots"][k], back.optimizer.state_dict()["slots"][k]):
            np.testing.assert_array_equal(a, b)
    h1 = m.fit(x, y, epochs=1, batch_size=8, verbose=0, seed=2)
    h2 = back.fit(x, y, epochs=1, batch_size=8, verbose=0, seed=2)
    assert h1.history == h2.history
    for a, b in zip(m.get_weights(), back.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_fresh_optimizer_would_train_differently(tmp_path):
    # the continued-training check above is meaningful: without the optimizer state the weights differ
    x, y = _data()
    m = _model()
    m.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=1)
    m.save(str(tmp_path / "m.fastrnn"))
    back = fr.load_model(str(tmp_path / "m.fastrnn"), compile=False)
    assert back.optimizer is None
    back.compile(optimizer=optim.Adam(optim.ExponentialDecay(0.01, 5, 0.9), clipnorm=1.0),
                 loss="binary_crossentropy")
    m.fit(x, y, epochs=1, batch_size=8, verbose=0, seed=2)
    back.fit(x, y, epochs=1, batch_size=8, verbose=0, seed=2)
    assert not np.array_equal(m.get_weights()[1], back.get_weights()[1])


def test_file_layout_is_zip_of_json_and_npy(tmp_path):
    m = _model()
    m.build((None,))
    path = tmp_path / "m.fastrnn"
    m.save(str(path))
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert names[0] == "fastrnn.json"
        marker = json.loads(zf.read("fastrnn.json"))
        assert marker["format"] == "fastrnn" and marker["version"] == 1 and marker["kind"] == "model"
        desc = json.loads(zf.read("model.json"))
        assert desc["class_name"] == "Sequential"
        assert [c["class_name"] for c in desc["config"]["layers"]] == ["Embedding", "GRU", "LSTM", "Dense"]
        assert desc["compile_config"]["loss"]["class_name"] == "BinaryCrossentropy"
        assert all(n.endswith(".npy") for n in names[2:])
        w0 = np.load(zf.open(desc["weights"][0]["array"]["__ndarray__"]), allow_pickle=False)
    np.testing.assert_array_equal(w0, m.get_weights()[0])
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_save_weights_and_load_weights(tmp_path):
    x, _ = _data()
    m = _model(seed=1)
    m.build((None,))
    m.save_weights(str(tmp_path / "w.fastrnn"))
    other = _model(seed=2)
    assert not np.array_equal(other.predict(x), m.predict(x))
    other.load_weights(str(tmp_path / "w.fastrnn"))
    np.testing.assert_array_equal(other.predict(x), m.predict(x))
    with pytest.raises(ValueError, match="holds only weights.*load_weights"):
        fr.load_model(str(tmp_path / "w.fastrnn"))
    layers.set_seed(0)
    wrong = Sequential([layers.Embedding(30, 5), layers.GRU(7), layers.Dense(1)])
    wrong.build((None,))
    with pytest.raises(ValueError, match="holds 10 weight arrays but model .* has 7 parameters"):
        wrong.load_weights(str(tmp_path / "w.fastrnn"))
    layers.set_seed(0)
    wrong = Sequential([layers.Embedding(30, 5), layers.GRU(7, return_sequences=True), layers.LSTM(4),
                        layers.Dense(1)])
    wrong.build((None,))
    with pytest.raises(ValueError, match=r"weight 'gru.*/w_ih' has shape \(18, 5\) but .* has shape \(21, 5\)"):
        wrong.load_weights(str(tmp_path / "w.fastrnn"))


def test_failure_mid_save_leaves_the_old_file_intact(tmp_path, monkeypatch):
    m = _model()
    m.build((None,))
    path = tmp_path / "m.fastrnn"
    m.save(str(path))
    old = path.read_bytes()
    x, y = _data()
    m.fit(x, y, epochs=1, batch_size=8, verbose=0)  # the weights change

    real = _saving_io._write_array  # the container's writer (fastrnn._saving_io) writes each array
    calls = []

    def failing(zf, name, arr):
        calls.append(name)
        if len(calls) == 3:
            raise OSError("disk full (simulated)")
        real(zf, name, arr)

    monkeypatch.setattr(_saving_io, "_write_array", failing)
    with pytest.raises(OSError, match="disk full"):
        m.save(str(path))
    assert len(calls) == 3
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["m.fastrnn"]  # no temporary file left behind
    fr.load_model(str(path))  # still loads
    # and a new path is not created at all by a failed save
    with pytest.raises(OSError):
        calls.clear()
        m.save(str(tmp_path / "new.fastrnn"))
    assert os.listdir(tmp_path) == ["m.fastrnn"]
    monkeypatch.setattr(_saving_io, "_write_array", real)
    m.save(str(path))
    assert path.read_bytes() != old


def test_failure_before_replace_keeps_old_file(tmp_path, monkeypatch):
    m = _model()
    m.build((None,))
    path = tmp_path / "m.fastrnn"
    m.save(str(path))
    old = path.read_bytes()

    def boom(src, dst):
        raise OSError("replace failed (simulated)")

    monkeypatch.setattr(saving.os, "replace", boom)
    with pytest.raises(OSError, match="replace failed"):
        m.save(str(path))
    assert path.read_bytes() == old and os.listdir(tmp_path) == ["m.fastrnn"]


@pytest.fixture
def saved(tmp_path):
    m = _model()
    m.build((None,))
    path = tmp_path / "m.fastrnn"
    m.save(str(path))
    return path


def test_truncated_file(saved):
    data = saved.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 100):
        saved.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="not a fastrnn file.*truncated|corrupt"):
            fr.load_model(str(saved))


def test_corrupted_bytes_fail_the_crc(saved):
    data = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as zf:
        info = zf.getinfo(zf.namelist()[-1])
    pos = info.header_offset + 30 + len(info.filename) + 140  # inside the last array's data
    data[pos] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt or truncated fastrnn file"):
        fr.load_model(str(saved))


def test_every_bit_flip_in_the_zip_directory_loads_or_raises_value_error(tmp_path):
    """A damaged archive is a ValueError (or, where the flipped bit is one zipfile ignores, the
    same model): flipping each bit of the central directory once, zipfile alone raises
    NotImplementedError, RuntimeError, zlib.error or struct.error for some of them."""
    m = Sequential([layers.LSTM(3), layers.Dense(2)])
    m.build((4, 2))
    path = tmp_path / "m.fastrnn"
    m.save(str(path))
    data = path.read_bytes()
    eocd = data.rfind(b"PK\x05\x06")
    cd = int.from_bytes(data[eocd + 16:eocd + 20], "little")
    want = m.get_weights()
    loaded = raised = 0
    bad = tmp_path / "bad.fastrnn"
    for pos in range(cd, eocd):
        for bit in range(8):
            b = bytearray(data)
            b[pos] ^= 1 << bit
            bad.write_bytes(bytes(b))
            try:
                got = fr.load_model(str(bad), compile=False).get_weights()
            except ValueError:
                raised += 1
                continue
            loaded += 1
            assert len(got) == len(want) and all(np.array_equal(g, w) for g, w in zip(got, want))
    assert raised > 0 and loaded > 0  # both outcomes occur: the sweep covers the fields that matter


def test_foreign_files(tmp_path):
    npz = tmp_path / "arrays.npz"
    np.savez(npz, a=np.zeros(3))
    with pytest.raises(ValueError, match="not a fastrnn file \\(no 'fastrnn.json' format marker\\)"):
        fr.load_model(str(npz))
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(ValueError, match="not a fastrnn file \\(not a readable zip archive"):
        fr.load_model(str(txt))
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("fastrnn.json", json.dumps({"format": "somethingelse", "version": 1}))
    with pytest.raises(ValueError, match="not a fastrnn file \\(format marker"):
        fr.load_model(str(other))
    newer = tmp_path / "newer.fastrnn"
    with zipfile.ZipFile(newer, "w") as zf:
        zf.writestr("fastrnn.json", json.dumps({"format": "fastrnn", "version": 99, "kind": "model"}))
    with pytest.raises(ValueError, match="format version 99, newer than this fastrnn reads"):
        fr.load_model(str(newer))
    badjson = tmp_path / "badjson.fastrnn"
    with zipfile.ZipFile(badjson, "w") as zf:
        zf.writestr("fastrnn.json", json.dumps({"format": "fastrnn", "version": 1, "kind": "model"}))
        zf.writestr("model.json", "{not json")
    with pytest.raises(ValueError, match="entry 'model.json' is not valid JSON"):
        fr.load_model(str(badjson))
    with pytest.raises(FileNotFoundError, match="no such file"):
        fr.load_model(str(tmp_path / "missing.fastrnn"))


def _rewrite_model_json(src, dst, edit):
    with zipfile.ZipFile(src) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    desc = json.loads(entries["model.json"])
    edit(desc)
    entries["model.json"] = json.dumps(desc).encode()
    with zipfile.ZipFile(dst, "w") as zf:
        for n, data in entries.items():
            zf.writestr(n, data)
    return str(dst)


def test_malformed_compile_config_names_the_file(saved, tmp_path):
    def drop_optimizer(d):
        del d["compile_config"]["optimizer"]

    def bad_loss(d):
        d["compile_config"]["loss"] = {"class_name": "BinaryCrossentropy", "config": 5}

    def bad_state(d):
        d["optimizer_state"] = {"class_name": "Adam"}

    for i, (edit, what) in enumerate([(drop_optimizer, r"compile_config lacks 'optimizer'"),
                                      (bad_loss, "compile"),
                                      (bad_state, "optimizer state")]):
        path = _rewrite_model_json(saved, tmp_path / f"bad{i}.fastrnn", edit)
        with pytest.raises(ValueError, match=what) as info:
            fr.load_model(path)
        assert path in str(info.value)
        fr.load_model(path, compile=False)  # the rest of the file is fine


@pytest.mark.parametrize("config", [["not", "a", "dict"], "text", 7])
def test_model_config_that_is_not_a_dict_is_a_value_error(saved, tmp_path, config):
    def edit(d):
        d["config"] = config

    path = _rewrite_model_json(saved, tmp_path / "badcfg.fastrnn", edit)
    with pytest.raises(ValueError, match="cannot rebuild the model from its config") as info:
        fr.load_model(path)
    assert path in str(info.value)


def test_pickled_array_entry_is_refused(saved, tmp_path):
    # rewrite the first weight array as an object (pickled) .npy entry: loading must refuse it
    with zipfile.ZipFile(saved) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    desc = json.loads(entries["model.json"])
    name = desc["weights"][0]["array"]["__ndarray__"]
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    entries[name] = buf.getvalue()
    evil = tmp_path / "evil.fastrnn"
    with zipfile.ZipFile(evil, "w") as zf:
        for n, data in entries.items():
            zf.writestr(n, data)
    with pytest.raises(ValueError, match="is not a valid .npy array"):
        fr.load_model(str(evil))


class Tiny(Model):
    def __init__(self, units=3):
        super().__init__()
        self.units = units
        self.rnn = layers.SimpleRNN(units)
        self.out = layers.Dense(2)

    def get_config(self):
        return {"units": self.units}

    def forward(self, x, training=False, mask=None):
        return self.out(self.rnn(x, training=training, mask=mask), training=training)

    def backward(self, dy):
        return self.rnn.backward(self.out.backward(dy))


def test_subclassed_model_and_custom_objects(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 4, 2)).astype(np.float32)
    y = rng.normal(size=(8, 2)).astype(np.float32)

    def my_loss(y_true, y_pred):
        d = y_pred - y_true
        return float((d * d).mean()), 2 * d / d.size

    layers.set_seed(3)
    m = Tiny(units=5)
    m.compile(optimizer=optim.SGD(0.1, momentum=0.9), loss=my_loss)
    m.fit(x, y, epochs=2, batch_size=4, verbose=0, shuffle=False)
    path = str(tmp_path / "tiny.fastrnn")
    m.save(path)
    with pytest.raises(ValueError, match="custom model class 'Tiny'.*custom_objects"):
        fr.load_model(path)
    with pytest.raises(ValueError, match="custom function 'my_loss'.*custom_objects"):
        fr.load_model(path, custom_objects={"Tiny": Tiny})
    back = fr.load_model(path, custom_objects={"Tiny": Tiny, "my_loss": my_loss})
    assert back.units == 5
    np.testing.assert_array_equal(back.predict(x), m.predict(x))
    m.fit(x, y, epochs=1, batch_size=4, verbose=0, shuffle=False)
    back.fit(x, y, epochs=1, batch_size=4, verbose=0, shuffle=False)
    for a, b in zip(m.get_weights(), back.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_frozen_wrappers_stay_frozen_after_load(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.random((8, 4, 5)).astype(np.float32)
    y = rng.random((8, 4, 3)).astype(np.float32)
    m = Sequential([layers.Bidirectional(layers.LSTM(3, return_sequences=True), input_shape=(4, 5)),
                    layers.TimeDistributed(layers.Dense(3))])
    m.layers[0].trainable = False
    m.layers[1].trainable = False
    m.compile("adam", "mse")
    path = str(tmp_path / "frozen.fastrnn")
    m.save(path)
    back = fr.load_model(path)
    assert all(not p.trainable for p in back.parameters())
    w0 = back.get_weights()
    back.fit(x, y, epochs=1, verbose=0)
    for a, b in zip(w0, back.get_weights()):
        np.testing.assert_array_equal(a, b)


class StatefulTiny(Tiny):
    def __init__(self, units=3):
        super().__init__(units)
        self.rnn = layers.SimpleRNN(units, stateful=True)


def test_loaded_custom_model_with_stateful_layer_trains_on_its_batch_size(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(8, 4, 2)).astype(np.float32)
    y = rng.normal(size=(8, 2)).astype(np.float32)
    m = StatefulTiny()
    m.compile(optimizer="sgd", loss="mse")
    m.fit(x, y, epochs=1, batch_size=8, verbose=0)
    path = str(tmp_path / "stateful.fastrnn")
    m.save(path)
    back = fr.load_model(path, custom_objects={"StatefulTiny": StatefulTiny})
    assert back.rnn.states is None
    back.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert back.rnn.states[0].shape == (8, 3)


def test_save_errors(tmp_path):
    m = Sequential([layers.Dense(2)])
    with pytest.raises(ValueError, match="is not built"):
        m.save(str(tmp_path / "m.fastrnn"))
    m.build((3,))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        m.save(str(tmp_path / "no" / "such" / "dir.fastrnn"))
    m.save(str(tmp_path / "uncompiled.fastrnn"))  # an uncompiled model saves and loads uncompiled
    back = fr.load_model(str(tmp_path / "uncompiled.fastrnn"))
    assert back.optimizer is None and back.count_params() == 8


def test_save_through_a_symlink_and_to_a_bytes_path(tmp_path):
    m = Sequential([layers.Dense(2)])
    m.build((3,))
    target = tmp_path / "real.fastrnn"
    link = tmp_path / "link.fastrnn"
    m.save(str(target))
    link.symlink_to(target)
    m.layers[0].kernel.value[...] = 7.0
    m.save(str(link))  # writes the file the link points to; the link stays a link
    assert link.is_symlink() and os.path.realpath(link) == os.path.realpath(target)
    assert np.all(fr.load_model(str(target)).layers[0].kernel.value == 7.0)
    m.save(os.fsencode(tmp_path / "bytes.fastrnn"))
    np.testing.assert_array_equal(fr.load_model(os.fsencode(tmp_path / "bytes.fastrnn")).get_weights()[0], 7.0)
    (tmp_path / "junk.fastrnn").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"^'[^b].*junk\.fastrnn' is not a fastrnn file"):
        fr.load_model(os.fsencode(tmp_path / "junk.fastrnn"))  # the path as text, not b'...'
    from fastrnn import callbacks

    m.compile(optimizer="sgd", loss="mse")
    ck = callbacks.ModelCheckpoint(os.fsencode(tmp_path / "ck_{epoch}.fastrnn"), monitor="loss")
    m.fit(np.ones((4, 3), np.float32), np.ones((4, 2), np.float32), epochs=1, verbose=0, callbacks=[ck])
    assert (tmp_path / "ck_1.fastrnn").is_file()
    # a name that is not UTF-8, announced with verbose=1 on a strict UTF-8 stdout (a terminal's)
    import io
    import sys

    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    ck = callbacks.ModelCheckpoint(os.fsencode(tmp_path) + b"/\xff_{epoch}.fastrnn", monitor="loss", verbose=1,
                                   save_best_only=True)
    saved_stdout, sys.stdout = sys.stdout, out
    try:
        m.fit(np.ones((4, 3), np.float32), np.ones((4, 2), np.float32), epochs=1, verbose=0, callbacks=[ck])
    finally:
        sys.stdout = saved_stdout
    assert os.path.isfile(os.fsencode(tmp_path) + b"/\xff_1.fastrnn")


@pytest.mark.parametrize("name", ["m.keras", "M.KERAS", "w.weights.h5", "w.hdf5"])
def test_keras_file_names_are_refused_with_the_way_to_write_one(tmp_path, name):
    model = fr.Sequential([fr.layers.Dense(2, input_shape=(3,))])
    path = tmp_path / name
    with pytest.raises(ValueError, match=r"Keras cannot load.*fr\.interop\.to_keras\(model\)\.save\(path\)"):
        model.save(path)
    with pytest.raises(ValueError, match="save_weights: .* a Keras file name"):
        model.save_weights(str(path).encode())
    assert not path.exists() and not list(tmp_path.iterdir())  # nothing written
    model.save(tmp_path / "m.fastrnn")  # fastrnn's own names still work
    assert (tmp_path / "m.fastrnn").is_file()


class _Halving(fr.schedules.LearningRateSchedule):
    """A user's schedule: the rate halves every ``every`` steps."""

    def __init__(self, initial, every):
        self.initial, self.every = initial, every

    def __call__(self, step):
        return self.initial * 0.5 ** (step // self.every)

    def get_config(self):
        return {"initial": self.initial, "every": self.every}


def test_custom_schedule_reloads_with_its_optimizer_state(tmp_path):
    fr.set_seed(0)
    x = np.random.default_rng(0).random((16, 4, 2)).astype(np.float32)
    y = x.sum(axis=(1, 2))[:, None]
    model = Sequential([layers.GRU(3), layers.Dense(1)])
    model.compile(optimizer=optim.Adam(learning_rate=_Halving(0.01, 2)), loss="mse")
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    model.save(tmp_path / "m.fastrnn")
    with pytest.raises(ValueError, match="_Halving"):
        fr.load_model(tmp_path / "m.fastrnn")  # the class is not known without custom_objects
    back = fr.load_model(tmp_path / "m.fastrnn", custom_objects={"_Halving": _Halving})
    assert back.optimizer.iterations == model.optimizer.iterations == 8
    assert back.optimizer.current_learning_rate == model.optimizer.current_learning_rate == 0.01 * 0.5 ** 4
    np.testing.assert_array_equal(back.predict(x), model.predict(x))
