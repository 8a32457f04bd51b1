"""Every CUDA kernel of fusedbnn once, at small sizes off the tiles, forward and backward, for
compute-sanitizer (run_on_gpu.sh): the values are checked by tests/gpu, this only runs each kernel
path (both Linear plans, both Linear estimators, aligned and misaligned pointers, NHWC and NCHW,
grouped convolution, repeated ids with max_norm, an LSTM with several steps).
Exits 0 after a device synchronisation.

    compute-sanitizer --tool memcheck python tests/gpu/sanitize_subset.py
"""

import sys

import torch

import torch_ops


def randn(*shape, shift=0.0):
    return torch.randn(*shape, device="cuda") + shift


def misaligned(t):
    flat = torch.empty(t.numel() + 1, device="cuda")
    view = flat[1:].view(t.shape)
    view.copy_(t)
    return view


def gaussian():
    for n in (5, 4099):
        mu, rho, dw = randn(n), randn(n, shift=-3.0), randn(n)
        torch_ops.normal(n, (1, 2))
        torch_ops.sample_gaussian(misaligned(mu), misaligned(rho), (1, 2))
        torch_ops.sample_gaussian_grad(dw, mu, rho, (1, 2))
        torch_ops.gaussian_kl(mu, rho, (1, 2))
        torch_ops.gaussian_kl_grad(mu, rho, (1, 2), torch.ones((), device="cuda"))


def linear():
    for rows in (5, 70):  # W sampled in the product's tiles; W sampled into scratch
        x, w_mu, w_rho = randn(rows, 67), randn(45, 67), randn(45, 67, shift=-3.0)
        b_mu, b_rho, dy = randn(45), randn(45, shift=-3.0), randn(rows, 45)
        torch_ops.linear(x, w_mu, w_rho, (1, 2), b_mu, b_rho, (3, 4))
        torch_ops.linear_grad(dy, x, w_mu, w_rho, (1, 2), b_mu, b_rho, (3, 4))
        torch_ops.linear_grad(misaligned(dy), misaligned(x), misaligned(w_mu), misaligned(w_rho), (1, 2))


def estimators():
    x, w_mu, w_rho, dy = randn(5, 67), randn(45, 67), randn(45, 67, shift=-3.0), randn(5, 45)
    b_mu, b_rho = randn(45), randn(45, shift=-3.0)
    for inputs in ((x, w_mu, w_rho, dy), tuple(misaligned(t) for t in (x, w_mu, w_rho, dy))):
        x, w_mu, w_rho, dy = inputs
        torch_ops.flipout_linear(x, w_mu, w_rho, (1, 2), b_mu, b_rho, (3, 4), x_seed=(5, 6))
        torch_ops.flipout_linear_grad(dy, x, w_mu, w_rho, (1, 2), b_mu, b_rho, (3, 4), x_seed=(5, 6))
        _, y_std = torch_ops.local_reparam_linear(x, w_mu, w_rho, (1, 2), b_mu, b_rho, (3, 4), x_seed=(5, 6))
        torch_ops.local_reparam_linear_grad(dy, x, w_mu, w_rho, (1, 2), b_mu, b_rho, (3, 4), x_seed=(5, 6), y_std=y_std)


def conv():
    for data_format, groups in (("NHWC", 1), ("NCHW", 2)):
        x = randn(2, 9, 7, 6) if data_format == "NHWC" else randn(2, 6, 9, 7)
        w_mu, w_rho = randn(3, 3, 6 // groups, 10), randn(3, 3, 6 // groups, 10, shift=-3.0)
        b_mu, b_rho = randn(10), randn(10, shift=-3.0)
        options = dict(stride=(2, 1), padding="SAME", dilation=(1, 2), groups=groups, data_format=data_format)
        y = torch_ops.conv2d(x, w_mu, w_rho, (1, 2), b_mu, b_rho, (3, 4), **options)
        torch_ops.conv2d_grad(torch.randn_like(y), x, w_mu, w_rho, (1, 2), b_mu, b_rho, (3, 4), **options)


def embedding():
    ids = torch.tensor([[3, 1, 3, 0], [7, 3, 3, 2]], device="cuda")
    w_mu, w_rho = randn(9, 37), randn(9, 37, shift=-3.0)
    for max_norm in (None, 0.5):
        out, dw_drho, _ = torch_ops.embedding(ids, w_mu, w_rho, (1, 2), padding_idx=2, max_norm=max_norm)
        torch_ops.embedding_grad(
            ids, torch.randn_like(out), dw_drho, w_mu, w_rho, (1, 2), padding_idx=2, max_norm=max_norm
        )


def lstm():
    batch, steps, n_in, hidden = 3, 4, 5, 9
    x, h0, c0 = randn(batch, steps, n_in), randn(batch, hidden), randn(batch, hidden)
    w_mu, w_rho = randn(n_in + hidden, 4 * hidden), randn(n_in + hidden, 4 * hidden, shift=-3.0)
    b_mu, b_rho = randn(4 * hidden), randn(4 * hidden, shift=-3.0)
    h_seq, _, _, w, gates, cells = torch_ops.lstm(x, w_mu, w_rho, (1, 2), b_mu, b_rho, (3, 4), h0, c0)
    torch_ops.lstm_grad(
        torch.randn_like(h_seq),
        randn(batch, hidden),
        randn(batch, hidden),
        x,
        w_rho,
        (1, 2),
        b_rho,
        (3, 4),
        h0,
        c0,
        h_seq,
        w,
        gates,
        cells,
        dz_in_gates=True,
    )


def main():
    ok, why = torch_ops.available()
    if not ok:
        print(f"sanitize_subset: skipped: {why}")
        return 0
    torch.manual_seed(0)
    for run in (gaussian, linear, estimators, conv, embedding, lstm):
        print(f"sanitize_subset: {run.__name__}", flush=True)  # where a run past its time limit was
        run()
    torch.cuda.synchronize()
    print("sanitize_subset: every kernel ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
