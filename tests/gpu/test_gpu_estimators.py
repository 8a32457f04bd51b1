"""CUDA flipout and local reparameterization (Linear), forward and backward, against PyTorch float32
maths built from the host noise and the host signs (fusedbnn._core's CPU derivation from x_seed)."""

import numpy as np
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

ESTIMATORS = ["flipout", "local_reparameterization"]
# (rows, in, out): batch 1, sizes off the 4-element noise groups and the 64 x 64 tiles, empty sizes.
SHAPES = [
    (1, 1, 1),
    (2, 5, 3),
    (5, 130, 257),
    (33, 257, 300),
    (65, 100, 70),
    (200, 257, 129),
    (0, 16, 8),
    (7, 0, 5),
    (3, 5, 0),
]
GRAD_NAMES = ["dx", "dw_mu", "dw_rho", "db_mu", "db_rho"]


def host_signs(shape, x_seed, k):
    """The +1 / -1 of stream k (0: s_in, 1: s_out) derived from x_seed, on the GPU."""
    n = int(np.prod(shape, dtype=np.int64))
    signs = np.asarray(torch_ops.core.estimator_signs(tuple(x_seed), k, n), dtype=np.float32)
    return torch.from_numpy(signs.reshape(shape)).cuda()


def reference(estimator, x, w_mu, w_rho, w_seed, b, x_seed, dy, rows_per_example=1):
    """(y, y_std or None, dx, dw_mu, dw_rho, db_mu, db_rho) in float32; flipout's signs are per
    example of ``rows_per_example`` rows."""
    sigma = torch.nn.functional.softplus(w_rho)
    y_shape = (x.shape[0], w_mu.shape[0])
    y, dx, dw_mu = x @ w_mu.T, dy @ w_mu, dy.T @ x
    if estimator == "flipout":
        eps = host_eps(tuple(w_mu.shape), w_seed)
        examples = x.shape[0] // rows_per_example
        s_in = host_signs((examples, x.shape[1]), x_seed, 0).repeat_interleave(rows_per_example, 0)
        s_out = host_signs((examples, y_shape[1]), x_seed, 1).repeat_interleave(rows_per_example, 0)
        perturbation, x_signed, dy_signed = sigma * eps, x * s_in, dy * s_out
        y_std = None
        y = y + (x_signed @ perturbation.T) * s_out
        dx = dx + (dy_signed @ perturbation) * s_in
        dw_rho = (dy_signed.T @ x_signed) * eps * torch.sigmoid(w_rho)
    else:
        variance = sigma * sigma
        eps_out = host_eps(y_shape, torch_ops.core.estimator_seed(tuple(x_seed), 2))
        y_std = torch.sqrt((x * x) @ variance.T)
        y = y + y_std * eps_out
        dvariance = torch.where(y_std == 0, 0.0, dy * eps_out / (2 * y_std))
        dx = dx + 2 * x * (dvariance @ variance)
        dw_rho = (dvariance.T @ (x * x)) * 2 * sigma * torch.sigmoid(w_rho)
    if b is None:
        return [y, y_std, dx, dw_mu, dw_rho, None, None]
    b_mu, b_rho, b_seed = b
    b_eps = host_eps(tuple(b_mu.shape), b_seed)
    db = dy.sum(0)
    y = y + (b_mu + torch.nn.functional.softplus(b_rho) * b_eps)
    return [y, y_std, dx, dw_mu, dw_rho, db, db * b_eps * torch.sigmoid(b_rho)]


def run(estimator, x, w_mu, w_rho, w_seed, bias_args, x_seed, dy, rows_per_example=1):
    """The kernels' (y, y_std or None, dx, dw_mu, dw_rho, db_mu, db_rho)."""
    if estimator == "flipout":
        per_example = {"x_seed": x_seed, "rows_per_example": rows_per_example}
        y = torch_ops.flipout_linear(x, w_mu, w_rho, w_seed, *bias_args, **per_example)
        return [y, None, *torch_ops.flipout_linear_grad(dy, x, w_mu, w_rho, w_seed, *bias_args, **per_example)]
    y, y_std = torch_ops.local_reparam_linear(x, w_mu, w_rho, w_seed, *bias_args, x_seed=x_seed)
    grads = torch_ops.local_reparam_linear_grad(dy, x, w_mu, w_rho, w_seed, *bias_args, x_seed=x_seed, y_std=y_std)
    return [y, y_std, *grads]


