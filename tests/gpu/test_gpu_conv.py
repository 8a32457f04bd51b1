"""CUDA Conv2d and Conv1d forward and backward against torch.nn.functional.conv2d / conv1d in float32
(TF32 off) with the host noise: layouts converted (NHWC / NCHW, TensorFlow's kernel [kh, kw, in/groups,
out]), TensorFlow's SAME padding applied as an explicit pad; every gradient through autograd."""

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

F = torch.nn.functional

pytestmark = requires_gpu


def tf_pads(size, kernel, stride, dilation, padding):
    """(before, after) of one axis for "VALID" or "SAME", with TensorFlow's arithmetic (the odd SAME
    element at the end)."""
    if padding == "VALID":
        return 0, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def reference(x, w_mu, w_rho, w_seed, b, dy, stride, padding, dilation, groups, channels_last):
    """(y, dx, dw_mu, dw_rho, db_mu, db_rho) in the fused op's layouts, from torch's float32 conv2d."""
    eps = host_eps(tuple(w_mu.shape), w_seed)
    w = (w_mu + F.softplus(w_rho) * eps).detach().requires_grad_(True)
    x_nchw = (x.permute(0, 3, 1, 2) if channels_last else x).detach().requires_grad_(True)
    if isinstance(padding, str):
        (top, bottom), (left, right) = (
            tf_pads(x_nchw.shape[2 + a], w_mu.shape[a], stride[a], dilation[a], padding) for a in range(2)
        )
    else:
        (top, bottom), (left, right) = padding
    bias = None
    if b is not None:
        b_mu, b_rho, b_seed = b
        b_eps = host_eps(tuple(b_mu.shape), b_seed)
        bias = b_mu + F.softplus(b_rho) * b_eps
    y = F.conv2d(F.pad(x_nchw, (left, right, top, bottom)), w.permute(3, 2, 0, 1), bias, stride, 0, dilation, groups)
    y_layout = y.permute(0, 2, 3, 1) if channels_last else y
    dx, dw = (
        torch.autograd.grad(y_layout, (x_nchw, w), dy) if y.numel() else (torch.zeros_like(x_nchw), torch.zeros_like(w))
    )
    dx = dx.permute(0, 2, 3, 1) if channels_last else dx
    grads = [dx, dw, dw * eps * torch.sigmoid(w_rho)]
    if b is None:
        return [y_layout.detach()] + grads + [None, None]
    db = dy.sum((0, 1, 2) if channels_last else (0, 2, 3))
    return [y_layout.detach()] + grads + [db, db * b_eps * torch.sigmoid(b_rho)]


def check(x, w_mu, w_rho, w_seed, b, dy, stride, padding, dilation, groups, data_format):
    channels_last = data_format == "NHWC"
    options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, data_format=data_format)
    bias_args = b if b is not None else (None, None, (0, 0))
    expected = reference(x, w_mu, w_rho, w_seed, b, dy, stride, padding, dilation, groups, channels_last)
    assert_close(torch_ops.conv2d(x, w_mu, w_rho, w_seed, *bias_args, **options), expected[0], CONTRACTION, "y")
    actual = torch_ops.conv2d_grad(dy, x, w_mu, w_rho, w_seed, *bias_args, **options)
    for name, got, want in zip(["dx", "dw_mu", "dw_rho", "db_mu", "db_rho"], actual, expected[1:]):
        if want is not None:
            assert_close(got, want, CONTRACTION, name)


# (batch, h, w, in, out, kernel (kh, kw), stride, padding, dilation, groups): odd sizes, batch 1, 1x1
# kernels, groups, depthwise, dilation, stride 2 (and stride > kernel: inputs no window reads),
# every padding, sizes around the 128 x 64 tiles and the 16-step stages, an empty batch.
CASES = [
    (2, 5, 7, 3, 4, (3, 3), (1, 1), "VALID", (1, 1), 1),
    (1, 1, 1, 1, 1, (1, 1), (1, 1), "VALID", (1, 1), 1),
    (1, 13, 11, 17, 65, (1, 1), (1, 1), "SAME", (1, 1), 1),
    (3, 9, 8, 3, 70, (3, 3), (1, 1), "SAME", (2, 2), 1),
    (2, 7, 6, 4, 6, (3, 2), (2, 2), [[1, 2], [0, 1]], (2, 1), 2),
    (2, 12, 10, 32, 64, (3, 3), (2, 2), "SAME", (1, 1), 4),
    (2, 6, 7, 5, 10, (3, 3), (2, 1), "SAME", (1, 1), 5),
    (4, 15, 15, 24, 24, (5, 5), (1, 1), "SAME", (1, 1), 24),
    (2, 8, 7, 2, 3, (2, 2), (3, 3), "VALID", (1, 1), 1),
    (5, 33, 31, 19, 37, (3, 3), (1, 1), [[2, 0], [1, 3]], (1, 1), 1),
    (16, 28, 28, 64, 64, (3, 3), (1, 1), "SAME", (1, 1), 1),
    (0, 5, 5, 3, 4, (3, 3), (1, 1), "SAME", (1, 1), 1),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:5])) + f"-g{c[9]}")
