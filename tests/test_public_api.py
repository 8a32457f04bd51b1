"""The public API: each public module lists its names in ``__all__``, and each listed class and
function has its own docstring (``help()`` shows it, not a base class's)."""

import importlib
import inspect

import pytest

PUBLIC_MODULES = [
    "fusedbnn",
    "fusedbnn.nn",
    "fusedbnn.convert",
    "fusedbnn.distributions",
    "fusedbnn.losses",
    "fusedbnn.models",
    "fusedbnn.ops",
    "fusedbnn.reference",
    "fusedbnn.uncertainty",
]


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_is_listed_and_documented(module_name):
    module = importlib.import_module(module_name)
    assert hasattr(module, "__all__"), f"{module_name} has no __all__: a star import brings in its imports"
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__ and obj.__doc__.strip(), f"{module_name}.{name} has no docstring of its own"
    # What a star import gives is exactly __all__.
    namespace = {}
    exec(f"from {module_name} import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(module.__all__)


def test_layer_docstrings_list_their_arguments():
    from fusedbnn import nn

    for cls in (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding, nn.LSTM, nn.SequenceLSTM):
        doc = cls.__doc__
        assert doc and "Args:" in doc, cls.__name__
        for argument in inspect.signature(cls.__init__).parameters:
            if argument not in ("self", "kwargs"):
                assert argument in doc, f"{cls.__name__}'s docstring does not describe {argument!r}"
