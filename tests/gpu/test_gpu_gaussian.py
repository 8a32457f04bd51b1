"""CUDA noise, sample_gaussian, its gradient, the KL estimate and the closed-form KL against
PyTorch float32 maths built from the host noise."""

import numpy as np
import pytest

from gpu_testing import (
    CONTRACTION,
    ELEMENTWISE,
    assert_close,
    assert_noise_close,
    gaussian_params,
    host_eps,
    misaligned,
    normal_tensor,
    requires_gpu,
    rng_for,
    seed_of,
    torch,
    torch_ops,
)

pytestmark = requires_gpu

SIZES = [1, 3, 4, 5, 127, 1001, (37, 53), (3, 7, 11), 1 << 20 | 3]


def shape_of(size):
    return size if isinstance(size, tuple) else (size,)


@pytest.mark.parametrize("n", [1, 2, 5, 4096 + 3, 1 << 22])
def test_noise_within_1e6_of_host(n):
    seed = (123456789, -42)
    assert_noise_close(torch_ops.normal(n, seed), host_eps((n,), seed))


@pytest.mark.parametrize("n", [1, 5, 4096 + 3, 1 << 22])
def test_noise_is_the_vector_cpu_kernels(n):
    """The kernels and the vectorised CPU kernels share noise.h's Box-Muller in float operations
    only: the same bits (the scalar CPU kernels use libm, TensorFlow's maths, instead)."""
    if torch_ops.core.isa() == "scalar":
        pytest.skip("this CPU runs the scalar noise kernels (no AVX2)")
    seed = (987654321, 5)
    cpu = np.asarray(torch_ops.core.normal(n, seed), dtype=np.float32)
    gpu = torch_ops.normal(n, seed).cpu().numpy()
    differ = np.flatnonzero(cpu.view(np.uint32) != gpu.view(np.uint32))
    assert differ.size == 0, (
        f"{differ.size} of {n} differ, first at {differ[0]}: gpu {gpu[differ[0]]!r}, cpu {cpu[differ[0]]!r}"
    )


def test_noise_for_many_seeds():
    rng = np.random.default_rng(7)
    for _ in range(20):
        seed = seed_of(rng)
        assert_noise_close(torch_ops.normal(4099, seed), host_eps((4099,), seed), f"eps of seed {seed}")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("aligned", [True, False])
def test_sample_and_grad(size, aligned):
    rng = rng_for("sample", size, aligned)
    shape = shape_of(size)
    mu, rho = gaussian_params(rng, shape)
    dw = normal_tensor(rng, shape)
    if not aligned:
        mu, rho, dw = misaligned(mu), misaligned(rho), misaligned(dw)
    seed = seed_of(rng)
    eps = host_eps(shape, seed)
    w_ref = mu + torch.nn.functional.softplus(rho) * eps
    drho_ref = dw * eps * torch.sigmoid(rho)

    assert_close(torch_ops.sample_gaussian(mu, rho, seed), w_ref, ELEMENTWISE, "w")
    drho, w = torch_ops.sample_gaussian_grad(dw, mu, rho, seed)
    assert_close(drho, drho_ref, ELEMENTWISE, "drho")
    assert_close(w, w_ref, ELEMENTWISE, "w from the gradient")
    drho_only, _ = torch_ops.sample_gaussian_grad(dw, mu, rho, seed, with_w=False)
    assert_close(drho_only, drho_ref, ELEMENTWISE, "drho without w")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("per_element", [False, True])
def test_kl_and_grad(size, per_element):
    rng = rng_for("kl", size, per_element)
    shape = shape_of(size)
    mu, rho = gaussian_params(rng, shape)
    seed = seed_of(rng)
    mu_prior, std_prior = (normal_tensor(rng, shape) if per_element else 0.1), 0.3
    eps = host_eps(shape, seed)
    sigma = torch.nn.functional.softplus(rho)
    w = mu + sigma * eps
    z = (w - mu_prior) / std_prior
    kl_ref = (np.log(std_prior) - torch.log(sigma.double()) + 0.5 * (z.double() ** 2 - eps.double() ** 2)).sum()
    kl = torch_ops.gaussian_kl(mu, rho, seed, mu_prior, std_prior)
    assert_close(kl.reshape(1), kl_ref.float().reshape(1), CONTRACTION, "kl")

    dkl = torch.tensor(1.7, device="cuda")
    pull = dkl * (w - mu_prior) / std_prior**2
    dmu, drho = torch_ops.gaussian_kl_grad(mu, rho, seed, dkl, mu_prior, std_prior)
    assert_close(dmu, pull, ELEMENTWISE, "dmu")
    assert_close(drho, (pull * eps - dkl / sigma) * torch.sigmoid(rho), ELEMENTWISE, "drho")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("per_element", [False, True])
@pytest.mark.parametrize("rho_center", [-3.0, -20.0, 25.0])
def test_kl_analytic_and_grad(size, per_element, rho_center):
    rng = rng_for("kl_analytic", size, per_element, rho_center)
    shape = shape_of(size)
    mu, rho = gaussian_params(rng, shape)
    rho = rho + (rho_center + 3.0)
    mu_prior, std_prior = (normal_tensor(rng, shape) if per_element else 0.1), 0.3
    sigma = torch.nn.functional.softplus(rho.double())
    gap = mu.double() - (mu_prior.double() if per_element else mu_prior)
    kl_ref = (np.log(std_prior) - torch.log(sigma) + (sigma**2 + gap**2) / (2 * std_prior**2) - 0.5).sum()
    kl = torch_ops.gaussian_kl_analytic(mu, rho, mu_prior, std_prior)
    assert_close(kl.reshape(1), kl_ref.float().reshape(1), CONTRACTION, "kl")

    dkl = torch.tensor(1.7, device="cuda")
    dmu, drho = torch_ops.gaussian_kl_analytic_grad(mu, rho, dkl, mu_prior, std_prior)
    assert_close(dmu, (dkl * gap / std_prior**2).float(), ELEMENTWISE, "dmu")
    drho_ref = dkl * (sigma / std_prior**2 - 1 / sigma) * torch.sigmoid(rho.double())
    assert_close(drho, drho_ref.float(), ELEMENTWISE, "drho")


def test_kl_is_deterministic():
    rng = np.random.default_rng(3)
    mu, rho = gaussian_params(rng, (1 << 20,))
    first = torch_ops.gaussian_kl(mu, rho, (1, 2)).item()
    assert all(torch_ops.gaussian_kl(mu, rho, (1, 2)).item() == first for _ in range(3))
    first = torch_ops.gaussian_kl_analytic(mu, rho).item()
    assert all(torch_ops.gaussian_kl_analytic(mu, rho).item() == first for _ in range(3))


def test_empty_tensors():
    mu = torch.empty(0, device="cuda")
    assert torch_ops.sample_gaussian(mu, mu, (1, 2)).shape == (0,)
    assert torch_ops.gaussian_kl(mu, mu, (1, 2)).item() == 0.0
