"""Numerics: NaN and Inf reach exactly the outputs they affect; softplus is stable at extreme rho.

The non-finite pattern of each op's output and gradients is compared, element for element, with
fusedbnn.reference (autodiff of plain TensorFlow ops), after planting NaN, +Inf or -Inf in one
element of one input or parameter: the same elements must be non-finite, and the finite ones must
agree. Every op of op_specs.SPECS is covered, on every instruction set the CPU runs (in a
subprocess each, as the kernels are chosen once per process).
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_allclose, subprocess_env
from fusedbnn import GaussianDistribution, _core, ops
from op_specs import SPEC_IDS, SPECS

NON_FINITE = [float("nan"), float("inf"), float("-inf")]
# A known deviation: at rho = -inf both KLs are +inf, as the reference's, but their gradients stay
# finite (the kernels' exp clamps at -87.3, so sigma is 1.2e-38, not 0), where the reference's
# divide 0 by 0. Samples and their gradients are unaffected (sigma * eps vanishes beside mu).
KL_GRADIENT_AT_MINUS_INFINITE_RHO = {(kl, "rho", float("-inf")) for kl in ("gaussian_kl", "gaussian_kl_analytic")}


def planted(tensor, flat_index, value):
    values = tensor.numpy().reshape(-1).copy()
    values[flat_index] = value
    return tf.constant(values.reshape(tensor.shape))


def assert_same_non_finite_pattern(spec, args, what):
    fused = [np.asarray(t) for t in spec.outputs_and_grads(spec.fused, args)]
    ref = [np.asarray(t) for t in spec.outputs_and_grads(spec.reference, args)]
    names = ["output"] + ["d" + n for n in spec.differentiable_in(args)]
    for name, f, r in zip(names, fused, ref):
        bad_f, bad_r = ~np.isfinite(f), ~np.isfinite(r)
        spread = np.argwhere(bad_f != bad_r)[:5].tolist()
        assert np.array_equal(bad_f, bad_r), (
            f"{what}: {name} non-finite at {bad_f.sum()} elements, the reference at {bad_r.sum()}; "
            f"they differ at e.g. {spread}"
        )
        scale = max(1.0, float(np.abs(r[~bad_r]).max(initial=0.0)))
        assert_allclose(f[~bad_f], r[~bad_r], rtol=spec.rtol, atol=spec.atol * scale, err_msg=f"{what}: {name}")


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_non_finite_values_reach_only_the_affected_outputs(spec):
    rng = np.random.default_rng(11)
    base = spec.make(spec.medium, rng)
    for name in spec.differentiable_in(base):
        size = base[name].shape.num_elements()
        for value in NON_FINITE:
            if (spec.name, name, value) in KL_GRADIENT_AT_MINUS_INFINITE_RHO:
                continue
            index = int(rng.integers(size))
            args = {**base, name: planted(base[name], index, value)}
            assert_same_non_finite_pattern(spec, args, f"{spec.name}: {name}[{index}] = {value}")


@pytest.mark.skipif(os.environ.get("FUSEDBNN_ISA") is not None, reason="already pinned to one instruction set")
@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512"])
def test_non_finite_pattern_on_every_instruction_set(isa):
    """The same check with the kernels of each instruction set (vector min/max and polynomial exp
    are where a NaN can silently turn into a number)."""
    if isa != "scalar" and _core.isa() == "scalar":
        pytest.skip("this CPU runs only the scalar kernels")
    env = subprocess_env(FUSEDBNN_ISA=isa)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-x",
            f"{__file__}::test_non_finite_values_reach_only_the_affected_outputs",
            f"{__file__}::test_softplus_is_stable_at_extreme_rho",
        ],
        env=env,
        cwd=os.path.dirname(__file__),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


# rho at and beyond the float32 limits of exp: softplus(rho) = rho above ~16, exp(rho) below ~-16.
# (Below about -80, sigma * eps falls into the subnormals, which TensorFlow's threads flush to zero.)
EXTREME_RHO = np.float32(
    [
        -80.0,
        -50.0,
        -30.0,
        -25.0,
        -20.5,
        -20.0,
        -15.0,
        -5.0,
        0.0,
        5.0,
        15.0,
        20.0,
        30.0,
        88.0,
        88.8,
        89.0,
        100.0,
        1e4,
        1e30,
    ]
)


def test_softplus_is_stable_at_extreme_rho():
    """sigma = softplus(rho) keeps its relative accuracy for rho > 88, where illia's float32
    log1p(exp(rho)) overflows to Inf, and for rho < -20, where sigma is tiny but not zero."""
    n = EXTREME_RHO.size
    seed = tf.constant([3, 4], tf.int64)
    eps = tf.random.stateless_normal([n], seed=seed).numpy().astype(np.float64)
    sigma = np.logaddexp(0.0, EXTREME_RHO.astype(np.float64))  # softplus in float64, stably
    w = ops.sample_gaussian(tf.zeros([n]), tf.constant(EXTREME_RHO), seed).numpy().astype(np.float64)
    assert np.all(np.isfinite(w))
    # The vector kernels' noise is within 2e-6 of eps (noise contract); softplus within 1e-5.
    np.testing.assert_array_less(np.abs(w - sigma * eps), sigma * (3e-6 + 1e-5 * np.abs(eps)))
    # The gradient drho = dw * eps * sigmoid(rho): finite, and eps itself where sigmoid(rho) == 1.
    with tf.GradientTape() as tape:
        rho = tf.constant(EXTREME_RHO)
        tape.watch(rho)
        out = ops.sample_gaussian(tf.zeros([n]), rho, seed)
    drho = tape.gradient(out, rho).numpy()
    assert np.all(np.isfinite(drho))
    sigmoid = 1.0 / (1.0 + np.exp(-EXTREME_RHO.astype(np.float64)))
    np.testing.assert_array_less(np.abs(drho - eps * sigmoid), sigmoid * (3e-6 + 1e-5 * np.abs(eps)))
    # What the check guards against: illia's formula in float32 loses sigma above 88.
    with np.errstate(over="ignore"):
        illia = np.log1p(np.exp(EXTREME_RHO))
    assert np.isinf(illia[EXTREME_RHO > 89]).all()


@pytest.mark.parametrize("rho", np.concatenate([EXTREME_RHO[EXTREME_RHO < 1e4], [-88.0, -100.0, -1e4, -1e30]]))
def test_kl_is_finite_and_accurate_at_extreme_rho(rho):
    """log sigma in both KLs stays exact where sigma is tiny (rho < -20), even where it flushes to 0
    (rho < -87.3), or huge (rho > 88). 37 elements: the vector kernels and their tails."""
    n = 37
    seed = tf.constant([5, 6], tf.int64)
    mu, rho_t = tf.zeros([n]), tf.fill([n], np.float32(rho))
    eps = tf.random.stateless_normal([n], seed=seed).numpy().astype(np.float64)
    rho = np.float64(np.float32(rho))
    sigma = np.logaddexp(0.0, rho)
    log_sigma = rho if rho < -30 else np.log(sigma)  # float64: log(softplus) - rho < 1e-13 there
    w = sigma * eps
    expected = np.sum(-log_sigma - 0.5 * eps**2 + 0.5 * w**2)
    kl = ops.gaussian_kl(mu, rho_t, seed, 0.0, 1.0).numpy()
    assert np.isfinite(kl) and kl == pytest.approx(expected, rel=1e-5, abs=1e-3)
    analytic = ops.gaussian_kl_analytic(mu, rho_t, 0.0, 1.0).numpy()
    expected = n * (-log_sigma + 0.5 * sigma**2 - 0.5)
    assert np.isfinite(analytic) and analytic == pytest.approx(expected, rel=1e-5, abs=1e-3)


def test_initial_rho_keeps_sigma_a_normal_float():
    """rho_init >= -80: sigma of every initial rho stays a normal float32, so a frozen sample's log
    density is finite; below about -87 sigma flushes to 0 and it would be 0 / 0."""
    with pytest.raises(ValueError, match=r"rho_init must be a finite float >= -80"):
        GaussianDistribution((3,), rho_init=-90.0)
    distribution = GaussianDistribution((1000,), rho_init=-80.0, seed=1)
    assert np.all(distribution.sigma.numpy() >= np.finfo(np.float32).tiny)
    assert np.isfinite(distribution.log_prob(distribution.sample()).numpy())


# --- 64-bit indexing --------------------------------------------------------------------------
# The kernels address flat element `begin` of a parameter; _core's `begin` argument runs them on a
# small buffer standing for elements [begin, begin + n) of a parameter larger than 2^31 elements.
# tests/test_noise.py ties the noise at such indices to TensorFlow's own draws.


def carry_begin(seed):
    """A flat index whose Philox counter carries from the first 32-bit word into the second."""
    _, counter = _core.stream_from_seed(seed)
    return 4 * (2**32 - counter[0]) - 37


@pytest.mark.parametrize("begin", [2**31 - 5, 2**31, 2**32 + 3, 2**40 + 7, "carry"])
def test_kernels_index_past_two_to_the_31(begin):
    seed = (7, -8)
    begin = carry_begin(seed) if begin == "carry" else begin
    rng = np.random.default_rng(begin % 1000)
    n = 203  # several vector blocks, not a multiple of one, from an unaligned start
    mu = rng.normal(size=n).astype(np.float32)
    rho = rng.normal(-1.0, 1.0, size=n).astype(np.float32)
    dw = rng.normal(size=n).astype(np.float32)
    eps = _core.normal(n, seed, exact=True, begin=begin).astype(np.float64)
    sigma = np.logaddexp(0.0, rho.astype(np.float64))
    sigmoid = 1.0 / (1.0 + np.exp(-rho.astype(np.float64)))
    w = mu + sigma * eps

    sampled = _core.sample_gaussian(mu, rho, seed, begin=begin)
    assert_allclose(sampled, w, rtol=1e-5, atol=1e-5)
    drho, regenerated = _core.sample_gaussian_grad(dw, mu, rho, seed, begin=begin)
    np.testing.assert_array_equal(regenerated, sampled)
    assert_allclose(drho, dw * eps * sigmoid, rtol=1e-5, atol=1e-5)

    mu_prior, std_prior = 0.2, 0.5
    z = (w - mu_prior) / std_prior
    kl = np.sum(np.log(std_prior) - np.log(sigma) + 0.5 * (z**2 - eps**2))
    assert _core.gaussian_kl(mu, rho, seed, mu_prior, std_prior, begin=begin) == pytest.approx(kl, rel=1e-4, abs=1e-3)
    dmu, drho = _core.gaussian_kl_grad(mu, rho, seed, mu_prior, std_prior, 1.0, begin=begin)
    assert_allclose(dmu, z / std_prior, rtol=1e-4, atol=1e-4)
    assert_allclose(drho, (z / std_prior * eps - 1.0 / sigma) * sigmoid, rtol=1e-4, atol=1e-4)

    # Any split of the range gives the same elements (a tile or an embedding row past 2^31).
    cut = 77
    parts = [
        _core.sample_gaussian(mu[:cut], rho[:cut], seed, begin=begin),
        _core.sample_gaussian(mu[cut:], rho[cut:], seed, begin=begin + cut),
    ]
    np.testing.assert_array_equal(np.concatenate(parts), sampled)
