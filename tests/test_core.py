"""fusedbnn._core: the framework-free kernels on NumPy, checked against NumPy maths."""

import re

import numpy as np
import pytest

from fusedbnn import _core


def softplus(x):
    return np.logaddexp(0.0, x.astype(np.float64))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


@pytest.mark.parametrize("n", [1, 5, 64, 1001])
def test_sample_and_grad_against_numpy(n):
    rng = np.random.default_rng(n)
    mu = rng.normal(size=n).astype(np.float32)
    rho = rng.normal(-2, 2, size=n).astype(np.float32)
    dw = rng.normal(size=n).astype(np.float32)
    eps = _core.normal(n, (4, 5), exact=True)
    np.testing.assert_allclose(_core.sample_gaussian(mu, rho, (4, 5)), mu + softplus(rho) * eps, rtol=1e-5, atol=1e-5)
    drho, w = _core.sample_gaussian_grad(dw, mu, rho, (4, 5))
    np.testing.assert_allclose(drho, dw * eps * sigmoid(rho), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(w, mu + softplus(rho) * eps, rtol=1e-5, atol=1e-5)


def test_softplus_keeps_float_accuracy_over_the_whole_range():
    """sigma = softplus(rho) within 1e-6 relative for rho from -80 to 1e4 (the vector kernels use a
    polynomial log1p). sigma is read off as sample(0, rho) / sample(0, rho_1) with softplus(rho_1)
    = 1: both use the same eps, which cancels."""
    rho = np.concatenate([np.linspace(-80.0, 40.0, 200001), [88.0, 100.0, 1e4]]).astype(np.float32)
    rho_1 = np.full_like(rho, np.log(np.expm1(1.0)))
    w = _core.sample_gaussian(np.zeros_like(rho), rho, (7, 8)).astype(np.float64)
    w_1 = _core.sample_gaussian(np.zeros_like(rho), rho_1, (7, 8)).astype(np.float64)
    usable = np.abs(w_1) > 1e-3  # eps near 0 leaves no digits to compare (and w subnormal below -80)
    assert usable.mean() > 0.99
    np.testing.assert_allclose((w / w_1)[usable], softplus(rho)[usable], rtol=1e-6)


def test_kl_and_grad_against_numpy():
    rng = np.random.default_rng(1)
    mu = rng.normal(size=(40, 30)).astype(np.float32)
    rho = rng.normal(-2, 1, size=(40, 30)).astype(np.float32)
    eps = _core.normal(mu.size, (1, 1), exact=True).reshape(mu.shape).astype(np.float64)
    s = softplus(rho)
    w = mu + s * eps
    kl = np.sum(-np.log(s) - 0.5 * eps**2 + np.log(0.5) + 0.5 * ((w - 0.2) / 0.5) ** 2)
    assert _core.gaussian_kl(mu, rho, (1, 1), 0.2, 0.5) == pytest.approx(kl, rel=1e-5)
    dmu, drho = _core.gaussian_kl_grad(mu, rho, (1, 1), 0.2, 0.5, 2.0)
    np.testing.assert_allclose(dmu, 2.0 * (w - 0.2) / 0.25, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(drho, 2.0 * (-1 / s + eps * (w - 0.2) / 0.25) * sigmoid(rho), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("per_element", [False, True])
def test_kl_analytic_and_per_element_priors_against_numpy(per_element):
    """The closed-form KL and its gradient, and the one-sample KL with one prior mean per element,
    on every vector tail (sizes off the lane counts) and from an offset begin."""
    rng = np.random.default_rng(2)
    for n in (1, 7, 17, 33, 1000):
        mu = rng.normal(size=n).astype(np.float32)
        rho = rng.normal(-2, 1, size=n).astype(np.float32)
        mean = rng.normal(size=n).astype(np.float32) if per_element else np.float32(0.2)
        s = softplus(rho)
        kl = np.sum(np.log(0.5 / s) + (s**2 + (mu - mean) ** 2) / (2 * 0.25) - 0.5)
        assert _core.gaussian_kl_analytic(mu, rho, mean, 0.5) == pytest.approx(kl, rel=1e-5)
        dmu, drho = _core.gaussian_kl_analytic_grad(mu, rho, mean, 0.5, 2.0)
        np.testing.assert_allclose(dmu, 2.0 * (mu - mean) / 0.25, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(drho, 2.0 * (s / 0.25 - 1 / s) * sigmoid(rho), rtol=1e-4, atol=1e-4)
        eps = _core.normal(n, (1, 1), exact=True, begin=5).astype(np.float64)
        w = mu + s * eps
        sample_kl = np.sum(np.log(0.5 / s) + 0.5 * (((w - mean) / 0.5) ** 2 - eps**2))
        assert _core.gaussian_kl(mu, rho, (1, 1), mean, 0.5, begin=5) == pytest.approx(sample_kl, rel=1e-4)
        dmu, _ = _core.gaussian_kl_grad(mu, rho, (1, 1), mean, 0.5, 2.0, begin=5)
        np.testing.assert_allclose(dmu, 2.0 * (w - mean) / 0.25, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="mu_prior"):
        _core.gaussian_kl_analytic(np.zeros(4, np.float32), np.zeros(4, np.float32), np.zeros(3, np.float32))


# (3, 16, 147461): the backward sums dx over 10 row tiles of 16384 rows (the last one partial) in 8
# groups, some of two tiles. (520, 600, 2000): dx is large, so the backward accumulates it in place
# over 3 row tiles of 887 rows (the last one partial), each product cut into pieces of columns.
@pytest.mark.parametrize(
    "rows, n_in, n_out", [(1, 1, 1), (3, 5, 7), (33, 70, 129), (0, 4, 3), (3, 16, 147461), (520, 600, 2000)]
)
def test_linear_against_numpy(rows, n_in, n_out):
    rng = np.random.default_rng(rows + n_in)
    x = rng.normal(size=(rows, n_in)).astype(np.float32)
    w_mu, b_mu = rng.normal(size=(n_out, n_in)).astype(np.float32), rng.normal(size=n_out).astype(np.float32)
    w_rho, b_rho = np.full((n_out, n_in), -1.0, np.float32), np.full(n_out, -2.0, np.float32)
    w = _core.sample_gaussian(w_mu, w_rho, (1, 2)).astype(np.float64)
    b = _core.sample_gaussian(b_mu, b_rho, (3, 4)).astype(np.float64)
    y = _core.linear(x, w_mu, w_rho, (1, 2), b_mu, b_rho, (3, 4))
    np.testing.assert_allclose(y, x @ w.T + b, rtol=1e-4, atol=1e-4)
    dy = rng.normal(size=(rows, n_out)).astype(np.float32)
    dx, dw_mu, dw_rho, db_mu, db_rho = _core.linear_grad(dy, x, w_mu, w_rho, (1, 2), b_mu, b_rho, (3, 4))
    np.testing.assert_allclose(dx, dy @ w, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw_mu, dy.T @ x, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw_rho, _core.sample_gaussian_grad(dw_mu, w_mu, w_rho, (1, 2))[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(db_mu, dy.sum(0), rtol=1e-4, atol=1e-4)
    assert db_rho.shape == (n_out,)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="same shape"):
        _core.sample_gaussian(np.zeros(3, np.float32), np.zeros(4, np.float32), (1, 2))
    with pytest.raises(ValueError, match="in-features"):
        _core.linear(np.zeros((2, 3), np.float32), np.zeros((4, 5), np.float32), np.zeros((4, 5), np.float32), (1, 2))


@pytest.mark.parametrize(
    "driver, runtime, required",
    [
        (
            12040,
            13000,
            r"CUDA 13\.0 and need NVIDIA driver r580 or newer for CUDA 13; this machine's driver "
            r"supports CUDA 12\.4",
        ),
        (11080, 12050, r"CUDA 12\.5 and need NVIDIA driver r525 or newer for CUDA 12; .*supports CUDA 11\.8"),
        (0, 13000, r"driver r580 or newer for CUDA 13; no NVIDIA driver was found"),
    ],
)
def test_cuda_driver_too_old_names_the_driver_required(driver, runtime, required):
    # The message a CUDA build raises at its first GPU op when the driver cannot run its runtime.
    message = _core.cuda_driver_error(driver, runtime)
    assert re.search(required, message), message
    assert message.endswith("Update the driver, or run fusedbnn's ops on the CPU.")


@pytest.mark.parametrize(
    "driver, runtime", [(13000, 13000), (13010, 13000), (13000, 13020), (14000, 13000), (12080, 12050)]
)
def test_cuda_driver_of_the_runtime_major_or_newer_is_accepted(driver, runtime):
    assert _core.cuda_driver_error(driver, runtime) == ""
