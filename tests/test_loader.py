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


def library_at(monkeypatch, folder):
    """Point the loader at `folder` for the op library, as if fusedbnn were installed there."""
    monkeypatch.setattr(_loader, "_library", None)
    monkeypatch.setattr(_loader.importlib.resources, "files", lambda package: folder)


def test_corrupt_library_is_one_readable_error(monkeypatch, tmp_path):
    (tmp_path / _loader._LIBRARY_NAME).write_bytes(b"not a shared library")
    library_at(monkeypatch, tmp_path)
    with pytest.raises(ImportError, match=r"does not load into TensorFlow .*Rebuild fusedbnn") as caught:
        _loader.load_op_library()
    assert str(tmp_path) in str(caught.value)


def test_library_with_a_mismatched_abi_is_one_readable_error(monkeypatch, tmp_path):
    """A library that needs a TensorFlow symbol the installed TensorFlow lacks (another ABI)."""
    import shutil
    import subprocess

    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler to build the mismatched library")
    source = tmp_path / "mismatched.cc"
    source.write_text(
        # A data reference: resolved when the library is opened, never called.
        "namespace tensorflow { extern int SymbolOfAnotherTensorFlowVersion; }\n"
        "int* use = &tensorflow::SymbolOfAnotherTensorFlowVersion;\n"
    )
    subprocess.run([compiler, "-shared", "-fPIC", str(source), "-o", str(tmp_path / _loader._LIBRARY_NAME)], check=True)
    library_at(monkeypatch, tmp_path)
    with pytest.raises(ImportError, match=r"does not load.*SymbolOfAnotherTensorFlowVersion.*Rebuild"):
        _loader.load_op_library()


def test_unbuilt_package_is_one_readable_error(monkeypatch):
    import sys

    import fusedbnn

    monkeypatch.setattr(_loader, "_library", None)
    monkeypatch.delattr(fusedbnn, "_build_info", raising=False)
    monkeypatch.setitem(sys.modules, "fusedbnn._build_info", None)  # None: import fails
    with pytest.raises(ImportError, match=r"not built.*pip install \."):
        _loader.load_op_library()


def test_version_mismatch_is_checked_before_loading(monkeypatch):
    from fusedbnn import _build_info

    monkeypatch.setattr(_loader, "_library", None)
    monkeypatch.setattr(_build_info, "TF_VERSION", "2.3.0")
    with pytest.raises(ImportError, match=r"built for TensorFlow 2\.3\.0.*Install tensorflow==2\.3\.\*"):
        _loader.load_op_library()
