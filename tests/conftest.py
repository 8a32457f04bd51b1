"""Shared test helpers: both execution modes, tolerant comparisons, random parameters."""

import os
import sys
import zlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

MODES = ["eager", "function"]


def run(mode, fn, *args):
    """fn(*args) eagerly or inside a tf.function (jit_compile=False), as numpy."""
    if mode == "function":
        fn = tf.function(fn, jit_compile=False)
    out = fn(*args)
    return tf.nest.map_structure(lambda t: None if t is None else np.asarray(t), out)


def gaussian_params(rng, shape, rho_center=-3.0):
    """(mu, rho) float32 tensors with sigma around softplus(rho_center)."""
    mu = tf.constant(rng.normal(0.0, 0.5, shape).astype(np.float32))
    rho = tf.constant(rng.normal(rho_center, 1.0, shape).astype(np.float32))
    return mu, rho


def seed_of(rng, dtype=tf.int64):
    return tf.constant(rng.integers(-(2**31), 2**31 - 1, [2]), dtype)


def grads(fn, sources):
    """Gradients of sum(fn()^2 * weights) for each source (a fixed random cotangent)."""
    with tf.GradientTape() as tape:
        tape.watch(sources)
        out = fn()
        cot = tf.cos(tf.reshape(tf.range(tf.size(out), dtype=tf.float32), tf.shape(out)))
        loss = tf.reduce_sum(out * cot)
    return [out] + tape.gradient(loss, sources)


def peak_bytes(fn):
    """TensorFlow's CPU allocator peak while fn() runs, above what was allocated before it."""
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    fn()
    return tf.config.experimental.get_memory_info("CPU:0")["peak"] - before


def assert_allclose(actual, expected, rtol=1e-4, atol=1e-5, err_msg=""):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol, err_msg=err_msg)


@pytest.fixture
def rng(request):
    # crc32, not hash(): str hashes change with every process, and so would the drawn cases.
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))


def subprocess_env(**extra):
    """The environment for a child Python that imports what this one does: the installed fusedbnn, or
    the source tree when the tests run with PYTHONPATH=python."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "TF_CPP_MIN_LOG_LEVEL": "2", **extra}