@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_conv2d(case, data_format, use_bias):
    batch, h, w, c_in, c_out, kernel, stride, padding, dilation, groups = case
    rng = rng_for("conv2d", case, data_format, use_bias)
    x_shape = (batch, h, w, c_in) if data_format == "NHWC" else (batch, c_in, h, w)
    x = normal_tensor(rng, x_shape)
    w_mu, w_rho = gaussian_params(rng, (*kernel, c_in // groups, c_out))
    b = (*gaussian_params(rng, (c_out,)), seed_of(rng)) if use_bias else None
    y_shape = torch_ops.core.cuda.conv_output_shape(
        **torch_ops._conv_geometry(x, w_mu, stride, padding, dilation, groups, data_format)
    )
    dy = normal_tensor(rng, tuple(y_shape))
    check(x, w_mu, w_rho, seed_of(rng), b, dy, stride, padding, dilation, groups, data_format)


# Conv1d is the unit-height case: (batch, length, in, out, k, stride, padding [left, right] or a mode,
# dilation, groups).
CASES_1D = [
    (1, 17, 4, 3, 5, 3, [4, 1], 2, 1),
    (2, 16, 3, 5, 4, 1, "SAME", 1, 1),
    (3, 100, 12, 8, 5, 2, "VALID", 3, 4),
    (2, 64, 16, 16, 3, 1, "SAME", 1, 16),
]


@pytest.mark.parametrize("case", CASES_1D, ids=lambda c: "x".join(map(str, c[:5])))
@pytest.mark.parametrize("data_format", ["NWC", "NCW"])
def test_conv1d(case, data_format):
    batch, length, c_in, c_out, k, stride, padding, dilation, groups = case
    rng = rng_for("conv1d", case, data_format)
    channels_last = data_format == "NWC"
    x = normal_tensor(rng, (batch, length, c_in) if channels_last else (batch, c_in, length))
    w_mu, w_rho = gaussian_params(rng, (k, c_in // groups, c_out))
    b_mu, b_rho = gaussian_params(rng, (c_out,))
    w_seed, b_seed = seed_of(rng), seed_of(rng)
    explicit = padding if isinstance(padding, str) else [[0, 0], padding]
    options = dict(
        stride=(1, stride),
        padding=explicit,
        dilation=(1, dilation),
        groups=groups,
        data_format="NHWC" if channels_last else "NCHW",
    )
    x4 = x.unsqueeze(1 if channels_last else 2)
    y = torch_ops.conv2d(x4, w_mu[None], w_rho[None], w_seed, b_mu, b_rho, b_seed, **options)
    y = y.squeeze(1 if channels_last else 2)

    eps, b_eps = host_eps(tuple(w_mu.shape), w_seed), host_eps((c_out,), b_seed)
    w = (w_mu + F.softplus(w_rho) * eps).requires_grad_(True)
    x_ncw = (x.transpose(1, 2) if channels_last else x).detach().requires_grad_(True)
    left, right = tf_pads(length, k, stride, dilation, padding) if isinstance(padding, str) else padding
    want = F.conv1d(
        F.pad(x_ncw, (left, right)), w.permute(2, 1, 0), b_mu + F.softplus(b_rho) * b_eps, stride, 0, dilation, groups
    )
    want = want.transpose(1, 2) if channels_last else want
    assert_close(y, want.detach(), CONTRACTION, "y")

    dy = normal_tensor(rng, tuple(y.shape))
    dx_want, dw_want = torch.autograd.grad(want, (x_ncw, w), dy)
    dx_want = dx_want.transpose(1, 2) if channels_last else dx_want
    dx, dw_mu, dw_rho, db_mu, db_rho = torch_ops.conv2d_grad(
        dy.unsqueeze(1 if channels_last else 2), x4, w_mu[None], w_rho[None], w_seed, b_mu, b_rho, b_seed, **options
    )
    db = dy.sum((0, 1) if channels_last else (0, 2))
    assert_close(dx.squeeze(1 if channels_last else 2), dx_want, CONTRACTION, "dx")
    assert_close(dw_mu[0], dw_want, CONTRACTION, "dw_mu")
    assert_close(dw_rho[0], dw_want * eps * torch.sigmoid(w_rho), CONTRACTION, "dw_rho")
    assert_close(db_mu, db, CONTRACTION, "db_mu")
    assert_close(db_rho, db * b_eps * torch.sigmoid(b_rho), CONTRACTION, "db_rho")


def test_unaligned_tensors():
    # The kernels make no alignment assumption about x, dy or the parameters.
    rng = rng_for("conv unaligned")
    x = misaligned(normal_tensor(rng, (3, 9, 10, 6)))
    w_mu, w_rho = (misaligned(t) for t in gaussian_params(rng, (3, 3, 6, 7)))
    dy = misaligned(normal_tensor(rng, (3, 9, 10, 7)))
    check(x, w_mu, w_rho, seed_of(rng), None, dy, (1, 1), "SAME", (1, 1), 1, "NHWC")


def test_backward_is_deterministic():
    # Every reduction (the split dW, the bias sums) adds its partials in a fixed order.
    rng = rng_for("conv deterministic")
    x = normal_tensor(rng, (8, 20, 20, 16))
    w_mu, w_rho = gaussian_params(rng, (3, 3, 16, 32))
    b_mu, b_rho = gaussian_params(rng, (32,))
    dy = normal_tensor(rng, (8, 20, 20, 32))
    first = torch_ops.conv2d_grad(dy, x, w_mu, w_rho, (5, 6), b_mu, b_rho, (7, 8), padding="SAME")
    second = torch_ops.conv2d_grad(dy, x, w_mu, w_rho, (5, 6), b_mu, b_rho, (7, 8), padding="SAME")
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_rejects_invalid_geometry():
    x = torch.zeros((1, 4, 4, 3), device="cuda")
    w = torch.zeros((5, 5, 3, 2), device="cuda")
    with pytest.raises(ValueError, match="smaller than the dilated kernel window"):
        torch_ops.conv2d(x, w, w, (1, 2))
