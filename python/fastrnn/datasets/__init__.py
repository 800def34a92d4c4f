"""Small real data sets shipped with fastrnn, for the examples and for quick experiments.

- :func:`load_sentiment`: the UCI "Sentiment Labelled Sentences" data set, 3,000 review sentences
  (1,000 each from IMDb, Amazon and Yelp) labelled positive (1) or negative (0). Created for
  D. Kotzias, M. Denil, N. de Freitas and P. Smyth, "From Group to Individual Labels using Deep
  Features", KDD 2015; please cite the paper when you use the data (see ``sentiment/readme.txt``).
- :func:`load_tinyshakespeare`: the first ~300 KB of the "tiny shakespeare" text used for
  character-level language models (public-domain Shakespeare, as collected for char-rnn).
"""
from __future__ import annotations

import numbers
from importlib import resources

import numpy as np

__all__ = ["SENTIMENT_CITATION", "SENTIMENT_SOURCES", "load_sentiment", "load_tinyshakespeare"]

SENTIMENT_SOURCES = {"imdb": "imdb_labelled.txt", "amazon": "amazon_cells_labelled.txt",
                     "yelp": "yelp_labelled.txt"}
SENTIMENT_CITATION = ("D. Kotzias, M. Denil, N. de Freitas, P. Smyth. 'From Group to Individual Labels "
                      "using Deep Features', KDD 2015.")
_SHAKESPEARE = "tinyshakespeare_300k.txt"


def _read_text(*parts):
    ref = resources.files(__name__)
    for p in parts:
        ref = ref / p
    # newline="" keeps the text as stored: the IMDb file contains U+0085 (NEL) inside sentences,
    # which must not be taken for a line break.
    with ref.open("r", encoding="utf-8", newline="") as f:
        return f.read()


def load_sentiment(sources=("imdb", "amazon", "yelp")):
    """The labelled review sentences: ``(sentences, labels, source)``.

    sentences: list of str (surrounding whitespace stripped, the IMDb file's U+0085 read as the
    ellipsis "..." it stands for); labels: int64 array of 0/1;
    source: list of str naming the site of each sentence ('imdb', 'amazon', 'yelp'), in file
    order (all IMDb sentences first). ``sources`` selects a subset of the three files.
    Cite Kotzias et al., KDD 2015 (:data:`SENTIMENT_CITATION`) when you use the data.
    """
    if isinstance(sources, str):
        sources = (sources,)
    sentences, labels, origin = [], [], []
    for src in sources:
        if src not in SENTIMENT_SOURCES:
            raise ValueError(f"sources must name some of {sorted(SENTIMENT_SOURCES)}, got {src!r}")
        text = _read_text("sentiment", SENTIMENT_SOURCES[src])
        for lineno, line in enumerate(text.split("\n"), 1):
            line = line.rstrip("\r")
            if not line.strip():
                continue
            sentence, sep, label = line.rpartition("\t")
            if not sep or label.strip() not in ("0", "1"):
                raise ValueError(f"{SENTIMENT_SOURCES[src]} line {lineno}: expected 'sentence<TAB>0|1', got {line!r}")
            # The IMDb file writes an ellipsis as U+0085 (cp1252's 0x85 decoded as Latin-1).
            sentences.append(sentence.replace("\x85", "...").strip())
            labels.append(int(label))
            origin.append(src)
    return sentences, np.asarray(labels, dtype=np.int64), origin


def load_tinyshakespeare(max_chars=None):
    """The shipped tiny-shakespeare text (about 300,000 characters), or its first ``max_chars``."""
    text = _read_text(_SHAKESPEARE)
    if max_chars is not None:
        if isinstance(max_chars, bool) or not isinstance(max_chars, numbers.Integral):
            raise TypeError(f"max_chars must be None or an int, got {type(max_chars).__name__}")
        if max_chars < 0:
            raise ValueError(f"max_chars must be >= 0, got {max_chars}")
        text = text[:max_chars]
    return text