def check(actual, expected):
    for name, got, want in zip(["y", "y_std", *GRAD_NAMES], actual, expected):
        if want is not None:  # every output sums over rows or features: a contraction
            assert_close(got, want, CONTRACTION, name)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("rows,n_in,n_out", SHAPES)
@pytest.mark.parametrize("use_bias", [True, False])
def test_forward_and_backward(estimator, rows, n_in, n_out, use_bias):
    rng = rng_for(estimator, rows, n_in, n_out, use_bias)
    x = normal_tensor(rng, (rows, n_in))
    w_mu, w_rho = gaussian_params(rng, (n_out, n_in))
    w_seed, x_seed = seed_of(rng), seed_of(rng)
    b = (*gaussian_params(rng, (n_out,)), seed_of(rng)) if use_bias else None
    dy = normal_tensor(rng, (rows, n_out))
    bias_args = b if use_bias else (None, None, (0, 0))
    check(
        run(estimator, x, w_mu, w_rho, w_seed, bias_args, x_seed, dy),
        reference(estimator, x, w_mu, w_rho, w_seed, b, x_seed, dy),
    )


@pytest.mark.parametrize("rows,rows_per_example,n_in,n_out", [(12, 4, 5, 7), (66, 33, 130, 257), (200, 100, 64, 64)])
def test_flipout_signs_per_example_of_several_rows(rows, rows_per_example, n_in, n_out):
    rng = rng_for("rows per example", rows, rows_per_example)
    x = normal_tensor(rng, (rows, n_in))
    w_mu, w_rho = gaussian_params(rng, (n_out, n_in))
    b = (*gaussian_params(rng, (n_out,)), seed_of(rng))
    dy = normal_tensor(rng, (rows, n_out))
    check(
        run("flipout", x, w_mu, w_rho, (3, 4), b, (5, 6), dy, rows_per_example),
        reference("flipout", x, w_mu, w_rho, (3, 4), b, (5, 6), dy, rows_per_example),
    )


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_unaligned_inputs(estimator):
    rng = rng_for("unaligned", estimator)
    x = misaligned(normal_tensor(rng, (40, 67)))
    w_mu, w_rho = (misaligned(t) for t in gaussian_params(rng, (45, 67)))
    dy = misaligned(normal_tensor(rng, (40, 45)))
    w_seed, x_seed = seed_of(rng), seed_of(rng)
    no_bias = (None, None, (0, 0))
    check(
        run(estimator, x, w_mu, w_rho, w_seed, no_bias, x_seed, dy),
        reference(estimator, x, w_mu, w_rho, w_seed, None, x_seed, dy),
    )


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_weight_gradient_beyond_65535_tiles(estimator):
    # 65,537 tiles of 64 outputs: the tiles go along gridDim.x, not y.
    rows, n_in, n_out = 2, 3, 65537 * 64
    rng = rng_for("grid limit", estimator)
    x = normal_tensor(rng, (rows, n_in))
    w_mu, w_rho = gaussian_params(rng, (n_out, n_in))
    dy = normal_tensor(rng, (rows, n_out))
    no_bias = (None, None, (0, 0))
    check(
        run(estimator, x, w_mu, w_rho, (7, 8), no_bias, (9, 10), dy),
        reference(estimator, x, w_mu, w_rho, (7, 8), None, (9, 10), dy),
    )


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_deterministic_and_per_example(estimator):
    # The same seeds give the same bits; two examples with the same x get different noise terms.
    rng = rng_for("deterministic", estimator)
    x = normal_tensor(rng, (1, 512)).repeat(16, 1)
    w_mu, w_rho = gaussian_params(rng, (256, 512))
    first = run(estimator, x, w_mu, w_rho, (5, 6), (None, None, (0, 0)), (7, 8), torch.ones(16, 256, device="cuda"))
    again = run(estimator, x, w_mu, w_rho, (5, 6), (None, None, (0, 0)), (7, 8), torch.ones(16, 256, device="cuda"))
    for got, want in zip(first, again):
        if want is not None:
            assert torch.equal(got, want)
    assert not torch.equal(first[0][0], first[0][1])
