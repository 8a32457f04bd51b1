"""sample_gaussian and gaussian_kl: fused forward and gradients against the pure-TF reference."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import MODES, assert_allclose, gaussian_params, grads, run, seed_of
from fusedbnn import ops, reference

SHAPES = [[1], [3], [5], [4, 7], [2, 3, 5], [67, 129], [0], [3, 0]]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES)
def test_sample_gaussian_matches_reference(mode, shape, rng):
    mu, rho = gaussian_params(rng, shape)
    seed = seed_of(rng)

    def both(mu, rho, seed):
        return (
            grads(lambda: ops.sample_gaussian(mu, rho, seed), [mu, rho]),
            grads(lambda: reference.sample_gaussian(mu, rho, seed), [mu, rho]),
        )

    fused, ref = run(mode, both, mu, rho, seed)
    for name, f, r in zip(["w", "dmu", "drho"], fused, ref):
        assert f.shape == tuple(shape)
        assert_allclose(f, r, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [[1], [5], [4, 7], [33, 65], [300, 301]])
@pytest.mark.parametrize("prior", [(0.0, 0.1), (0.3, 1.5)])
def test_gaussian_kl_matches_reference(mode, shape, prior, rng):
    mu, rho = gaussian_params(rng, shape, rho_center=-2.0)
    seed = seed_of(rng)

    def both(mu, rho, seed):
        return (
            grads(lambda: ops.gaussian_kl(mu, rho, seed, *prior), [mu, rho]),
            grads(lambda: reference.gaussian_kl(mu, rho, seed, *prior), [mu, rho]),
        )

    fused, ref = run(mode, both, mu, rho, seed)
    assert fused[0].shape == ()
    assert_allclose(fused[0], ref[0], rtol=2e-5, atol=1e-3, err_msg="kl")
    assert_allclose(fused[1], ref[1], rtol=1e-4, atol=1e-3, err_msg="dmu")
    assert_allclose(fused[2], ref[2], rtol=1e-4, atol=1e-3, err_msg="drho")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [[1], [5], [17], [4, 7], [33, 65], [300, 301], [0]])
@pytest.mark.parametrize("rho_center", [-25.0, -3.0, 0.0, 30.0])
def test_gaussian_kl_analytic_matches_reference(mode, shape, rho_center, rng):
    """Odd sizes (every vector tail) and extreme rho: sigma from 1e-11 to 30."""
    mu, rho = gaussian_params(rng, shape, rho_center=rho_center)

    def both(mu, rho):
        return tuple(
            grads(lambda kl=module.gaussian_kl_analytic: kl(mu, rho, 0.3, 1.5), [mu, rho])
            for module in (ops, reference)
        )

    fused, ref = run(mode, both, mu, rho)
    assert fused[0].shape == () and np.all(np.isfinite(fused[1:]))
    for name, f, r in zip(["kl", "dmu", "drho"], fused, ref):
        assert_allclose(f, r, rtol=2e-5, atol=1e-4, err_msg=name)


def test_gaussian_kl_analytic_is_the_mean_of_the_one_sample_estimate():
    mu, rho = gaussian_params(np.random.default_rng(0), [200], rho_center=-1.0)
    estimates = [ops.gaussian_kl(mu, rho, [i, 7], 0.2, 0.5) for i in range(400)]
    assert_allclose(np.mean(estimates), ops.gaussian_kl_analytic(mu, rho, 0.2, 0.5), rtol=0.02)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("per_element", [False, True])
@pytest.mark.parametrize("kl_fn", ["gaussian_kl", "gaussian_kl_analytic"])
def test_kl_prior_tensors_and_their_gradient(mode, per_element, kl_fn, rng):
    """mu_prior a scalar tensor or one mean per element, std_prior a tensor: values and gradients
    (d/dmu_prior included) match the reference."""
    shape = [13, 7]
    mu, rho = gaussian_params(rng, shape, rho_center=-2.0)
    mu_prior = tf.constant(rng.normal(0.2, 0.5, shape if per_element else []).astype(np.float32))
    std_prior = tf.constant(0.4)
    seed = seed_of(rng)
    seed_arg = {"seed": seed} if kl_fn == "gaussian_kl" else {}

    def both(mu, rho, mu_prior):
        return tuple(
            grads(
                lambda kl=getattr(module, kl_fn): kl(mu, rho, mu_prior=mu_prior, std_prior=std_prior, **seed_arg),
                [mu, rho, mu_prior],
            )
            for module in (ops, reference)
        )

    fused, ref = run(mode, both, mu, rho, mu_prior)
    for name, f, r in zip(["kl", "dmu", "drho", "dmu_prior"], fused, ref):
        assert np.shape(f) == np.shape(r), name
        assert_allclose(f, r, rtol=1e-4, atol=1e-3, err_msg=name)


def test_kl_prior_checks():
    mu = tf.zeros([3, 2])
    for kl in (lambda **p: ops.gaussian_kl(mu, mu, [1, 2], **p), lambda **p: ops.gaussian_kl_analytic(mu, mu, **p)):
        with pytest.raises(ValueError, match="mu_prior"):
            kl(mu_prior=tf.zeros([2, 3]))
        with pytest.raises(ValueError, match="std_prior"):
            kl(std_prior=tf.ones([2]))
        with pytest.raises(tf.errors.InvalidArgumentError, match="std_prior must be positive"):
            kl(std_prior=tf.constant(0.0))
        with pytest.raises(tf.errors.InvalidArgumentError, match="mu_prior must be a scalar or have mu's shape"):
            tf.function(lambda m, kl=kl: kl(mu_prior=m), input_signature=[tf.TensorSpec(None)])(tf.zeros([4]))


def test_gaussian_kl_empty_is_zero():
    assert ops.gaussian_kl(tf.zeros([0]), tf.zeros([0]), [1, 2]).numpy() == 0.0


def test_numeric_gradients():
    rng = np.random.default_rng(5)
    mu, rho = gaussian_params(rng, [3, 4], rho_center=-1.0)
    seed = tf.constant([5, 6], tf.int64)
    for fn in (lambda m, r: ops.sample_gaussian(m, r, seed), lambda m, r: ops.gaussian_kl(m, r, seed, 0.1, 0.5)):
        theoretical, numerical = tf.test.compute_gradient(fn, [mu, rho], delta=1e-2)
        for t, n in zip(theoretical, numerical):
            assert_allclose(t, n, rtol=2e-2, atol=2e-2)


def test_same_seed_same_sample_other_seed_other_sample(rng):
    mu, rho = gaussian_params(rng, [50, 7])
    a = ops.sample_gaussian(mu, rho, [1, 2]).numpy()
    np.testing.assert_array_equal(a, ops.sample_gaussian(mu, rho, [1, 2]).numpy())
    assert not np.any(a == ops.sample_gaussian(mu, rho, [1, 3]).numpy())
    assert ops.gaussian_kl(mu, rho, [1, 2]).numpy() == ops.gaussian_kl(mu, rho, [1, 2]).numpy()


def test_int32_and_int64_seeds_agree(rng):
    mu, rho = gaussian_params(rng, [9, 9])
    a = ops.sample_gaussian(mu, rho, tf.constant([-3, 8], tf.int32))
    b = ops.sample_gaussian(mu, rho, tf.constant([-3, 8], tf.int64))
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_seed_of_unknown_length_is_checked_when_it_runs(rng):
    """A traced seed of static shape [None] was refused although [2] fits it (stateless_normal takes
    it); its length is checked when the graph runs."""
    mu, rho = gaussian_params(rng, [4])
    sample = tf.function(
        lambda seed: ops.sample_gaussian(mu, rho, seed), input_signature=[tf.TensorSpec([None], tf.int64)]
    )
    np.testing.assert_array_equal(sample(tf.constant([1, 2], tf.int64)), ops.sample_gaussian(mu, rho, [1, 2]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="shape"):
        sample(tf.constant([1, 2, 3], tf.int64))


def test_stable_softplus_extremes():
    """sigma = softplus(rho) stays finite at rho > 88 and nonzero at rho < -20."""
    rho = tf.constant([100.0, 89.0, -25.0, -60.0])
    w = ops.sample_gaussian(tf.zeros([4]), rho, [1, 1]).numpy()
    eps = tf.random.stateless_normal([4], seed=[1, 1]).numpy()
    sigma = np.log1p(np.exp(np.float64([-25.0, -60.0])))
    assert np.all(np.isfinite(w))
    assert_allclose(w[:2], np.float32([100.0, 89.0]) * eps[:2], rtol=1e-5)
    assert_allclose(w[2:], sigma * eps[2:], rtol=1e-4, atol=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mu=tf.zeros([3]), rho=tf.zeros([4]), seed=[1, 2]), "rho"),
        (dict(mu=tf.zeros([3]), rho=tf.zeros([3]), seed=[1, 2, 3]), "seed"),
        (dict(mu=tf.zeros([3], tf.int32), rho=tf.zeros([3]), seed=[1, 2]), "mu"),
        (dict(mu=tf.zeros([3]), rho=tf.zeros([3], tf.float64), seed=[1, 2]), "rho"),
        (dict(mu=tf.zeros([3]), rho=tf.zeros([3]), seed=[1.0, 2.0]), "seed"),
    ],
)
@pytest.mark.parametrize("mode", MODES)
def test_bad_arguments_raise_naming_them(kwargs, match, mode):
    for fn in (ops.sample_gaussian, ops.gaussian_kl):
        with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match=match):
            run(mode, lambda: fn(**kwargs))
