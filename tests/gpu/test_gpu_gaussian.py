"""CUDA noise, sample_gaussian, its gradient and the KL estimate against PyTorch float32 maths
built from the host noise."""

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
def test_kl_and_grad(size):
    rng = rng_for("kl", size)
    shape = shape_of(size)
    mu, rho = gaussian_params(rng, shape)
    seed = seed_of(rng)
    mu_prior, std_prior = 0.1, 0.3
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


def test_kl_is_deterministic():
    rng = np.random.default_rng(3)
    mu, rho = gaussian_params(rng, (1 << 20,))
    first = torch_ops.gaussian_kl(mu, rho, (1, 2)).item()
    assert all(torch_ops.gaussian_kl(mu, rho, (1, 2)).item() == first for _ in range(3))


def test_empty_tensors():
    mu = torch.empty(0, device="cuda")
    assert torch_ops.sample_gaussian(mu, mu, (1, 2)).shape == (0,)
    assert torch_ops.gaussian_kl(mu, mu, (1, 2)).item() == 0.0
