"""Loads the compiled TensorFlow op library once, with readable errors when it cannot."""

import importlib.resources
import threading

import tensorflow as tf

_LIBRARY_NAME = "_fusedbnn_ops.so"
_lock = threading.Lock()
_library = None


def _minor(version):
    return ".".join(version.split(".")[:2])


def check_tensorflow_version(built_for, installed):
    """Raise ImportError unless both TensorFlow versions share major.minor (the op ABI)."""
    if _minor(built_for) != _minor(installed):
        raise ImportError(
            f"fusedbnn's op library was built for TensorFlow {built_for}, but TensorFlow {installed} "
            f"is installed. Install tensorflow=={_minor(built_for)}.* or rebuild fusedbnn against "
            f"this TensorFlow (pip install --force-reinstall --no-binary fusedbnn fusedbnn)."
        )


def load_op_library():
    """The loaded op module (tf.load_op_library), loaded on first use."""
    global _library
    with _lock:
        if _library is None:
            try:
                from fusedbnn import _build_info
            except ImportError as error:
                raise ImportError(
                    "fusedbnn is not built: its compiled libraries are missing. Install it with "
                    "`pip install .` from the source tree (see README.md)."
                ) from error
            check_tensorflow_version(_build_info.TF_VERSION, tf.__version__)
            path = importlib.resources.files("fusedbnn") / _LIBRARY_NAME
            if not path.is_file():
                raise ImportError(
                    f"fusedbnn's op library {_LIBRARY_NAME} is missing from {path.parent}. "
                    "Reinstall fusedbnn with `pip install .` from the source tree (see README.md)."
                )
            try:
                _library = tf.load_op_library(str(path))
            except tf.errors.NotFoundError as error:
                raise ImportError(
                    f"fusedbnn's op library {path} does not load into TensorFlow {tf.__version__} "
                    f"(built for {_build_info.TF_VERSION}): {error}. Rebuild fusedbnn against the "
                    "installed TensorFlow."
                ) from error
        return _library
