"""ops.linear: fused forward and every gradient against the pure-TF reference."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import MODES, assert_allclose, gaussian_params, grads, peak_bytes, run, seed_of
from fusedbnn import ops, reference


def linear_inputs(rng, x_shape, n_out, bias=True):
    n_in = x_shape[-1]
    x = tf.constant(rng.normal(size=x_shape).astype(np.float32))
    w_mu, w_rho = gaussian_params(rng, [n_out, n_in])
    args = [x, w_mu, w_rho, seed_of(rng)]
    if bias:
        b_mu, b_rho = gaussian_params(rng, [n_out])
        args += [b_mu, b_rho, seed_of(rng)]
    return args


def compare(mode, args, rtol=2e-4, atol=2e-4):
    def both(*args):
        floats = [a for a in args if a.dtype == tf.float32]
        return (grads(lambda: ops.linear(*args), floats), grads(lambda: reference.linear(*args), floats))

    fused, ref = run(mode, both, *args)
    names = ["y", "dx", "dw_mu", "dw_rho", "db_mu", "db_rho"]
    for name, f, r in zip(names, fused, ref):
        scale = max(1.0, float(np.abs(r).max())) if r.size else 1.0
        assert f.shape == r.shape, name
        assert_allclose(f, r, rtol=rtol, atol=atol * scale, err_msg=name)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "x_shape, n_out",
    [
        ([1, 1], 1),
        ([3, 5], 7),
        ([32, 67], 33),
        ([5, 129], 65),
        ([2, 3, 17], 9),
        ([2, 1, 3, 6], 5),
        ([70, 300], 130),
        ([0, 7], 5),
        ([4, 0], 3),
        ([3, 4], 0),
    ],
)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_reference(mode, x_shape, n_out, bias, rng):
    compare(mode, linear_inputs(rng, x_shape, n_out, bias))


def test_linear_random_shapes(rng):
    for _ in range(8):
        rank = rng.integers(1, 4)
        x_shape = list(rng.integers(1, 9, size=rank - 1)) + [int(rng.integers(1, 200))]
        compare("eager", linear_inputs(rng, x_shape, int(rng.integers(1, 150)), bool(rng.integers(2))))


def test_linear_numeric_gradient():
    rng = np.random.default_rng(3)
    x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed = linear_inputs(rng, [3, 4], 2)
    fn = lambda x, wm, wr, bm, br: ops.linear(x, wm, wr, w_seed, bm, br, b_seed)  # noqa: E731
    theoretical, numerical = tf.test.compute_gradient(fn, [x, w_mu, w_rho, b_mu, b_rho], delta=1e-2)
    for t, n in zip(theoretical, numerical):
        assert_allclose(t, n, rtol=2e-2, atol=2e-2)


def test_same_seed_is_bit_identical(rng):
    args = linear_inputs(rng, [16, 40], 24)
    np.testing.assert_array_equal(ops.linear(*args).numpy(), ops.linear(*args).numpy())
    other = list(args)
    other[3] = other[3] + 1
    assert not np.allclose(ops.linear(*args).numpy(), ops.linear(*other).numpy())


def test_no_eps_sized_tensor_beyond_the_weight_in_a_training_step():
    """The fused step's peak allocation holds the two gradients only: no sampled weight, eps or sigma."""
    rng = np.random.default_rng(0)
    # Variables, not constants: Grappler would fold the reference's noise into a constant.
    x, w_mu, w_rho, w_seed = map(tf.Variable, linear_inputs(rng, [8, 512], 512, bias=False))
    weight_bytes = 512 * 512 * 4

    @tf.function(jit_compile=False)
    def step(fn):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(fn(x, w_mu, w_rho, w_seed))
        return tape.gradient(loss, [w_mu, w_rho])

    peaks = {}
    for name, fn in (("fused", ops.linear), ("reference", reference.linear)):
        step(fn)
        peaks[name] = peak_bytes(lambda: step(fn))
    # dmu + drho (+ cache-sized tiles); the reference also keeps w, eps and softplus(rho).
    assert peaks["fused"] <= 2 * weight_bytes + 2**20
    assert peaks["reference"] >= peaks["fused"] + weight_bytes


@pytest.mark.parametrize("mode", MODES)
def test_bad_arguments_raise_naming_them(mode):
    x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed = linear_inputs(np.random.default_rng(0), [3, 5], 4)
    cases = [
        ((tf.zeros([3, 6]), w_mu, w_rho, w_seed), "x"),
        ((x, w_mu, tf.zeros([4, 6]), w_seed), "w_rho"),
        ((x, tf.zeros([4, 5, 1]), tf.zeros([4, 5, 1]), w_seed), "w_mu"),
        ((tf.zeros([], tf.float32), w_mu, w_rho, w_seed), "x"),
        ((tf.zeros([3, 5], tf.int32), w_mu, w_rho, w_seed), "x"),
        ((x, w_mu, w_rho, tf.constant([1, 2, 3], tf.int64)), "w_seed"),
        ((x, w_mu, w_rho, w_seed, tf.zeros([3]), tf.zeros([3]), b_seed), "b_mu"),
        ((x, w_mu, w_rho, w_seed, b_mu, tf.zeros([5]), b_seed), "b_rho"),
        ((x, w_mu, w_rho, w_seed, b_mu, None, None), "b_"),
    ]
    for args, match in cases:
        with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match=match):
            run(mode, lambda: ops.linear(*args))


def test_unknown_shapes_in_graph_are_checked_at_run_time():
    x, w_mu, w_rho, w_seed = linear_inputs(np.random.default_rng(0), [3, 5], 4, bias=False)
    fn = tf.function(
        ops.linear, input_signature=[tf.TensorSpec(None, tf.float32)] * 3 + [tf.TensorSpec(None, tf.int64)]
    )
    assert fn(x, w_mu, w_rho, w_seed).shape == (3, 4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="x's last dimension"):
        fn(tf.zeros([3, 6]), w_mu, w_rho, w_seed)
