"""CUDA LSTM forward and backpropagation through time against a PyTorch float32 step loop built
from the host noise (autograd for every gradient), with the saved gates and cells checked too."""

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

# (batch, steps, in, hidden): batch and steps 0 and 1, odd sizes, E = 0, row tiles of 16 / 32 and
# column tiles of 64 crossed, the benchmark's widths, and (on a 132-multiprocessor H100) the
# 128 x 128 tiles of the input projection, of dW and of dx.
SHAPES = [
    (1, 1, 1, 1),
    (3, 5, 7, 5),
    (1, 7, 3, 17),
    (0, 5, 7, 5),
    (3, 0, 7, 5),
    (2, 3, 0, 4),
    (33, 9, 67, 70),
    (17, 12, 96, 160),
    (64, 6, 256, 512),
    (64, 40, 64, 256),
    (4, 3, 1100, 1024),
    (128, 40, 512, 32),
]


def make_inputs(rng, batch, steps, n_in, hidden, zero_state):
    x = normal_tensor(rng, (batch, steps, n_in))
    w_mu, w_rho = gaussian_params(rng, (n_in + hidden, 4 * hidden))
    # Recurrent weights of gain about 1: with std 0.5 over 256 hidden units the recurrence is chaotic
    # and float32 itself drifts from float64 by 3e-3 over 40 steps, beyond any fixed bound.
    w_mu[n_in:] *= min(1.0, 2.0 / hidden**0.5)
    b_mu, b_rho = gaussian_params(rng, (4 * hidden,))
    if zero_state:
        h0 = c0 = torch.zeros(batch, hidden, device="cuda")
    else:
        h0, c0 = 0.5 * normal_tensor(rng, (batch, hidden)), normal_tensor(rng, (batch, hidden))
    return x, w_mu, w_rho, seed_of(rng), b_mu, b_rho, seed_of(rng), h0, c0


def reference(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, h0, c0, dh_seq, dh_last, dc_last):
    """Forward outputs (h_seq, h_last, c_last, w, gates, cells) and the gradients
    (dx, dw_mu, dw_rho, db_mu, db_rho, dh0, dc0) of sum(h_seq dh_seq) + sum(h_T dh_last) + sum(c_T dc_last)."""
    leaves = [t.clone().requires_grad_(True) for t in (x, w_mu, w_rho, b_mu, b_rho, h0, c0)]
    xl, wml, wrl, bml, brl, h0l, c0l = leaves
    w = wml + torch.nn.functional.softplus(wrl) * host_eps(tuple(w_mu.shape), w_seed)
    b = bml + torch.nn.functional.softplus(brl) * host_eps(tuple(b_mu.shape), b_seed)
    h_seq, h_last, c_last, gates, cells = torch_ops.lstm_step_loop(xl, w, b, h0l, c0l, keep_gates=True)
    loss = (h_seq * dh_seq).sum() + (h_last * dh_last).sum() + (c_last * dc_last).sum()
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    grads = [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, grads)]
    forward = [t.detach() for t in (h_seq, h_last, c_last, w, gates, cells)]
    return forward, grads


def run_case(inputs, rng, dz_in_gates=False):
    x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, h0, c0 = inputs
    batch, steps, _ = x.shape
    hidden = w_mu.shape[1] // 4
    dh_seq, dh_last, dc_last = (
        normal_tensor(rng, shape) for shape in ((batch, steps, hidden), (batch, hidden), (batch, hidden))
    )
    expected_forward, expected_grads = reference(*inputs, dh_seq, dh_last, dc_last)

    forward = torch_ops.lstm(*inputs)
    for name, got, want in zip(["h_seq", "h_last", "c_last", "w", "gates", "cells"], forward, expected_forward):
        assert_close(got, want, CONTRACTION, name)
    h_seq, _, _, w, gates, cells = forward
    grads = torch_ops.lstm_grad(
        dh_seq,
        dh_last,
        dc_last,
        x,
        w_rho,
        w_seed,
        b_rho,
        b_seed,
        h0,
        c0,
        h_seq,
        w,
        gates,
        cells,
        dz_in_gates=dz_in_gates,
    )
    # [dx, dw_mu, dw_rho, db_mu, db_rho, dh0, dc0] against autograd's [x, w_mu, w_rho, b_mu, b_rho, h0, c0].
    for name, got, want in zip(["dx", "dw_mu", "dw_rho", "db_mu", "db_rho", "dh0", "dc0"], grads, expected_grads):
        assert_close(got, want, CONTRACTION, name)
    return forward, grads


@pytest.mark.parametrize("batch,steps,n_in,hidden", SHAPES)
@pytest.mark.parametrize("zero_state", [False, True])
def test_forward_and_backward(batch, steps, n_in, hidden, zero_state):
    rng = rng_for("lstm", batch, steps, n_in, hidden, zero_state)
    run_case(make_inputs(rng, batch, steps, n_in, hidden, zero_state), rng)


def test_dz_in_the_gates_buffer():
    # The TensorFlow op hands the saved gates over as dz when nothing else holds them.
    rng = rng_for("lstm-dz-alias")
    inputs = make_inputs(rng, 5, 7, 9, 33, False)
    run_case(inputs, rng, dz_in_gates=True)


def test_unaligned_tensors():
    rng = rng_for("lstm-unaligned")
    inputs = [misaligned(t) if isinstance(t, torch.Tensor) else t for t in make_inputs(rng, 3, 4, 5, 9, False)]
    run_case(inputs, rng)


def test_deterministic():
    rng = rng_for("lstm-deterministic")
    inputs = make_inputs(rng, 64, 10, 256, 512, False)
    first, first_grads = run_case(inputs, rng_for("lstm-deterministic-dy"))
    again, again_grads = run_case(inputs, rng_for("lstm-deterministic-dy"))
    for a, b in zip(first + first_grads, again + again_grads):
        assert torch.equal(a, b)
