"""The loader: one readable error for a missing or mismatched op library."""

import pytest

from fusedbnn import _loader


def test_version_mismatch_names_both_versions():
    with pytest.raises(ImportError, match=r"built for TensorFlow 2\.20\.0.*TensorFlow 2\.21\.0 is installed"):
        _loader.check_tensorflow_version("2.20.0", "2.21.0")


def test_same_minor_is_accepted():
    _loader.check_tensorflow_version("2.21.0", "2.21.3")


def test_library_loads_once():
    assert _loader.load_op_library() is _loader.load_op_library()


def test_missing_library_is_reported(monkeypatch, tmp_path):
    monkeypatch.setattr(_loader, "_library", None)
    monkeypatch.setattr(_loader, "_LIBRARY_NAME", "_missing_ops.so")
    with pytest.raises(ImportError, match="missing"):
        _loader.load_op_library()
