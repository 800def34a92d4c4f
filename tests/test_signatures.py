"""inspect.signature of the public layer classes shows their real arguments (the layers' metaclass
hid them behind (*args, **kwargs)), the base Layer's ones included, and every public class of the
API says what its arguments are."""
from __future__ import annotations

import inspect

import pytest

import fastrnn as fr
from fastrnn import layers

LAYER_CLASSES = [getattr(layers, n) for n in layers.__all__
                 if inspect.isclass(getattr(layers, n)) and issubclass(getattr(layers, n), layers.Layer)]


@pytest.mark.parametrize("cls", LAYER_CLASSES, ids=lambda c: c.__name__)
def test_layer_signature_lists_real_arguments(cls):
    sig = inspect.signature(cls)
    kinds = {p.kind for p in sig.parameters.values()}
    assert inspect.Parameter.VAR_KEYWORD not in kinds and inspect.Parameter.VAR_POSITIONAL not in kinds, sig
    for common in ("name", "trainable", "dtype", "input_shape"):  # Layer's, passed on through **kwargs
        assert common in sig.parameters, (cls.__name__, sig)
    own = [p for p in inspect.signature(cls.__init__).parameters.values()
           if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    assert [p.name for p in own] == list(sig.parameters)[:len(own)]  # the constructor's own come first


def test_signature_binds_like_the_constructor():
    sig = inspect.signature(layers.LSTM)
    bound = sig.bind(8, return_sequences=True, name="enc", dtype="float64")
    lstm = layers.LSTM(*bound.args, **bound.kwargs)
    assert lstm.units == 8 and lstm.return_sequences and lstm.name == "enc"
    assert sig.parameters["name"].kind is inspect.Parameter.KEYWORD_ONLY
    assert sig.parameters["units"].default is inspect.Parameter.empty
    with pytest.raises(TypeError):
        sig.bind(8, nonsense=1)
    with pytest.raises(TypeError, match="nonsense"):
        layers.LSTM(8, nonsense=1)


def test_a_user_layer_gets_its_signature_too():
    class Scale(layers.Layer):
        def __init__(self, factor: float = 2.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

    assert list(inspect.signature(Scale).parameters) == ["factor", "name", "trainable", "dtype", "input_shape"]
    assert list(inspect.signature(fr.Sequential).parameters)[:2] == ["layers", "name"]
