"""CUDA Embedding lookup (sample-and-gather) and its scatter-add backward against PyTorch float32
maths built from the host noise; out-of-range ids are neither read nor written."""

import pytest

from gpu_testing import (ELEMENTWISE, assert_close, gaussian_params, host_eps, misaligned, normal_tensor,
                         requires_gpu, rng_for, seed_of, torch, torch_ops)

pytestmark = requires_gpu

# (num_embeddings, dim, ids shape, highest id drawn): small id ranges force repeated rows.
CASES = [
    (1, 1, (1,), 1), (10, 3, (4, 5), 10), (50, 5, (3, 7), 4), (1000, 128, (32, 64), 1000),
    (300, 130, (17,), 300), (64, 7, (0,), 64), (5000, 33, (2, 3, 50), 40),
]


def reference(ids, w_mu, w_rho, seed, padding_idx, dy):
    eps = host_eps(tuple(w_mu.shape), seed)
    w = w_mu + torch.nn.functional.softplus(w_rho) * eps
    keep = torch.ones(w.shape[0], 1, device="cuda")
    if padding_idx is not None:
        keep[padding_idx] = 0.0
    out = (w * keep)[ids.long()]
    dw = torch.zeros_like(w_mu).index_add_(0, ids.long().reshape(-1), dy.reshape(-1, w.shape[1])) * keep
    return out, dw, dw * eps * torch.sigmoid(w_rho)


@pytest.mark.parametrize("num,dim,ids_shape,high", CASES)
@pytest.mark.parametrize("ids_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("padding", [False, True])
def test_forward_and_backward(num, dim, ids_shape, high, ids_dtype, padding):
    rng = rng_for("embedding", num, dim, ids_shape, high, str(ids_dtype), padding)
    w_mu, w_rho = gaussian_params(rng, (num, dim))
    ids = torch.from_numpy(rng.integers(0, high, ids_shape)).to("cuda", ids_dtype)
    padding_idx = int(rng.integers(0, high)) if padding else None
    seed = seed_of(rng)
    dy = normal_tensor(rng, (*ids_shape, dim))
    out_ref, dmu_ref, drho_ref = reference(ids, w_mu, w_rho, seed, padding_idx, dy)

    out, bad_id = torch_ops.embedding(ids, w_mu, w_rho, seed, padding_idx)
    assert_close(out, out_ref, ELEMENTWISE, "out")
    assert bad_id.item() == 0
    dmu, drho = torch_ops.embedding_grad(ids, dy, w_rho, seed, padding_idx)
    # Rows summed over repeated ids: a (short) contraction, in atomic order.
    assert_close(dmu, dmu_ref, ELEMENTWISE, "dw_mu")
    assert_close(drho, drho_ref, ELEMENTWISE, "dw_rho")


def test_unaligned_rows():
    rng = rng_for("embedding-unaligned")
    w_mu, w_rho = (misaligned(t) for t in gaussian_params(rng, (40, 8)))
    ids = torch.from_numpy(rng.integers(0, 40, (30,))).cuda()
    dy = misaligned(normal_tensor(rng, (30, 8)))
    out_ref, dmu_ref, drho_ref = reference(ids, w_mu, w_rho, (9, 9), None, dy)
    assert_close(torch_ops.embedding(ids, w_mu, w_rho, (9, 9))[0], out_ref, ELEMENTWISE, "out")
    dmu, drho = torch_ops.embedding_grad(ids, dy, w_rho, (9, 9))
    assert_close(dmu, dmu_ref, ELEMENTWISE, "dw_mu")
    assert_close(drho, drho_ref, ELEMENTWISE, "dw_rho")


def test_out_of_range_ids_are_flagged_and_skipped():
    rng = rng_for("embedding-bad-ids")
    w_mu, w_rho = gaussian_params(rng, (20, 6))
    ids = torch.tensor([3, -1, 20, 7, 2**40, -(2**40)], device="cuda")
    dy = normal_tensor(rng, (6, 6))
    out, bad_id = torch_ops.embedding(ids, w_mu, w_rho, (1, 1))
    assert bad_id.item() == 1
    valid = torch.tensor([True, False, False, True, False, False], device="cuda")
    assert torch.equal(out[~valid], torch.zeros_like(out[~valid]))
    out_ref, dmu_ref, drho_ref = reference(ids[valid], w_mu, w_rho, (1, 1), None, dy[valid])
    assert_close(out[valid], out_ref, ELEMENTWISE, "valid rows")
    dmu, drho = torch_ops.embedding_grad(ids, dy, w_rho, (1, 1))
    assert_close(dmu, dmu_ref, ELEMENTWISE, "dw_mu")
    assert_close(drho, drho_ref, ELEMENTWISE, "dw_rho")
