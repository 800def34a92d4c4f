"""Data helpers: time series, windowing, padding, vectorizers, batching, splits, shipped data sets."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fastrnn import data as D
from fastrnn import datasets

# ------------------------------------------------------------------ generate_time_series

def _lesson_generate_time_series(batch_size, n_steps):
    # The lesson's code, written out independently (global NumPy generator).
    freq1, freq2, offsets1, offsets2 = np.random.rand(4, batch_size, 1)
    time = np.linspace(0, 1, n_steps)
    series = 0.5 * np.sin((time - offsets1) * (freq1 * 10 + 10))
    series += 0.2 * np.sin((time - offsets2) * (freq2 * 20 + 20))
    series += 0.1 * (np.random.rand(batch_size, n_steps) - 0.5)
    return series[..., np.newaxis].astype(np.float32)


def test_time_series_matches_lesson_with_global_seed():
    np.random.seed(42)
    expected = _lesson_generate_time_series(64, 51)
    np.random.seed(42)
    got = D.generate_time_series(64, 51)
    assert got.shape == (64, 51, 1) and got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    # an int seed reproduces np.random.seed(seed) + the lesson's code without touching global state
    np.random.seed(42)
    np.testing.assert_array_equal(D.generate_time_series(64, 51, seed=42), expected)


def test_time_series_seeding_and_range():
    a = D.generate_time_series(200, 30, seed=1)
    b = D.generate_time_series(200, 30, seed=1)
    c = D.generate_time_series(200, 30, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.abs(a).max() <= 0.5 + 0.2 + 0.05 + 1e-6
    g = D.generate_time_series(5, 7, seed=np.random.default_rng(3))
    assert g.shape == (5, 7, 1)
    # the naive forecast's MSE on this family is about 0.02 (as in the lesson)
    s = D.generate_time_series(4000, 51, seed=0)
    mse = np.mean((s[:, -2, 0] - s[:, -1, 0]) ** 2)
    assert 0.012 < mse < 0.03


@pytest.mark.parametrize("bad", [0, -3])
def test_time_series_bad_sizes(bad):
    with pytest.raises(ValueError, match="batch_size"):
        D.generate_time_series(bad, 10)
    with pytest.raises(ValueError, match="n_steps"):
        D.generate_time_series(3, bad)
    with pytest.raises(TypeError, match="n_steps"):
        D.generate_time_series(3, 2.5)
    with pytest.raises(TypeError, match="seed"):
        D.generate_time_series(3, 4, seed="x")


# ------------------------------------------------------------------ window

def test_window_1d():
    s = np.arange(10.0)
    X, y = D.window(s, 3)
    assert X.shape == (7, 3, 1) and y.shape == (7, 1)
    for m in range(7):
        np.testing.assert_array_equal(X[m, :, 0], s[m:m + 3])
        assert y[m, 0] == s[m + 3]


def test_window_horizon_stride_batch():
    s = np.arange(2 * 12 * 2, dtype=np.float32).reshape(2, 12, 2)
    X, y = D.window(s, 4, horizon=3, stride=2)
    starts = list(range(0, 12 - 4 - 3 + 1, 2))  # 0, 2, 4
    assert X.shape == (2 * len(starts), 4, 2) and y.shape == (2 * len(starts), 3, 2)
    k = 0
    for b in range(2):
        for st in starts:
            np.testing.assert_array_equal(X[k], s[b, st:st + 4])
            np.testing.assert_array_equal(y[k], s[b, st + 4:st + 7])
            k += 1
    # the lesson's split of one long row: last step is the target
    X, y = D.window(s[:1, :5], 4)
    np.testing.assert_array_equal(X[0], s[0, :4])
    np.testing.assert_array_equal(y[0], s[0, 4])


def test_window_errors():
    with pytest.raises(ValueError, match="window"):
        D.window(np.arange(5.0), 5)
    with pytest.raises(ValueError, match="shape"):
        D.window(np.zeros((2, 3, 4, 5)), 2)
    with pytest.raises(ValueError, match="horizon"):
        D.window(np.arange(5.0), 2, horizon=0)


# ------------------------------------------------------------------ pad_sequences

def test_pad_sequences_keras_semantics():
    seqs = [[1, 2, 3], [4, 5], [6], []]
    got = D.pad_sequences(seqs)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, [[1, 2, 3], [0, 4, 5], [0, 0, 6], [0, 0, 0]])
    got = D.pad_sequences(seqs, padding="post")
    np.testing.assert_array_equal(got, [[1, 2, 3], [4, 5, 0], [6, 0, 0], [0, 0, 0]])
    got = D.pad_sequences(seqs, maxlen=2)  # truncating 'pre' keeps the end
    np.testing.assert_array_equal(got, [[2, 3], [4, 5], [0, 6], [0, 0]])
    got = D.pad_sequences(seqs, maxlen=2, truncating="post", padding="post", value=-1)
    np.testing.assert_array_equal(got, [[1, 2], [4, 5], [6, -1], [-1, -1]])
    got = D.pad_sequences([[0.5, 1.5]], maxlen=3, dtype="float32", value=9)
    np.testing.assert_array_equal(got, np.array([[9, 0.5, 1.5]], np.float32))
    assert D.pad_sequences([[1, 2]], maxlen=0).shape == (1, 0)


def test_pad_sequences_vectors():
    seqs = [np.ones((2, 3)), np.full((1, 3), 2.0)]
    got = D.pad_sequences(seqs, dtype="float32", padding="post")
    assert got.shape == (2, 2, 3)
    np.testing.assert_array_equal(got[1, 1], np.zeros(3))
    np.testing.assert_array_equal(got[1, 0], np.full(3, 2.0))
    with pytest.raises(ValueError, match="sample shape"):
        D.pad_sequences([np.ones((2, 3)), np.ones((2, 4))], dtype="float32")


def test_pad_sequences_errors():
    with pytest.raises(ValueError, match="padding"):
        D.pad_sequences([[1]], padding="middle")
    with pytest.raises(ValueError, match="truncating"):
        D.pad_sequences([[1]], truncating="both")
    with pytest.raises(ValueError, match=r"sequences\[1\]"):
        D.pad_sequences([[1], 5])
    with pytest.raises(ValueError, match="maxlen"):
        D.pad_sequences([[1]], maxlen=-1)
    with pytest.raises(TypeError, match="maxlen"):
        D.pad_sequences([[1]], maxlen=2.0)


def test_to_categorical():
    got = D.to_categorical([[0, 2], [1, 1]], num_classes=3)
    assert got.shape == (2, 2, 3)
    np.testing.assert_array_equal(got.argmax(-1), [[0, 2], [1, 1]])
    np.testing.assert_array_equal(got.sum(-1), np.ones((2, 2)))
    with pytest.raises(ValueError, match="num_classes"):
        D.to_categorical([3], num_classes=3)
    with pytest.raises(TypeError, match="integers"):
        D.to_categorical([0.5])


# ------------------------------------------------------------------ vectorizers

def test_char_vectorizer_hello():
    v = D.CharVectorizer(pad_token=None, oov_token=None).fit("hello")
    assert v.vocabulary == ["e", "h", "l", "o"] and len(v) == 4
    ids = v.encode("hell")
    assert ids.dtype == np.int32
    assert v.decode(ids) == "hell"
    assert v.decode(v.encode("ello")) == "ello"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        v.encode("help")


def test_char_vectorizer_reserved_ids_and_roundtrip():
    text = "To be, or not to be"
    v = D.CharVectorizer().fit(text)
    assert v.pad_id == 0 and v.oov_id == 1
    assert v.vocabulary[:2] == ["", "[UNK]"]
    assert set(v.vocabulary[2:]) == set(text) and v.vocabulary[2:] == sorted(set(text))
    assert v.decode(v.encode(text)) == text
    ids = v.encode("zebra")  # z is unknown
    assert ids[0] == v.oov_id and v.decode(ids).startswith("[UNK]")
    batch = v(["ab", "tot"], maxlen=4)
    assert batch.shape == (2, 4) and batch[0, 2:].tolist() == [0, 0]
    assert v.decode(batch) == ["[UNK]b", "tot"]
    v2 = D.CharVectorizer.from_config(json.loads(json.dumps(v.get_config())))
    assert v2.vocabulary == v.vocabulary
    np.testing.assert_array_equal(v2.encode(text), v.encode(text))
    lower = D.CharVectorizer(lower=True).fit("AbA")
    assert lower.vocabulary[2:] == ["a", "b"]


def test_word_vectorizer():
    texts = ["The cat sat.", "the CAT, the hat!", "A dog"]
    v = D.WordVectorizer().fit(texts)
    # counts: the 3, cat 2, others 1 (ties alphabetical)
    assert v.vocabulary == ["", "[UNK]", "the", "cat", "a", "dog", "hat", "sat"]
    assert v.tokenize("Hello, World!") == ["hello", "world"]
    ids = v.encode("the cat ate")
    assert ids.tolist() == [2, 3, 1]
    assert v.decode(ids) == "the cat [UNK]"
    capped = D.WordVectorizer(max_tokens=4).fit(texts)
    assert capped.vocabulary == ["", "[UNK]", "the", "cat"] and capped.vocab_size == 4
    assert capped.encode("dog").tolist() == [1]
    pre = v(["cat", "the cat sat a dog"], maxlen=3, padding="pre", truncating="pre")
    np.testing.assert_array_equal(pre, [[0, 0, 3], [7, 4, 5]])
    raw = D.WordVectorizer(lower=False, strip_punctuation=False).fit(["Hi, hi"])
    assert raw.vocabulary[2:] == ["Hi,", "hi"]
    mc = D.WordVectorizer(min_count=2).fit(texts)
    assert mc.vocabulary[2:] == ["the", "cat"]


def test_vectorizer_errors():
    with pytest.raises(RuntimeError, match="not fitted"):
        D.WordVectorizer().encode("x")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        D.WordVectorizer().fit(["a", 3])
    with pytest.raises(ValueError, match="max_tokens"):
        D.WordVectorizer(max_tokens=2)
    v = D.CharVectorizer().fit("abc")
    with pytest.raises(ValueError, match="ids must be in"):
        v.decode([0, 99])
    with pytest.raises(ValueError, match="differ"):
        D.CharVectorizer(pad_token="x", oov_token="x")


# ------------------------------------------------------------------ batches and split

def test_batches_order_and_shuffle():
    x = np.arange(10)[:, None] * np.ones((1, 3))
    y = np.arange(10)
    it = D.batches(x, y, batch_size=4)
    assert len(it) == 3
    got = list(it)
    assert [len(b[1]) for b in got] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in got]), y)
    sh = D.batches(x, y, batch_size=3, shuffle=True, seed=7)
    e1 = np.concatenate([yb for _, yb in sh])
    e2 = np.concatenate([yb for _, yb in sh])
    assert sorted(e1.tolist()) == list(range(10)) and sorted(e2.tolist()) == list(range(10))
    assert not np.array_equal(e1, e2)  # a new permutation every pass
    for xb, yb in sh:
        np.testing.assert_array_equal(xb[:, 0], yb)  # x and y stay aligned
    again = D.batches(x, y, batch_size=3, shuffle=True, seed=7)
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in again]), e1)
    drop = D.batches(x, batch_size=4, drop_remainder=True)
    assert len(drop) == 2 and [len(b) for b in drop] == [4, 4]
    multi = list(D.batches([x, y], y, batch_size=5))
    assert isinstance(multi[0][0], list) and len(multi[0][0]) == 2


def test_batches_plain_python_lists_are_samples():
    x = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    y = [0, 1, 2]
    it = D.batches(x, y, batch_size=2)
    assert len(it) == 2
    (xb, yb), (xb2, yb2) = list(it)
    np.testing.assert_array_equal(xb, [[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(yb, [0, 1])
    np.testing.assert_array_equal(xb2, [[5.0, 6.0]])
    np.testing.assert_array_equal(yb2, [2])
    # a tuple of arrays is still several inputs
    multi = list(D.batches((np.zeros((3, 2)), np.ones((3, 4))), batch_size=2))
    assert isinstance(multi[0], list) and multi[0][1].shape == (2, 4)


def test_batches_errors():
    with pytest.raises(ValueError, match="same number of samples"):
        D.batches(np.zeros((5, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="batch_size"):
        D.batches(np.zeros((5, 2)), batch_size=0)


def test_train_valid_test_split():
    series = D.generate_time_series(100, 6, seed=0)
    tr, va, te = D.train_valid_test_split(series, valid=20, test=10)
    assert (len(tr), len(va), len(te)) == (70, 20, 10)
    np.testing.assert_array_equal(np.concatenate([tr, va, te]), series)
    X, y = series[:, :-1], series[:, -1]
    (xtr, ytr), (xva, yva), (xte, yte) = D.train_valid_test_split(X, y, valid=0.2, test=0.1, shuffle=True, seed=3)
    assert len(xtr) == len(ytr) == 70 and len(xva) == 20 and len(xte) == 10
    # rows stay paired after shuffling and nothing is lost or duplicated
    full = np.concatenate([xtr, xva, xte])
    assert sorted(map(float, full[:, 0, 0])) == sorted(map(float, X[:, 0, 0]))
    idx = {float(v): i for i, v in enumerate(X[:, 0, 0])}
    for xs, ys in ((xtr, ytr), (xva, yva), (xte, yte)):
        for a, b in zip(xs, ys):
            np.testing.assert_array_equal(b, y[idx[float(a[0, 0])]])
    with pytest.raises(ValueError, match="exceed"):
        D.train_valid_test_split(X, valid=60, test=50)
    with pytest.raises(ValueError, match="same number of samples"):
        D.train_valid_test_split(X, y[:5])
    with pytest.raises(ValueError, match="valid"):
        D.train_valid_test_split(X, valid=1.5)


# ------------------------------------------------------------------ shipped data sets

def test_load_sentiment():
    sentences, labels, source = datasets.load_sentiment()
    assert len(sentences) == len(labels) == len(source) == 3000
    assert labels.dtype.kind == "i" and set(np.unique(labels).tolist()) == {0, 1}
    for site in ("imdb", "amazon", "yelp"):
        sel = np.array([s == site for s in source])
        assert sel.sum() == 1000 and labels[sel].sum() == 500  # balanced, as the readme says
    assert all(isinstance(s, str) and s and s == s.strip() and "\t" not in s for s in sentences)
    assert not any("\x85" in s for s in sentences)
    assert "Crust is not good." in sentences
    only = datasets.load_sentiment("yelp")
    assert len(only[0]) == 1000 and set(only[2]) == {"yelp"}
    with pytest.raises(ValueError, match="sources"):
        datasets.load_sentiment(["twitter"])
    assert "Kotzias" in datasets.SENTIMENT_CITATION


def test_load_tinyshakespeare():
    text = datasets.load_tinyshakespeare()
    assert 250_000 < len(text) <= 300_000
    assert text.startswith("First Citizen:\n")
    assert datasets.load_tinyshakespeare(max_chars=100) == text[:100]
    with pytest.raises(ValueError, match="max_chars"):
        datasets.load_tinyshakespeare(max_chars=-1)
