"""The one-sample KL computed inside the fused layer ops (issue 13) and when kl_cost uses it."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import MODES, assert_allclose, gaussian_params, run, seed_of, subprocess_env
from fusedbnn import _core, nn, ops, reference

# (batch, in, out): odd sizes, an empty batch, more out-features than a forward tile's rows.
LINEAR_SHAPES = [(7, 13, 5), (33, 130, 77), (3, 300, 1000), (0, 5, 9)]


def linear_case(rng, batch, n_in, n_out, per_element):
    x = tf.constant(rng.normal(size=[batch, n_in]).astype(np.float32))
    w_mu, w_rho = gaussian_params(rng, [n_out, n_in])
    b_mu, b_rho = gaussian_params(rng, [n_out])
    w_mean = tf.constant(rng.normal(0, 0.1, [n_out, n_in]).astype(np.float32)) if per_element else 0.05
    priors = ((w_mean, 0.2), (-0.01, 0.3))
    return x, (w_mu, w_rho, seed_of(rng)), (b_mu, b_rho, seed_of(rng)), priors


def reference_kl(w, b, priors, use_bias):
    kl = reference.gaussian_kl(*w, *priors[0])
    return kl + reference.gaussian_kl(*b, *priors[1]) if use_bias else kl


@pytest.mark.parametrize("shape", LINEAR_SHAPES)
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("per_element", [False, True])
def test_linear_kl_is_the_kl_at_the_sample_the_op_drew(shape, use_bias, per_element):
    rng = np.random.default_rng(hash((shape, use_bias, per_element)) % 2**32)
    x, w, b, priors = linear_case(rng, *shape, per_element)
    bias = b if use_bias else (None, None, None)
    y, kl = ops.linear(x, *w, *bias, kl_priors=priors)
    assert_allclose(y, ops.linear(x, *w, *bias), atol=0)
    expected = ops.gaussian_kl(*w, *priors[0]) + (ops.gaussian_kl(*b, *priors[1]) if use_bias else 0.0)
    assert kl.dtype == tf.float32 and kl.shape == ()
    assert float(kl) == pytest.approx(float(expected), rel=2e-6, abs=1e-3)
    assert float(kl) == pytest.approx(float(reference_kl(w, b, priors, use_bias)), rel=1e-5, abs=1e-2)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", LINEAR_SHAPES)
@pytest.mark.parametrize("per_element", [False, True])
def test_linear_gradient_of_loss_plus_kl_matches_the_reference(mode, shape, per_element):
    rng = np.random.default_rng(sum(shape) + per_element)
    x, w, b, priors = linear_case(rng, *shape, per_element)
    dy = tf.constant(rng.normal(size=[shape[0], shape[2]]).astype(np.float32))

    def grads(linear, kl_of):
        def fn():
            with tf.GradientTape() as tape:
                tape.watch([x, *w[:2], *b[:2]])
                y, kl = linear()
                loss = tf.reduce_sum(y * dy) + 0.7 * kl_of(kl)
            return [kl_of(kl), *tape.gradient(loss, [x, *w[:2], *b[:2]])]

        return run(mode, fn)

    fused = grads(lambda: ops.linear(x, *w, *b, kl_priors=priors), lambda kl: kl)
    ref = grads(lambda: (reference.linear(x, *w, *b), reference_kl(w, b, priors, True)), lambda kl: kl)
    assert fused[0] == pytest.approx(ref[0], rel=1e-5, abs=1e-2)
    for name, got, want in zip(["dx", "dw_mu", "dw_rho", "db_mu", "db_rho"], fused[1:], ref[1:]):
        scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
        assert_allclose(got / scale, want / scale, atol=2e-5, err_msg=name)


@pytest.mark.parametrize("mode", MODES)
def test_an_unused_kl_output_leaves_the_plain_gradients(mode):
    rng = np.random.default_rng(5)
    x, w, b, priors = linear_case(rng, 6, 21, 11, False)

    def grads(kl_priors):
        def fn():
            with tf.GradientTape() as tape:
                tape.watch([x, *w[:2], *b[:2]])
                y = ops.linear(x, *w, *b, kl_priors=kl_priors)
                y = y[0] if kl_priors is not None else y
                loss = tf.reduce_sum(y * y)
            return tape.gradient(loss, [x, *w[:2], *b[:2]])

        return run(mode, fn)

    for got, want in zip(grads(priors), grads(None)):
        assert_allclose(got, want, atol=0)


def test_kl_priors_need_one_weight_sample():
    rng = np.random.default_rng(1)
    x, w, b, priors = linear_case(rng, 2, 3, 4, False)
    with pytest.raises(ValueError, match="reparameterization"):
        ops.linear(x, *w, *b, estimator="flipout", x_seed=[1, 2], kl_priors=priors)
    with pytest.raises(tf.errors.InvalidArgumentError, match="w_std_prior must be positive"):
        ops.linear(x, *w, *b, kl_priors=((0.0, tf.constant(-1.0)), (0.0, 0.1)))
    for malformed in ((0.0, 0.1), ((0.0, 0.1, 2.0), (0.0, 0.1)), ((0.0, 0.1),)):
        with pytest.raises(ValueError, match=r"kl_priors must be \(\(w_mu_prior, w_std_prior\), \(b_mu_prior"):
            ops.linear(x, *w, *b, kl_priors=malformed)
        with pytest.raises(ValueError, match=r"kl_priors must be"):
            ops.conv1d(x[:, :, None], w[0][None], w[1][None], w[2], kl_priors=malformed)


@pytest.mark.skipif(os.environ.get("FUSEDBNN_ISA") is not None, reason="already pinned to one instruction set")
@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512"])
def test_op_tests_on_every_instruction_set(isa):
    if isa != "scalar" and _core.isa() == "scalar":
        pytest.skip("this CPU runs only the scalar kernels")
    tests = [
        f"{__file__}::test_linear_kl_is_the_kl_at_the_sample_the_op_drew",
        f"{__file__}::test_linear_gradient_of_loss_plus_kl_matches_the_reference",
        f"{__file__}::test_lstm_kl_is_the_kl_at_the_sample_the_op_drew",
        f"{__file__}::test_lstm_gradient_of_loss_plus_kl_matches_the_reference",
        f"{__file__}::test_an_unused_lstm_kl_output_leaves_the_plain_gradients",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *tests],
        env=subprocess_env(FUSEDBNN_ISA=isa),
        cwd=os.path.dirname(__file__),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


# The layers: which kl_cost calls use the call's KL, and that the others still draw it again.

KL_OPS = {"FusedBnn>GaussianKl", "FusedBnn>GaussianKlGrad"}


def op_types(concrete):
    """Every op type in a traced function, its function library (cond branches, gradients) included."""
    graph_def = concrete.graph.as_graph_def()
    types = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        types |= {node.op for node in function.node_def}
    return types


def redrawn_kl(layer):
    """The KL at the last call's seeds, drawn again (today's path), in plain TensorFlow."""
    total = 0.0
    for p in layer._bayesian_parameters:
        total += reference.gaussian_kl(p.dist.mu, p.dist.rho, p.seed, p.dist.mu_prior, p.dist.std_prior)
    return float(total)


def elbo_step(layer, x):
    @tf.function
    def step():
        with tf.GradientTape() as tape:
            y = tf.cast(layer(x), tf.float32)
            kl, _ = layer.kl_cost()
            loss = tf.reduce_sum(y * y) + 0.3 * kl
        return kl, tape.gradient(loss, layer.trainable_variables)

    return step


def reference_elbo_grads(layer, x):
    w, b = layer._w, layer._b
    with tf.GradientTape() as tape:
        y = reference.linear(x, w.dist.mu, w.dist.rho, w.seed, b.dist.mu, b.dist.rho, b.seed)
        kl = reference.gaussian_kl(w.dist.mu, w.dist.rho, w.seed, w.dist.mu_prior, w.dist.std_prior)
        kl += reference.gaussian_kl(b.dist.mu, b.dist.rho, b.seed, b.dist.mu_prior, b.dist.std_prior)
        loss = tf.reduce_sum(y * y) + 0.3 * kl
    return tape.gradient(loss, layer.trainable_variables)


def test_a_traced_elbo_step_takes_the_kl_from_the_linear_op():
    layer = nn.Linear(13, 7, seed=1)
    x = tf.constant(np.random.default_rng(0).normal(size=[5, 13]).astype(np.float32))
    step = elbo_step(layer, x)
    kl, grads = step()
    assert not op_types(step.get_concrete_function()) & KL_OPS
    assert float(kl) == pytest.approx(redrawn_kl(layer), rel=1e-5)
    for got, want in zip(grads, reference_elbo_grads(layer, x)):
        scale = max(1.0, float(tf.reduce_max(tf.abs(want))))
        assert_allclose(got / scale, want / scale, atol=2e-5)
    # kl_cost in another function and eagerly draws the same KL again.
    other = tf.function(lambda: layer.kl_cost()[0])
    assert float(other()) == pytest.approx(float(kl), rel=1e-5)
    assert op_types(other.get_concrete_function()) & KL_OPS
    assert float(layer.kl_cost()[0]) == pytest.approx(float(kl), rel=1e-5)


def test_eager_steps_draw_the_kl_again():
    layer = nn.Linear(6, 4, seed=2)
    x = tf.ones([3, 6])
    with tf.GradientTape() as tape:
        y = layer(x)
        kl, _ = layer.kl_cost()
        loss = tf.reduce_sum(y * y) + 0.3 * kl
    grads = tape.gradient(loss, layer.trainable_variables)
    assert layer._call_kl.take(layer._kl_variables) is None
    assert float(kl) == pytest.approx(redrawn_kl(layer), rel=1e-5)
    for got, want in zip(grads, reference_elbo_grads(layer, x)):
        assert_allclose(got, want, atol=2e-5, rtol=1e-5)


def test_writes_after_the_call_make_kl_cost_draw_again():
    """An optimizer step, an assignment or freeze() between the call and kl_cost in one function:
    the KL is that of the values kl_cost reads, not those the call read."""
    x = tf.ones([2, 5])

    def step_with(write):
        layer = nn.Linear(5, 3, seed=3)
        layer(x)  # builds the optimizer's slots outside the function
        optimizer = keras.optimizers.SGD(0.5)
        optimizer.build(layer.trainable_variables)

        @tf.function
        def step():
            y = layer(x)
            write(layer, optimizer, y)
            return layer.kl_cost()[0]

        return layer, step

    def sgd(layer, optimizer, y):
        optimizer.apply(tf.gradients(tf.reduce_sum(y), layer.trainable_variables), layer.trainable_variables)

    def assign(layer, optimizer, y):
        layer._w.dist.rho.assign_add(tf.ones_like(layer._w.dist.rho))

    def freeze(layer, optimizer, y):
        layer.freeze()

    def prior(layer, optimizer, y):
        layer._b.dist.std_prior.assign(0.5)

    for write in (sgd, assign, prior):
        layer, step = step_with(write)
        kl = step()
        assert op_types(step.get_concrete_function()) & KL_OPS, write.__name__
        assert float(kl) == pytest.approx(redrawn_kl(layer), rel=1e-5), write.__name__
    layer, step = step_with(freeze)
    kl = step()
    assert layer.frozen
    frozen = sum(float(p.dist.log_prob(p.frozen_value)) for p in layer._bayesian_parameters)
    assert float(kl) == pytest.approx(frozen, rel=1e-5)


def test_kl_cost_inside_a_branch_of_the_step_draws_again():
    layer = nn.Linear(4, 3, seed=4)
    x = tf.ones([2, 4])

    @tf.function
    def step():
        layer(x)
        return tf.cond(tf.constant(True), lambda: layer.kl_cost()[0], lambda: tf.constant(0.0))

    assert float(step()) == pytest.approx(redrawn_kl(layer), rel=1e-5)
    assert op_types(step.get_concrete_function()) & KL_OPS


def test_frozen_and_uncalled_layers():
    x = tf.ones([2, 4])
    uncalled = nn.Linear(4, 3, seed=5)
    assert float(uncalled.kl_cost()[0]) == pytest.approx(redrawn_kl(uncalled), rel=1e-5)
    assert float(tf.function(lambda: uncalled.kl_cost()[0])()) == pytest.approx(redrawn_kl(uncalled), rel=1e-5)

    layer = nn.Linear(4, 3, seed=6)
    layer(x)
    layer.freeze()
    step = elbo_step(layer, x)
    kl, grads = step()
    frozen = sum(float(p.dist.log_prob(p.frozen_value)) for p in layer._bayesian_parameters)
    assert float(kl) == pytest.approx(frozen, rel=1e-5)
    layer.unfreeze()  # the traced step reads the flag: the same function samples again
    kl, _ = step()
    assert float(kl) == pytest.approx(redrawn_kl(layer), rel=1e-5)


def test_two_calls_in_one_step_take_the_last_calls_kl():
    layer = nn.Linear(4, 3, seed=7)
    x = tf.ones([2, 4])

    @tf.function
    def step():
        layer(x)
        layer(x)
        return layer.kl_cost()[0]

    kl = step()
    assert not op_types(step.get_concrete_function()) & KL_OPS
    assert float(kl) == pytest.approx(redrawn_kl(layer), rel=1e-5)


def test_mixed_precision_policy():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = nn.Linear(9, 4, seed=8)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    x = tf.ones([3, 9], tf.float16)
    step = elbo_step(layer, x)
    kl, grads = step()
    assert kl.dtype == tf.float32
    assert not op_types(step.get_concrete_function()) & KL_OPS
    assert float(kl) == pytest.approx(redrawn_kl(layer), rel=1e-5)
    assert all(g is not None and g.dtype == tf.float32 for g in grads)


# Convolutions: the KL comes from the sampling op of the "tensorflow" engine ("auto" picks it for
# undilated convolutions with equal strides).


@pytest.mark.parametrize("per_element", [False, True])
def test_sample_gaussian_kl_is_the_kl_at_its_sample(per_element):
    rng = np.random.default_rng(11)
    mu, rho = gaussian_params(rng, [3, 5, 7, 11])
    seed = seed_of(rng)
    mean = tf.constant(rng.normal(0, 0.1, [3, 5, 7, 11]).astype(np.float32)) if per_element else 0.02
    w, kl = ops.sample_gaussian(mu, rho, seed, (mean, 0.15))
    assert_allclose(w, ops.sample_gaussian(mu, rho, seed), atol=0)
    assert float(kl) == pytest.approx(float(ops.gaussian_kl(mu, rho, seed, mean, 0.15)), rel=2e-6)


@pytest.mark.parametrize("mode", MODES)
def test_sample_gaussian_kl_gradients(mode):
    """With the KL used, as the reference's; unused (dkl zero or None), the plain sampling gradient."""
    rng = np.random.default_rng(12)
    mu, rho = gaussian_params(rng, [5, 37])
    seed, upstream = seed_of(rng), tf.constant(rng.normal(size=[5, 37]).astype(np.float32))

    def grads(sample, kl_weight):
        def fn():
            with tf.GradientTape() as tape:
                tape.watch([mu, rho])
                w, kl = sample()
                loss = tf.reduce_sum(w * upstream) + (0.0 if kl_weight is None else kl_weight * kl)
            return tape.gradient(loss, [mu, rho])

        return run(mode, fn)

    prior = (0.03, 0.2)
    fused = lambda: ops.sample_gaussian(mu, rho, seed, prior)  # noqa: E731
    ref = lambda: (reference.sample_gaussian(mu, rho, seed), reference.gaussian_kl(mu, rho, seed, *prior))  # noqa: E731
    for got, want in zip(grads(fused, 0.4), grads(ref, 0.4)):
        assert_allclose(got, want, atol=2e-5, rtol=1e-5)
    plain = lambda: (ops.sample_gaussian(mu, rho, seed), 0.0)  # noqa: E731
    for kl_weight in (None, 0.0):
        for got, want in zip(grads(fused, kl_weight), grads(plain, None)):
            assert_allclose(got, want, atol=0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rank", [1, 2])
def test_conv_gradient_of_loss_plus_kl_matches_the_reference(mode, rank):
    rng = np.random.default_rng(rank)
    spatial = [9] if rank == 1 else [7, 6]
    kernel = [3] if rank == 1 else [3, 2]
    x = tf.constant(rng.normal(size=[2, *spatial, 5]).astype(np.float32))
    w_mu, w_rho = gaussian_params(rng, [*kernel, 5, 4])
    b_mu, b_rho = gaussian_params(rng, [4])
    w_seed, b_seed = seed_of(rng), seed_of(rng)
    priors = ((tf.constant(rng.normal(0, 0.1, [*kernel, 5, 4]).astype(np.float32)), 0.2), (0.01, 0.3))
    conv, ref_conv = (ops.conv1d, reference.conv1d) if rank == 1 else (ops.conv2d, reference.conv2d)
    variables = [x, w_mu, w_rho, b_mu, b_rho]

    def grads(forward):
        def fn():
            with tf.GradientTape() as tape:
                tape.watch(variables)
                y, kl = forward()
                loss = tf.reduce_sum(y * y) + 0.7 * kl
            return [kl, *tape.gradient(loss, variables)]

        return run(mode, fn)

    fused = grads(lambda: conv(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, padding="SAME", kl_priors=priors))
    ref = grads(
        lambda: (
            ref_conv(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, padding="SAME"),
            reference_kl((w_mu, w_rho, w_seed), (b_mu, b_rho, b_seed), priors, True),
        )
    )
    assert fused[0] == pytest.approx(ref[0], rel=1e-5, abs=1e-2)
    for got, want in zip(fused[1:], ref[1:]):
        scale = max(1.0, float(np.max(np.abs(want))))
        assert_allclose(got / scale, want / scale, atol=2e-5)


@pytest.mark.parametrize("layer_class", [nn.Conv1d, nn.Conv2d])
def test_a_traced_elbo_step_takes_the_kl_from_the_conv_sampling_op(layer_class):
    layer = layer_class(3, 4, 3, padding=1, seed=9)
    x = tf.ones([2, 8, 3] if layer_class is nn.Conv1d else [2, 8, 8, 3])
    step = elbo_step(layer, x)
    kl, grads = step()
    assert not op_types(step.get_concrete_function()) & KL_OPS
    assert float(kl) == pytest.approx(redrawn_kl(layer), rel=1e-5)
    assert float(tf.function(lambda: layer.kl_cost()[0])()) == pytest.approx(float(kl), rel=1e-5)


# The LSTM: W and b sampled once per call, their KL from that sampling pass.

# (batch, steps, in, hidden): odd sizes, no steps, an empty batch.
LSTM_SHAPES = [(3, 5, 7, 6), (1, 1, 1, 1), (5, 4, 33, 17), (4, 0, 3, 5), (0, 3, 2, 3)]


def lstm_case(rng, batch, steps, n_in, hidden, per_element):
    x = tf.constant(rng.normal(size=[batch, steps, n_in]).astype(np.float32))
    w_mu, w_rho = gaussian_params(rng, [n_in + hidden, 4 * hidden])
    b_mu, b_rho = gaussian_params(rng, [4 * hidden])
    shape = [n_in + hidden, 4 * hidden]
    w_mean = tf.constant(rng.normal(0, 0.1, shape).astype(np.float32)) if per_element else 0.05
    priors = ((w_mean, 0.2), (-0.01, 0.3))
    return x, (w_mu, w_rho, seed_of(rng)), (b_mu, b_rho, seed_of(rng)), priors


@pytest.mark.parametrize("shape", LSTM_SHAPES)
@pytest.mark.parametrize("per_element", [False, True])
def test_lstm_kl_is_the_kl_at_the_sample_the_op_drew(shape, per_element):
    rng = np.random.default_rng(hash((shape, per_element)) % 2**32)
    x, w, b, priors = lstm_case(rng, *shape, per_element)
    h_seq, (h, c), kl = ops.lstm(x, *w, *b, kl_priors=priors)
    plain_seq, (plain_h, plain_c) = ops.lstm(x, *w, *b)
    for got, want in zip([h_seq, h, c], [plain_seq, plain_h, plain_c]):
        assert_allclose(got, want, atol=0)
    expected = ops.gaussian_kl(*w, *priors[0]) + ops.gaussian_kl(*b, *priors[1])
    assert kl.dtype == tf.float32 and kl.shape == ()
    assert float(kl) == pytest.approx(float(expected), rel=2e-6, abs=1e-3)
    assert float(kl) == pytest.approx(float(reference_kl(w, b, priors, True)), rel=1e-5, abs=1e-2)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", LSTM_SHAPES)
@pytest.mark.parametrize("per_element", [False, True])
def test_lstm_gradient_of_loss_plus_kl_matches_the_reference(mode, shape, per_element):
    rng = np.random.default_rng(sum(shape) + per_element)
    x, w, b, priors = lstm_case(rng, *shape, per_element)
    batch, steps, _, hidden = shape
    dh = tf.constant(rng.normal(size=[batch, steps, hidden]).astype(np.float32))
    dc = tf.constant(rng.normal(size=[batch, hidden]).astype(np.float32))
    variables = [x, *w[:2], *b[:2]]

    def grads(lstm):
        def fn():
            with tf.GradientTape() as tape:
                tape.watch(variables)
                h_seq, (_, c), kl = lstm()
                loss = tf.reduce_sum(h_seq * dh) + tf.reduce_sum(c * dc) + 0.7 * kl
            # Without steps the reference's x is unconnected: a zero gradient.
            return [kl, *tape.gradient(loss, variables, unconnected_gradients="zero")]

        return run(mode, fn)

    fused = grads(lambda: ops.lstm(x, *w, *b, kl_priors=priors))
    ref = grads(lambda: (*reference.lstm(x, *w, *b), reference_kl(w, b, priors, True)))
    assert fused[0] == pytest.approx(ref[0], rel=1e-5, abs=1e-2)
    for name, got, want in zip(["dx", "dw_mu", "dw_rho", "db_mu", "db_rho"], fused[1:], ref[1:]):
        scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
        assert_allclose(got / scale, want / scale, atol=3e-5, err_msg=name)


@pytest.mark.parametrize("mode", MODES)
def test_an_unused_lstm_kl_output_leaves_the_plain_gradients(mode):
    rng = np.random.default_rng(6)
    x, w, b, priors = lstm_case(rng, 4, 3, 9, 5, False)
    variables = [x, *w[:2], *b[:2]]

    def grads(kl_priors, kl_weight=None):
        def fn():
            with tf.GradientTape() as tape:
                tape.watch(variables)
                out = ops.lstm(x, *w, *b, kl_priors=kl_priors)
                loss = tf.reduce_sum(out[0] * out[0])
                if kl_weight is not None:
                    loss += kl_weight * out[2]
            return tape.gradient(loss, variables)

        return run(mode, fn)

    plain = grads(None)
    for kl_weight in (None, 0.0):
        for got, want in zip(grads(priors, kl_weight), plain):
            assert_allclose(got, want, atol=0)


def test_lstm_kl_priors_are_checked():
    rng = np.random.default_rng(2)
    x, w, b, _ = lstm_case(rng, 2, 3, 4, 5, False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="b_std_prior must be positive"):
        ops.lstm(x, *w, *b, kl_priors=((0.0, 0.1), (0.0, tf.constant(0.0))))
    with pytest.raises(ValueError, match="mu_prior must be a scalar"):
        ops.lstm(x, *w, *b, kl_priors=((tf.zeros([3]), 0.1), (0.0, 0.1)))


def lstm_kl_nodes(concrete):
    """The GaussianKl ops of a traced function and its library, by the variable of their mu."""
    graph_def = concrete.graph.as_graph_def()
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes += list(function.node_def)
    return [n for n in nodes if n.op in KL_OPS], [n for n in nodes if n.op == "FusedBnn>Lstm"]


def test_a_traced_elbo_step_takes_the_kl_from_the_lstm_op():
    layer = nn.SequenceLSTM(6, return_sequences=True, seed=10)
    x = tf.constant(np.random.default_rng(3).normal(size=[3, 4, 5]).astype(np.float32))
    layer(x)
    step = elbo_step(layer, x)
    kl, grads = step()
    kl_nodes, lstm_nodes = lstm_kl_nodes(step.get_concrete_function())
    assert not kl_nodes and lstm_nodes and all(n.attr["with_kl"].b for n in lstm_nodes)
    assert float(kl) == pytest.approx(redrawn_kl(layer), rel=1e-5)
    w, b = layer._w, layer._b
    with tf.GradientTape() as tape:
        h_seq, _ = reference.lstm(x, w.dist.mu, w.dist.rho, w.seed, b.dist.mu, b.dist.rho, b.seed)
        ref_kl = reference.gaussian_kl(w.dist.mu, w.dist.rho, w.seed, w.dist.mu_prior, w.dist.std_prior)
        ref_kl += reference.gaussian_kl(b.dist.mu, b.dist.rho, b.seed, b.dist.mu_prior, b.dist.std_prior)
        loss = tf.reduce_sum(h_seq * h_seq) + 0.3 * ref_kl
    for got, want in zip(grads, tape.gradient(loss, layer.trainable_variables)):
        scale = max(1.0, float(tf.reduce_max(tf.abs(want))))
        assert_allclose(got / scale, want / scale, atol=3e-5)
    # Outside the step's graph: drawn again, the same value.
    assert float(layer.kl_cost()[0]) == pytest.approx(float(kl), rel=1e-5)
    assert float(tf.function(lambda: layer.kl_cost()[0])()) == pytest.approx(float(kl), rel=1e-5)


def test_the_token_lstm_fuses_its_own_weights_kl_not_the_embeddings():
    layer = nn.LSTM(11, 4, 6, 3, seed=12)
    ids = tf.constant(np.random.default_rng(4).integers(0, 11, [2, 5]))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            y, _ = layer(ids)
            kl, _ = layer.kl_cost()
            loss = tf.reduce_sum(y * y) + 0.3 * kl
        return kl, tape.gradient(loss, layer.trainable_variables)

    kl, grads = step()
    kl_nodes, lstm_nodes = lstm_kl_nodes(step.get_concrete_function())
    assert lstm_nodes and all(n.attr["with_kl"].b for n in lstm_nodes)
    # Only the embedding's KL is drawn again (its op and its gradient); the gates and the output
    # projection take theirs from their sampling passes.
    embedding = layer.embedding._bayesian_parameters[0].dist
    # (Each node by name: a cond branch's function may appear twice, rewritten for the gradient.)
    assert len({n.name for n in kl_nodes if n.op == "FusedBnn>GaussianKl"}) == 1, [n.name for n in kl_nodes]
    expected = redrawn_kl(layer) + float(
        reference.gaussian_kl(
            embedding.mu,
            embedding.rho,
            layer.embedding._bayesian_parameters[0].seed,
            embedding.mu_prior,
            embedding.std_prior,
        )
    )
    assert float(kl) == pytest.approx(expected, rel=1e-5)
    assert float(layer.kl_cost()[0]) == pytest.approx(float(kl), rel=1e-5)
    assert all(g is not None for g in grads)


def test_lstm_writes_after_the_call_make_kl_cost_draw_again():
    x = tf.ones([2, 3, 4])
    layer = nn.SequenceLSTM(5, seed=13)
    layer(x)

    @tf.function
    def step():
        layer(x)
        layer._w.dist.rho.assign_add(tf.ones_like(layer._w.dist.rho))
        return layer.kl_cost()[0]

    kl = step()
    kl_nodes, _ = lstm_kl_nodes(step.get_concrete_function())
    assert kl_nodes
    assert float(kl) == pytest.approx(redrawn_kl(layer), rel=1e-5)
