"""CUDA Linear forward and backward against PyTorch float32 maths built from the host noise, on
both plans (W sampled inside the product up to 64 rows, sampled into scratch above)."""

import pytest

from gpu_testing import (
    CONTRACTION,
    assert_close,
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

# (rows, in, out): batch 1, sizes off every tile (4, 32, 64, 256), both sides of 64 rows, empty sizes.
SHAPES = [
    (1, 1, 1),
    (1, 33, 17),
    (2, 5, 3),
    (5, 130, 257),
    (31, 64, 256),
    (32, 1000, 999),
    (33, 257, 300),
    (64, 96, 70),
    (65, 100, 70),
    (200, 257, 129),
    (513, 64, 520),
    (0, 16, 8),
    (7, 0, 5),
    (3, 5, 0),
]


def reference(x, w_mu, w_rho, w_seed, b, dy):
    """(y, dx, dw_mu, dw_rho, db_mu, db_rho) of x W^T + b in float32."""
    eps = host_eps(tuple(w_mu.shape), w_seed)
    w = w_mu + torch.nn.functional.softplus(w_rho) * eps
    y = x @ w.T
    dw = dy.T @ x
    grads = [dy @ w, dw, dw * eps * torch.sigmoid(w_rho)]
    if b is None:
        return [y] + grads + [None, None]
    b_mu, b_rho, b_seed = b
    b_eps = host_eps(tuple(b_mu.shape), b_seed)
    y = y + (b_mu + torch.nn.functional.softplus(b_rho) * b_eps)
    db = dy.sum(0)
    return [y] + grads + [db, db * b_eps * torch.sigmoid(b_rho)]


@pytest.mark.parametrize("rows,n_in,n_out", SHAPES)
@pytest.mark.parametrize("use_bias", [True, False])
def test_forward_and_backward(rows, n_in, n_out, use_bias):
    rng = rng_for("linear", rows, n_in, n_out, use_bias)
    x = normal_tensor(rng, (rows, n_in))
    w_mu, w_rho = gaussian_params(rng, (n_out, n_in))
    w_seed = seed_of(rng)
    b = (*gaussian_params(rng, (n_out,)), seed_of(rng)) if use_bias else None
    dy = normal_tensor(rng, (rows, n_out))
    bias_args = b if use_bias else (None, None, (0, 0))
    expected = reference(x, w_mu, w_rho, w_seed, b, dy)

    assert_close(torch_ops.linear(x, w_mu, w_rho, w_seed, *bias_args), expected[0], CONTRACTION, "y")
    actual = torch_ops.linear_grad(dy, x, w_mu, w_rho, w_seed, *bias_args)
    for name, got, want in zip(["dx", "dw_mu", "dw_rho", "db_mu", "db_rho"], actual, expected[1:]):
        if want is not None:  # every gradient sums over rows or features: a contraction
            assert_close(got, want, CONTRACTION, name)


@pytest.mark.parametrize("rows", [1, 40, 100])
def test_unaligned_parameters(rows):
    # W rows that start off 16-byte boundaries take the kernels' scalar loads.
    rng = rng_for("unaligned", rows)
    x = misaligned(normal_tensor(rng, (rows, 67)))
    w_mu, w_rho = (misaligned(t) for t in gaussian_params(rng, (45, 67)))
    dy = misaligned(normal_tensor(rng, (rows, 45)))
    seed = seed_of(rng)
    expected = reference(x, w_mu, w_rho, seed, None, dy)
    assert_close(torch_ops.linear(x, w_mu, w_rho, seed), expected[0], CONTRACTION, "y")
    for name, got, want in zip(
        ["dx", "dw_mu", "dw_rho"], torch_ops.linear_grad(dy, x, w_mu, w_rho, seed), expected[1:]
    ):
        assert_close(got, want, CONTRACTION, name)


def test_weight_gradient_beyond_65535_tile_rows():
    # 65,537 tiles of 64 outputs: one more than gridDim.y holds, so the tiles go along x.
    rows, n_in, n_out = 2, 3, 65537 * 64
    rng = rng_for("grid limit")
    x = normal_tensor(rng, (rows, n_in))
    w_mu, w_rho = gaussian_params(rng, (n_out, n_in))
    dy = normal_tensor(rng, (rows, n_out))
    expected = reference(x, w_mu, w_rho, (7, 8), None, dy)
    for name, got, want in zip(
        ["dx", "dw_mu", "dw_rho"], torch_ops.linear_grad(dy, x, w_mu, w_rho, (7, 8)), expected[1:]
    ):
        assert_close(got, want, CONTRACTION, name)


def test_forward_is_deterministic():
    rng = rng_for("deterministic")
    x = normal_tensor(rng, (32, 2048))
    w_mu, w_rho = gaussian_params(rng, (1024, 2048))
    first = torch_ops.linear(x, w_mu, w_rho, (5, 6))
    assert torch.equal(first, torch_ops.linear(x, w_mu, w_rho, (5, 6)))
