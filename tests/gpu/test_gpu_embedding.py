"""CUDA Embedding lookup (sample-and-gather, max_norm rescale) and its backward over the distinct
looked-up rows, against float64 PyTorch maths from the host noise; out-of-range ids are neither
read nor written.

The max_norm reference is the CPU op's formula, out = e * max_norm / max(|e|_p, max_norm) with the
gradient flowing through the norm, differentiated by autograd: torch.nn.functional.embedding's
max_norm renormalises the table in place instead and passes no gradient through the rescale."""

import pytest

from gpu_testing import (
    ELEMENTWISE,
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

# (num_embeddings, dim, ids shape, highest id drawn): small id ranges force repeated rows.
CASES = [
    (1, 1, (1,), 1),
    (10, 3, (4, 5), 10),
    (50, 5, (3, 7), 4),
    (1000, 128, (32, 64), 1000),
    (300, 130, (17,), 300),
    (64, 7, (0,), 64),
    (5000, 33, (2, 3, 50), 40),
    (40, 1100, (9,), 40),
]


def reference(ids, w_mu, w_rho, seed, padding_idx, dy, max_norm=None, norm_type=2.0):
    """(out, dw_drho, rows, dw_mu[rows], dw_rho[rows]) in float64; ids all in range. dw_drho =
    eps * sigmoid(rho) of each looked-up element, zero at padding_idx."""
    eps = host_eps(tuple(w_mu.shape), seed).double()
    rho = w_rho.double()
    w = (w_mu.double() + torch.nn.functional.softplus(rho) * eps).requires_grad_(True)
    e = w[ids.long()]
    if max_norm is not None:
        norm = torch.linalg.vector_norm(e, ord=norm_type, dim=-1, keepdim=True)
        e = e * (max_norm / torch.clamp(norm, min=max_norm))
    if padding_idx is not None:
        e = e * (ids.long() != padding_idx).unsqueeze(-1)
    (dw,) = torch.autograd.grad(e, w, dy.double())
    rows = torch.unique(ids.long())
    if padding_idx is not None:
        rows = rows[rows != padding_idx]
    factor = eps * torch.sigmoid(rho)
    dw_drho = factor[ids.long()]
    if padding_idx is not None:
        dw_drho = dw_drho * (ids.long() != padding_idx).unsqueeze(-1)
    return e.detach(), dw_drho, rows, dw[rows], (dw * factor)[rows]


def assert_grad_close(actual, expected, dy, what):
    """assert_close, relative to at least 1e-6 |dy|: a gradient through the rescale can be zero up
    to rounding (a rescaled row of dim 1 is constant)."""
    floor = 1e-6 * dy.double().norm().item()
    if expected.norm().item() >= floor:
        assert_close(actual, expected, ELEMENTWISE, what)
        return
    assert torch.isfinite(actual).all(), f"{what}: non-finite elements"
    assert (actual.double() - expected).norm().item() <= ELEMENTWISE * floor, what


def check(ids, w_mu, w_rho, seed, dy, padding_idx=None, max_norm=None, norm_type=2.0):
    out_ref, dw_drho_ref, rows_ref, dmu_ref, drho_ref = reference(
        ids, w_mu, w_rho, seed, padding_idx, dy, max_norm, norm_type
    )
    out, dw_drho, bad_id = torch_ops.embedding(ids, w_mu, w_rho, seed, padding_idx, max_norm, norm_type)
    assert_close(out, out_ref, ELEMENTWISE, "out")
    assert_close(dw_drho, dw_drho_ref, ELEMENTWISE, "dw_drho")
    assert bad_id.item() == 0
    rows, dmu, drho = torch_ops.embedding_grad(ids, dy, dw_drho, w_mu, w_rho, seed, padding_idx, max_norm, norm_type)
    assert torch.equal(rows, rows_ref)
    assert_grad_close(dmu, dmu_ref, dy, "dw_mu")
    assert_grad_close(drho, drho_ref, dy, "dw_rho")


def draw_case(key, num, dim, ids_shape, high, ids_dtype=torch.int64):
    rng = rng_for(*key)
    w_mu, w_rho = gaussian_params(rng, (num, dim))
    ids = torch.from_numpy(rng.integers(0, high, ids_shape)).to("cuda", ids_dtype)
    return rng, w_mu, w_rho, ids, seed_of(rng), normal_tensor(rng, (*ids_shape, dim))


@pytest.mark.parametrize("num,dim,ids_shape,high", CASES)
@pytest.mark.parametrize("ids_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("padding", [False, True])
def test_forward_and_backward(num, dim, ids_shape, high, ids_dtype, padding):
    rng, w_mu, w_rho, ids, seed, dy = draw_case(
        ("embedding", num, dim, ids_shape, high, str(ids_dtype), padding), num, dim, ids_shape, high, ids_dtype
    )
    check(ids, w_mu, w_rho, seed, dy, int(rng.integers(0, high)) if padding else None)


def split_max_norm(w_mu, w_rho, seed, norm_type):
    """A max_norm between the norms of the table's rows: some rows rescaled, some not."""
    w = w_mu.double() + torch.nn.functional.softplus(w_rho.double()) * host_eps(tuple(w_mu.shape), seed).double()
    norms = torch.sort(torch.linalg.vector_norm(w, ord=norm_type, dim=-1)).values
    k = max(1, len(norms) // 2)
    return float((norms[k - 1] + norms[k]) / 2 if k < len(norms) else norms[0] / 2)


@pytest.mark.parametrize("num,dim,ids_shape,high", CASES)
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, 0.5])
@pytest.mark.parametrize("padding", [False, True])
def test_max_norm(num, dim, ids_shape, high, norm_type, padding):
    rng, w_mu, w_rho, ids, seed, dy = draw_case(
        ("embedding-max-norm", num, dim, ids_shape, high, norm_type, padding), num, dim, ids_shape, high
    )
    # Rows of very different norms (odd rows large), so that the split falls in a wide gap.
    w_mu[1::2] *= 4.0
    check(
        ids,
        w_mu,
        w_rho,
        seed,
        dy,
        int(rng.integers(0, high)) if padding else None,
        split_max_norm(w_mu, w_rho, seed, norm_type),
        norm_type,
    )


@pytest.mark.parametrize("max_norm", [1e-3, 1e6])
@pytest.mark.parametrize("ids_dtype", [torch.int32, torch.int64])
def test_max_norm_above_and_below_every_row(max_norm, ids_dtype):
    _, w_mu, w_rho, ids, seed, dy = draw_case(
        ("embedding-max-norm-all", max_norm, str(ids_dtype)), 200, 64, (8, 16), 50, ids_dtype
    )
    check(ids, w_mu, w_rho, seed, dy, max_norm=max_norm)


def test_unaligned_rows():
    rng = rng_for("embedding-unaligned")
    w_mu, w_rho = (misaligned(t) for t in gaussian_params(rng, (40, 8)))
    ids = torch.from_numpy(rng.integers(0, 40, (30,))).cuda()
    dy = misaligned(normal_tensor(rng, (30, 8)))
    check(ids, w_mu, w_rho, (9, 9), dy)
    check(ids, w_mu, w_rho, (9, 9), dy, max_norm=split_max_norm(w_mu, w_rho, (9, 9), 2.0))


def test_out_of_range_ids_are_flagged_and_skipped():
    rng = rng_for("embedding-bad-ids")
    w_mu, w_rho = gaussian_params(rng, (20, 6))
    ids = torch.tensor([3, -1, 20, 7, 2**40, -(2**40)], device="cuda")
    dy = normal_tensor(rng, (6, 6))
    valid = torch.tensor([True, False, False, True, False, False], device="cuda")
    for max_norm in (None, 0.5):
        out, dw_drho, bad_id = torch_ops.embedding(ids, w_mu, w_rho, (1, 1), max_norm=max_norm)
        assert bad_id.item() == 1
        assert torch.equal(out[~valid], torch.zeros_like(out[~valid]))
        assert torch.equal(dw_drho[~valid], torch.zeros_like(dw_drho[~valid]))
        out_ref, _, rows_ref, dmu_ref, drho_ref = reference(ids[valid], w_mu, w_rho, (1, 1), None, dy[valid], max_norm)
        assert_close(out[valid], out_ref, ELEMENTWISE, "valid rows")
        rows, dmu, drho = torch_ops.embedding_grad(ids, dy, dw_drho, w_mu, w_rho, (1, 1), max_norm=max_norm)
        assert torch.equal(rows, rows_ref)
        assert_close(dmu, dmu_ref, ELEMENTWISE, "dw_mu")
        assert_close(drho, drho_ref, ELEMENTWISE, "dw_rho")


def test_backward_is_deterministic():
    """Repeated rows are summed in a fixed order (no atomics): the same bits every run."""
    _, w_mu, w_rho, ids, seed, dy = draw_case(("embedding-deterministic",), 30, 96, (64, 32), 30)
    _, dw_drho, _ = torch_ops.embedding(ids, w_mu, w_rho, seed, max_norm=3.0)
    first = torch_ops.embedding_grad(ids, dy, dw_drho, w_mu, w_rho, seed, max_norm=3.0)
    for _ in range(3):
        again = torch_ops.embedding_grad(ids, dy, dw_drho, w_mu, w_rho, seed, max_norm=3.0)
        assert all(torch.equal(a, b) for a, b in zip(first, again))
