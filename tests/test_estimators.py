"""Flipout and local reparameterization (issue 16): the fused ops against the reference, the
derivation of their randomness from x_seed, their statistics, and the layers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import MODES, assert_allclose, gaussian_params, grads, run, seed_of
from fusedbnn import _core, nn, ops, reference

ESTIMATORS = ["flipout", "local_reparameterization"]


def linear_inputs(rng, x_shape, n_out, bias=True):
    x = tf.constant(rng.normal(size=x_shape).astype(np.float32))
    w_mu, w_rho = gaussian_params(rng, [n_out, x_shape[-1]], rho_center=-1.0)
    args = {"x": x, "w_mu": w_mu, "w_rho": w_rho, "w_seed": seed_of(rng)}
    if bias:
        b_mu, b_rho = gaussian_params(rng, [n_out], rho_center=-1.0)
        args.update(b_mu=b_mu, b_rho=b_rho, b_seed=seed_of(rng))
    return args


def compare(mode, fused_fn, reference_fn, args, rtol=2e-4, atol=2e-4):
    floats = [k for k, v in args.items() if isinstance(v, tf.Tensor) and v.dtype == tf.float32]

    def both():
        sources = [args[k] for k in floats]
        return grads(lambda: fused_fn(**args), sources), grads(lambda: reference_fn(**args), sources)

    fused, ref = run(mode, both)
    for name, f, r in zip(["y"] + ["d" + k for k in floats], fused, ref):
        assert f.shape == r.shape, name
        scale = max(1.0, float(np.abs(r).max())) if r.size else 1.0
        assert_allclose(f, r, rtol=rtol, atol=atol * scale, err_msg=name)


def test_signs_follow_the_contract():
    for x_seed in [(0, 0), (1, 2), (-5, 2**31 - 1)]:
        for k in (0, 1):
            expected = reference.estimator_signs([1001], tf.constant(x_seed, tf.int64), k)
            assert_allclose(_core.estimator_signs(x_seed, k, 1001), expected, rtol=0, atol=0)
    # Both values occur, about equally often, and the two sign streams differ.
    s_in, s_out = (_core.estimator_signs((3, 4), k, 10000) for k in (0, 1))
    assert set(np.unique(s_in)) == {-1.0, 1.0} and abs(s_in.mean()) < 0.05
    assert np.mean(s_in == s_out) < 0.6


def test_derived_seed_is_stateless_fold_in():
    # The seed the CUDA tests draw eps_out from (tests/gpu): TensorFlow's stateless_fold_in.
    for x_seed in [(0, 0), (1, 2), (-5, 2**31 - 1)]:
        for k in (0, 1, 2):
            expected = reference.estimator_seed(tf.constant(x_seed, tf.int64), k).numpy()
            assert _core.estimator_seed(x_seed, k) == tuple(int(v) for v in expected)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize(
    "x_shape, n_out",
    [
        ([1, 1], 1),
        ([3, 5], 7),
        ([2, 3, 17], 9),
        ([2, 3, 2, 17], 9),
        ([3, 0, 5], 4),
        ([9], 4),
        ([70, 300], 130),
        ([5, 129], 65),
        ([0, 7], 5),
        ([4, 0], 3),
        ([3, 4], 0),
    ],
)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_reference(mode, estimator, x_shape, n_out, bias, rng):
    args = {**linear_inputs(rng, x_shape, n_out, bias), "estimator": estimator, "x_seed": seed_of(rng, tf.int32)}
    compare(mode, ops.linear, reference.linear, args)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("x_shape", [[6, 70], [2, 3, 70]])
def test_core_matches_the_op(estimator, x_shape, rng):
    args = linear_inputs(rng, x_shape, 33)
    x_seed = (11, -3)
    y, *grads_op = grads(
        lambda: ops.linear(**args, estimator=estimator, x_seed=x_seed),
        [args[k] for k in ("x", "w_mu", "w_rho", "b_mu", "b_rho")],
    )
    rows = 6
    dy = np.cos(np.arange(y.numpy().size, dtype=np.float32)).reshape(rows, -1)
    numpy_args = [np.asarray(args[k]) if "seed" not in k else tuple(args[k].numpy()) for k in args]
    numpy_args[0] = numpy_args[0].reshape(rows, -1)
    if estimator == "flipout":
        per_example = {"x_seed": x_seed, "rows_per_example": rows // x_shape[0]}
        y_core = _core.flipout_linear(*numpy_args, **per_example)
        grads_core = _core.flipout_linear_grad(dy, *numpy_args, **per_example)
    else:
        y_core, y_std = _core.local_reparam_linear(*numpy_args, x_seed=x_seed)
        grads_core = _core.local_reparam_linear_grad(dy, *numpy_args, x_seed=x_seed, y_std=y_std)
    assert_allclose(y_core, tf.reshape(y, [rows, -1]), rtol=1e-5, atol=1e-5)
    grads_op[0] = tf.reshape(grads_op[0], [rows, -1])
    for c, o in zip(grads_core, grads_op):
        assert_allclose(c, o, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="rows_per_example must be positive and divide the rows"):
        _core.flipout_linear(*numpy_args, x_seed=x_seed, rows_per_example=4)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_linear_numeric_gradient(estimator):
    rng = np.random.default_rng(3)
    a = linear_inputs(rng, [3, 4], 2)
    x_seed = tf.constant([5, 6], tf.int64)

    def fn(x, w_mu, w_rho, b_mu, b_rho):
        return ops.linear(x, w_mu, w_rho, a["w_seed"], b_mu, b_rho, a["b_seed"], estimator=estimator, x_seed=x_seed)

    theoretical, numerical = tf.test.compute_gradient(
        fn, [a[k] for k in ("x", "w_mu", "w_rho", "b_mu", "b_rho")], delta=1e-2
    )
    for t, n in zip(theoretical, numerical):
        assert_allclose(t, n, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("rank, data_format", [(2, "NHWC"), (2, "NCHW"), (1, "NWC"), (1, "NCW")])
def test_conv_matches_reference(mode, estimator, rank, data_format, rng):
    channels_last = data_format in ("NHWC", "NWC")
    spatial = [7, 6][:rank]
    x_shape = [3] + (spatial + [4] if channels_last else [4] + spatial)
    x = tf.constant(rng.normal(size=x_shape).astype(np.float32))
    w_mu, w_rho = gaussian_params(rng, [3] * rank + [2, 6], rho_center=-1.0)
    b_mu, b_rho = gaussian_params(rng, [6], rho_center=-1.0)
    args = {
        "x": x,
        "w_mu": w_mu,
        "w_rho": w_rho,
        "w_seed": seed_of(rng),
        "b_mu": b_mu,
        "b_rho": b_rho,
        "b_seed": seed_of(rng),
        "padding": "SAME",
        "groups": 2,
        "data_format": data_format,
        "estimator": estimator,
        "x_seed": seed_of(rng),
    }
    name = "conv2d" if rank == 2 else "conv1d"
    compare(mode, getattr(ops, name), getattr(reference, name), args)


def test_x_seed_is_required_and_estimator_checked(rng):
    args = linear_inputs(rng, [2, 3], 4)
    with pytest.raises(ValueError, match="x_seed"):
        ops.linear(**args, estimator="flipout")
    with pytest.raises(ValueError, match="estimator"):
        ops.linear(**args, estimator="flip", x_seed=[1, 2])
    with pytest.raises(ValueError, match="estimator"):
        nn.Linear(3, 4, estimator="lrt")


def test_conv_estimators_need_known_ranks(rng):
    x, (w_mu, w_rho) = tf.ones([2, 5, 5, 3]), gaussian_params(rng, [3, 3, 3, 4])

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32)])
    def unknown_rank(x):
        return ops.conv2d(x, w_mu, w_rho, [1, 2], estimator="flipout", x_seed=[3, 4])

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def unknown_sizes(x):
        return ops.conv2d(x, w_mu, w_rho, [1, 2], estimator="flipout", x_seed=[3, 4])

    with pytest.raises(ValueError, match="x must have a known rank"):
        unknown_rank(x)
    assert_allclose(unknown_sizes(x), ops.conv2d(x, w_mu, w_rho, [1, 2], estimator="flipout", x_seed=[3, 4]))


# --- statistics over many seeds ----------------------------------------------------------------

N_DRAWS = 4000


def draws(estimator, x, w_mu, w_rho, b=None):
    """N_DRAWS outputs [N_DRAWS, rows, out], one per seed triple."""
    seeds = tf.random.stateless_uniform([N_DRAWS, 3, 2], seed=[7, 8], minval=-(2**31), maxval=2**31 - 1, dtype=tf.int64)
    bias = () if b is None else (b[0], b[1])

    @tf.function(jit_compile=False)
    def one(s):
        b_args = () if b is None else (*bias, s[1])
        kwargs = {} if estimator == "reparameterization" else {"estimator": estimator, "x_seed": s[2]}
        return ops.linear(x, w_mu, w_rho, s[0], *b_args, **kwargs)

    return tf.map_fn(one, seeds, fn_output_signature=tf.float32).numpy()


@pytest.mark.parametrize("estimator", ["reparameterization"] + ESTIMATORS)
def test_mean_and_variance(estimator, rng):
    x = tf.constant(rng.normal(size=[3, 6]).astype(np.float32))
    w_mu, w_rho = gaussian_params(rng, [4, 6], rho_center=-1.0)
    b_mu, b_rho = gaussian_params(rng, [4], rho_center=-1.0)
    y = draws(estimator, x, w_mu, w_rho, (b_mu, b_rho))
    mean = x.numpy() @ w_mu.numpy().T + b_mu.numpy()
    variance = x.numpy() ** 2 @ (tf.nn.softplus(w_rho).numpy() ** 2).T + tf.nn.softplus(b_rho).numpy() ** 2
    # Sampling error of N_DRAWS draws: 5 standard errors of the mean and of the variance (normal outputs).
    assert np.all(np.abs(y.mean(0) - mean) < 5 * np.sqrt(variance / N_DRAWS))
    assert np.all(np.abs(y.var(0) - variance) < 5 * variance * np.sqrt(2 / N_DRAWS))


@pytest.mark.parametrize(
    "estimator, correlated", [("reparameterization", True), ("flipout", False), ("local_reparameterization", False)]
)
def test_examples_of_a_batch_are_uncorrelated(estimator, correlated, rng):
    # The same input twice in one batch: one weight sample gives both the same output; the
    # per-example estimators perturb them independently.
    x = tf.constant(np.repeat(rng.normal(size=[1, 6]), 2, axis=0).astype(np.float32))
    w_mu, w_rho = gaussian_params(rng, [4, 6], rho_center=-1.0)
    y = draws(estimator, x, w_mu, w_rho)
    for o in range(4):
        corr = np.corrcoef(y[:, 0, o], y[:, 1, o])[0, 1]
        if correlated:
            assert corr > 0.999
        else:
            assert abs(corr) < 5 / np.sqrt(N_DRAWS)


@pytest.mark.parametrize("mode", MODES)
def test_positions_of_an_example_share_its_flipout_weight_sample(mode, rng):
    # x [examples, positions, in] with one input row everywhere: flipout perturbs the weights once
    # per example, so an example's positions agree and its examples differ; local reparameterization
    # draws every position's output noise independently (docs/design.md).
    x = tf.constant(np.tile(rng.normal(size=[1, 1, 6]), [3, 5, 1]).astype(np.float32))
    w_mu, w_rho = gaussian_params(rng, [4, 6], rho_center=-1.0)
    for estimator, positions_agree in (("flipout", True), ("local_reparameterization", False)):

        def run(x=x, estimator=estimator):
            return ops.linear(x, w_mu, w_rho, tf.constant([1, 2]), estimator=estimator, x_seed=tf.constant([3, 4]))

        y = (tf.function(run) if mode == "function" else run)().numpy()
        assert np.allclose(y, y[:, :1], rtol=0, atol=1e-6) == positions_agree, estimator
        assert not np.allclose(y[0], y[1]) and not np.allclose(y[1], y[2]), estimator


# --- layers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_layers_draw_a_fresh_x_seed_and_keep_the_estimator(estimator):
    layers = [
        nn.Linear(5, 3, seed=1, estimator=estimator),
        nn.Conv2d(2, 3, 3, padding="SAME", seed=1, estimator=estimator),
        nn.Conv1d(2, 3, 3, seed=1, estimator=estimator),
    ]
    inputs = [tf.ones([4, 5]), tf.ones([2, 5, 5, 2]), tf.ones([2, 6, 2])]
    for layer, x in zip(layers, inputs):
        first, second = layer(x), layer(x)
        assert not np.allclose(first, second)
        config = layer.get_config()
        assert config["estimator"] == estimator
        assert type(layer).from_config(config).estimator == estimator
        kl, n = layer.kl_cost()
        assert np.isfinite(kl.numpy()) and n > 0


@pytest.mark.parametrize("estimator", ["reparameterization"] + ESTIMATORS)
def test_keras_fit_converges(estimator):
    rng = np.random.default_rng(0)
    x = rng.normal(size=[256, 8]).astype(np.float32)
    y = (x @ rng.normal(size=[8, 1]) + 0.5).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input([8]),
            nn.Linear(8, 16, seed=1, estimator=estimator),
            keras.layers.Activation("tanh"),
            nn.Linear(16, 1, seed=2, estimator=estimator),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=30, batch_size=32, verbose=0)
    assert model.evaluate(x, y, verbose=0) < 0.1 * first
