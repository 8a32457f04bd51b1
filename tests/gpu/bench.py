"""GPU benchmark: fused fusedbnn CUDA kernels against the unfused Bayesian layer as a PyTorch user
writes it (mu + softplus(rho) * randn_like(mu), then matmul / gather) and the deterministic layer,
float32 on one card. The deterministic layer runs twice: in float32, and with TF32 tensor cores as a
TensorFlow user gets cuBLAS / cuDNN by default. CUDA events; each step's sides run alternately,
medians reported.

    python tests/gpu/bench.py [--reps 50] [--json results.json] [--cases REGEX] [--compare other.json]
"""

import argparse
import json
import os
import re
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import torch_ops


def time_sides(sides, reps, warmup=5):
    """Median milliseconds of each zero-argument callable, run in turn within every repetition: on
    the GPU (CUDA events) and on the host (the call's return; near the GPU time, the side is bound
    by its launches, not its kernels)."""
    for _ in range(warmup):
        for fn in sides.values():
            fn()
    times = {name: [] for name in sides}
    host = {name: [] for name in sides}
    for _ in range(reps):
        for name, fn in sides.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            called = time.perf_counter()
            fn()
            host[name].append((time.perf_counter() - called) * 1e3)
            end.record()
            end.synchronize()
            times[name].append(start.elapsed_time(end))
    return {name: statistics.median(t) for name, t in times.items()}, {
        name: statistics.median(t) for name, t in host.items()
    }


def with_tf32(fn):
    """fn with TF32 tensor cores allowed in cuBLAS and cuDNN (TensorFlow's default), float32 after."""

    def run():
        torch_ops.set_tf32(True)
        try:
            fn()
        finally:
            torch_ops.set_tf32(False)

    return run


def peak_mib(fn):
    """Peak memory a call allocates beyond what was allocated before it, in MiB."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def clear_grads(*tensors):
    for t in tensors:
        t.grad = None


def randn(*shape, scale=1.0, shift=0.0, grad=False):
    return (torch.randn(*shape, device="cuda") * scale + shift).requires_grad_(grad)


def linear_sides(rows, n_in, n_out, backward):
    x, dy = randn(rows, n_in, grad=backward), randn(rows, n_out)
    mu, rho = randn(n_out, n_in, scale=0.05, grad=backward), randn(n_out, n_in, shift=-5.0, grad=backward)
    b_mu, b_rho = randn(n_out, scale=0.05, grad=backward), randn(n_out, shift=-5.0, grad=backward)
    kernel, bias = randn(n_out, n_in, scale=0.05, grad=backward), randn(n_out, grad=backward)
    xd, mud, rhod, bmd, brd = (t.detach() for t in (x, mu, rho, b_mu, b_rho))

    def fused():
        torch_ops.linear(xd, mud, rhod, (1, 2), bmd, brd, (3, 4))
        if backward:
            torch_ops.linear_grad(dy, xd, mud, rhod, (1, 2), bmd, brd, (3, 4))

    def unfused():
        clear_grads(x, mu, rho, b_mu, b_rho)
        w = mu + F.softplus(rho) * torch.randn_like(mu)
        b = b_mu + F.softplus(b_rho) * torch.randn_like(b_mu)
        y = F.linear(x, w, b)
        if backward:
            y.backward(dy)

    def deterministic():
        clear_grads(x, kernel, bias)
        y = F.linear(x, kernel, bias)
        if backward:
            y.backward(dy)

    return {"fused": fused, "unfused": unfused, "deterministic": deterministic}


def estimator_sides(estimator, rows, n_in, n_out):
    """Linear forward+backward with a per-example estimator: the fused kernels, the same maths as a
    PyTorch user writes it (signs from randint, as bayesian-torch's LinearFlipout), the deterministic
    layer, and the fused default estimator's step ("reparameterization": issue 16's flipout target
    is 1.6x it)."""
    sides = linear_sides(rows, n_in, n_out, True)
    x, dy = randn(rows, n_in, grad=True), randn(rows, n_out)
    mu, rho = randn(n_out, n_in, scale=0.05, grad=True), randn(n_out, n_in, shift=-5.0, grad=True)
    b_mu, b_rho = randn(n_out, scale=0.05, grad=True), randn(n_out, shift=-5.0, grad=True)
    xd, mud, rhod, bmd, brd = (t.detach() for t in (x, mu, rho, b_mu, b_rho))
    params = (xd, mud, rhod, (1, 2), bmd, brd, (3, 4))

    def fused():
        if estimator == "flipout":
            torch_ops.flipout_linear(*params, x_seed=(5, 6))
            torch_ops.flipout_linear_grad(dy, *params, x_seed=(5, 6))
        else:
            _, y_std = torch_ops.local_reparam_linear(*params, x_seed=(5, 6))
            torch_ops.local_reparam_linear_grad(dy, *params, x_seed=(5, 6), y_std=y_std)

    def unfused():
        clear_grads(x, mu, rho, b_mu, b_rho)
        sigma = F.softplus(rho)
        b = b_mu + F.softplus(b_rho) * torch.randn_like(b_mu)
        if estimator == "flipout":
            s_in = torch.randint(0, 2, x.shape, device="cuda") * 2.0 - 1.0
            s_out = torch.randint(0, 2, dy.shape, device="cuda") * 2.0 - 1.0
            y = F.linear(x, mu, b) + F.linear(x * s_in, sigma * torch.randn_like(mu)) * s_out
        else:
            y_std = torch.sqrt(F.linear(x * x, sigma * sigma))
            y = F.linear(x, mu, b) + y_std * torch.randn_like(y_std)
        y.backward(dy)

    return {
        "fused": fused,
        "unfused": unfused,
        "deterministic": sides["deterministic"],
        "reparameterization": sides["fused"],
    }


def embedding_sides(num, dim, ids_shape, backward, zipf=False, max_norm=None):
    """zipf: ids drawn with probability 1 / (id + 1), so that a few rows repeat many times (the
    backward kernel's cost per row grows with the row's count: this measures the hot rows).
    max_norm: the other sides rescale explicitly, e * max_norm / max(|e|, max_norm) (the fused op's
    semantics; F.embedding's max_norm renormalises the table in place instead)."""
    if zipf:
        weights = 1.0 / torch.arange(1, num + 1, dtype=torch.float64, device="cuda")
        ids = torch.multinomial(weights, ids_shape[0] * ids_shape[1], replacement=True).reshape(ids_shape)
    else:
        ids = torch.randint(0, num, ids_shape, device="cuda")
    ids_host = ids.cpu()  # the TensorFlow op's ids live in host memory, where it lists the rows
    dy = randn(*ids_shape, dim)
    mu, rho = randn(num, dim, scale=0.05, grad=backward), randn(num, dim, shift=-5.0, grad=backward)
    table = randn(num, dim, grad=backward)
    mud, rhod = mu.detach(), rho.detach()

    def fused():
        _, dw_drho, _ = torch_ops.embedding(ids, mud, rhod, (1, 2), max_norm=max_norm)
        if backward:
            torch_ops.embedding_grad(ids_host, dy, dw_drho, mud, rhod, (1, 2), max_norm=max_norm)

    def lookup(w):
        out = F.embedding(ids, w)
        if max_norm is None:
            return out
        return out * (max_norm / torch.clamp(out.norm(dim=-1, keepdim=True), min=max_norm))

    def unfused():
        clear_grads(mu, rho)
        out = lookup(mu + F.softplus(rho) * torch.randn_like(mu))
        if backward:
            out.backward(dy)

    def deterministic():
        clear_grads(table)
        out = lookup(table)
        if backward:
            out.backward(dy)

    return {"fused": fused, "unfused": unfused, "deterministic": deterministic}


def lstm_sides(batch, steps, n_in, hidden, backward):
    """fused op; unfused Bayesian layer as a step loop and through cuDNN (torch.nn.LSTM run with the
    sampled weights, gate blocks reordered to PyTorch's i, f, g, o); deterministic torch.nn.LSTM."""
    gates = 4 * hidden
    x = randn(batch, steps, n_in, grad=backward)
    h0, c0 = randn(batch, hidden), randn(batch, hidden)
    dh_seq, dh_last, dc_last = randn(batch, steps, hidden), randn(batch, hidden), randn(batch, hidden)
    mu = randn(n_in + hidden, gates, scale=0.05, grad=backward)
    rho = randn(n_in + hidden, gates, shift=-5.0, grad=backward)
    b_mu, b_rho = randn(gates, scale=0.05, grad=backward), randn(gates, shift=-5.0, grad=backward)
    xd, mud, rhod, bmd, brd = (t.detach() for t in (x, mu, rho, b_mu, b_rho))
    to_torch_order = torch.cat(
        [torch.arange(hidden, 2 * hidden), torch.arange(hidden), torch.arange(2 * hidden, gates)]
    ).cuda()
    cudnn = torch.nn.LSTM(n_in, hidden, batch_first=True).cuda()
    no_bias = torch.zeros(gates, device="cuda")

    def sampled():
        w = mu + F.softplus(rho) * torch.randn_like(mu)
        return w, b_mu + F.softplus(b_rho) * torch.randn_like(b_mu)

    def backward_from(h_seq, h_last, c_last):
        if backward:
            torch.autograd.backward([h_seq, h_last, c_last], [dh_seq, dh_last, dc_last])

    def fused():
        h_seq, _, _, w, gate_values, cells = torch_ops.lstm(xd, mud, rhod, (1, 2), bmd, brd, (3, 4), h0, c0)
        if backward:
            torch_ops.lstm_grad(
                dh_seq,
                dh_last,
                dc_last,
                xd,
                rhod,
                (1, 2),
                brd,
                (3, 4),
                h0,
                c0,
                h_seq,
                w,
                gate_values,
                cells,
                dz_in_gates=True,
            )

    def unfused():
        clear_grads(x, mu, rho, b_mu, b_rho)
        w, b = sampled()
        h_seq, h_last, c_last, _, _ = torch_ops.lstm_step_loop(x, w, b, h0, c0)
        backward_from(h_seq, h_last, c_last)

    def unfused_cudnn():
        clear_grads(x, mu, rho, b_mu, b_rho)
        w, b = sampled()
        weights = {
            "weight_ih_l0": w[:n_in, to_torch_order].T.contiguous(),
            "weight_hh_l0": w[n_in:, to_torch_order].T.contiguous(),
            "bias_ih_l0": b[to_torch_order],
            "bias_hh_l0": no_bias,
        }
        h_seq, (h_last, c_last) = torch.func.functional_call(cudnn, weights, (x, (h0[None], c0[None])))
        backward_from(h_seq, h_last[0], c_last[0])

    def deterministic():
        clear_grads(x, *cudnn.parameters())
        h_seq, (h_last, c_last) = cudnn(x, (h0[None], c0[None]))
        backward_from(h_seq, h_last[0], c_last[0])

    return {"fused": fused, "unfused": unfused, "deterministic": deterministic, "unfused_cudnn": unfused_cudnn}


def bandwidth(reps):
    """GB/s of sample_gaussian (mu, rho read, w written) and of a plain device copy, 2^26 floats."""
    n = 1 << 26
    mu, rho = torch.randn(n, device="cuda"), torch.randn(n, device="cuda")
    w = torch.empty(n, device="cuda")
    src, dst = torch.randn(2 * n, device="cuda"), torch.empty(2 * n, device="cuda")
    core, stream = torch_ops.core, torch.cuda.current_stream().cuda_stream
    ms, _ = time_sides(
        {
            "sample": lambda: core.cuda.sample_gaussian(mu.data_ptr(), rho.data_ptr(), w.data_ptr(), n, (1, 2), stream),
            "copy": lambda: dst.copy_(src),
        },
        reps,
    )
    return {"sample_gb_s": 12 * n / ms["sample"] / 1e6, "copy_gb_s": 16 * n / ms["copy"] / 1e6}


# name -> (sides builder, bytes of mu and rho: reading them once at the copy rate is the floor).
CASES = {
    "linear B=32 4096 fwd": (lambda: linear_sides(32, 4096, 4096, False), 8 * 4096 * 4096),
    "linear B=32 4096 fwd+bwd": (lambda: linear_sides(32, 4096, 4096, True), 8 * 4096 * 4096),
    "linear B=32 8192 fwd": (lambda: linear_sides(32, 8192, 8192, False), 8 * 8192 * 8192),
    "linear B=32 8192 fwd+bwd": (lambda: linear_sides(32, 8192, 8192, True), 8 * 8192 * 8192),
    "linear B=512 1024 fwd+bwd": (lambda: linear_sides(512, 1024, 1024, True), 8 * 1024 * 1024),
    "embedding 50000x128 32x64 fwd": (lambda: embedding_sides(50000, 128, (32, 64), False), 8 * 2048 * 128),
    "embedding 50000x128 32x64 fwd+bwd": (lambda: embedding_sides(50000, 128, (32, 64), True), 8 * 2048 * 128),
    "lstm B=64 T=128 256->512 fwd": (lambda: lstm_sides(64, 128, 256, 512, False), 8 * (768 * 2048 + 2048)),
    "lstm B=64 T=128 256->512 fwd+bwd": (lambda: lstm_sides(64, 128, 256, 512, True), 8 * (768 * 2048 + 2048)),
    "embedding 50000x128 32x64 zipf fwd+bwd": (
        lambda: embedding_sides(50000, 128, (32, 64), True, zipf=True),
        8 * 2048 * 128,
    ),
    "embedding 50000x128 32x64 max_norm fwd": (
        lambda: embedding_sides(50000, 128, (32, 64), False, max_norm=0.5),
        8 * 2048 * 128,
    ),
    "embedding 50000x128 32x64 max_norm fwd+bwd": (
        lambda: embedding_sides(50000, 128, (32, 64), True, max_norm=0.5),
        8 * 2048 * 128,
    ),
}


def conv_sides(batch, spatial, c_in, c_out, kernel, backward):
    """Conv2d (spatial (h, w)) or Conv1d (spatial (length,)), stride 1, SAME padding, with bias. The
    fused op runs NHWC / NWC (TensorFlow's default), PyTorch NCHW / NCW (its cuDNN default). "hybrid"
    is what ops.conv2d's engine="auto" runs on a GPU: the fused sampling kernel, cuDNN's convolution,
    and the fused sampling gradient for drho."""
    conv = F.conv2d if len(spatial) == 2 else F.conv1d
    k = (kernel,) * len(spatial)
    x_torch = randn(batch, c_in, *spatial, grad=backward)
    x_fused = x_torch.detach().movedim(1, -1).contiguous()
    dy_torch = randn(batch, c_out, *spatial)
    dy_fused = dy_torch.movedim(1, -1).contiguous()
    mu_fused, rho_fused = randn(*k, c_in, c_out, scale=0.05), randn(*k, c_in, c_out, shift=-5.0)
    b_mu_fused, b_rho_fused = randn(c_out, scale=0.05), randn(c_out, shift=-5.0)
    mu = mu_fused.movedim(-1, 0).movedim(-1, 1).contiguous().requires_grad_(backward)  # [out, in, *k]
    rho = rho_fused.movedim(-1, 0).movedim(-1, 1).contiguous().requires_grad_(backward)
    b_mu, b_rho = b_mu_fused.clone().requires_grad_(backward), b_rho_fused.clone().requires_grad_(backward)
    kernel_det, bias_det = randn(c_out, c_in, *k, scale=0.05, grad=backward), randn(c_out, grad=backward)
    if len(spatial) == 1:  # the fused op's unit height
        x_fused, dy_fused = x_fused[:, None], dy_fused[:, None]
        mu_fused, rho_fused = mu_fused[None], rho_fused[None]

    def fused():
        torch_ops.conv2d(x_fused, mu_fused, rho_fused, (1, 2), b_mu_fused, b_rho_fused, (3, 4), padding="SAME")
        if backward:
            torch_ops.conv2d_grad(
                dy_fused, x_fused, mu_fused, rho_fused, (1, 2), b_mu_fused, b_rho_fused, (3, 4), padding="SAME"
            )

    def hybrid():
        clear_grads(x_torch)
        w_tf = torch_ops.sample_gaussian(mu_fused, rho_fused, (1, 2)).requires_grad_(backward)
        b = torch_ops.sample_gaussian(b_mu_fused, b_rho_fused, (3, 4)).requires_grad_(backward)
        w = w_tf.reshape(*k, c_in, c_out).movedim(-1, 0).movedim(-1, 1)
        y = conv(x_torch, w, b, padding="same")
        if backward:
            y.backward(dy_torch)
            torch_ops.sample_gaussian_grad(w_tf.grad, mu_fused, rho_fused, (1, 2), with_w=False)
            torch_ops.sample_gaussian_grad(b.grad, b_mu_fused, b_rho_fused, (3, 4), with_w=False)

    def unfused():
        clear_grads(x_torch, mu, rho, b_mu, b_rho)
        w = mu + F.softplus(rho) * torch.randn_like(mu)
        b = b_mu + F.softplus(b_rho) * torch.randn_like(b_mu)
        y = conv(x_torch, w, b, padding="same")
        if backward:
            y.backward(dy_torch)

    def deterministic():
        clear_grads(x_torch, kernel_det, bias_det)
        y = conv(x_torch, kernel_det, bias_det, padding="same")
        if backward:
            y.backward(dy_torch)

    return {
        "fused": fused,
        "unfused": unfused,
        "deterministic": deterministic,
        "hybrid": hybrid,
        "hybrid_tf32": with_tf32(hybrid),
    }


CASES.update(
    {
        f"linear {label} B={rows} {size} fwd+bwd": (
            lambda estimator=estimator, rows=rows, size=size: estimator_sides(estimator, rows, size, size),
            8 * size * size,
        )
        for estimator, label in (("flipout", "flipout"), ("local_reparameterization", "local_reparam"))
        for rows, size in ((32, 4096), (512, 1024))
    }
)
CASES.update(
    {
        "conv2d B=64 56x56 64->64 3x3 fwd": (lambda: conv_sides(64, (56, 56), 64, 64, 3, False), 8 * 9 * 64 * 64),
        "conv2d B=64 56x56 64->64 3x3 fwd+bwd": (lambda: conv_sides(64, (56, 56), 64, 64, 3, True), 8 * 9 * 64 * 64),
        "conv1d B=64 L=1024 128->128 k=5 fwd": (lambda: conv_sides(64, (1024,), 128, 128, 5, False), 8 * 5 * 128 * 128),
        "conv1d B=64 L=1024 128->128 k=5 fwd+bwd": (
            lambda: conv_sides(64, (1024,), 128, 128, 5, True),
            8 * 5 * 128 * 128,
        ),
    }
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--cases", default="", help="only the cases whose name this regular expression matches")
    parser.add_argument(
        "--compare",
        help="a results file of another build (earlier kernels, same card): prints each case's fused time "
        "against that file's",
    )
    args = parser.parse_args(argv)
    cases = {name: case for name, case in CASES.items() if re.search(args.cases, name)}
    if not cases:
        parser.error(f"--cases {args.cases!r} matches none of: {', '.join(CASES)}")
    ok, why = torch_ops.available()
    if not ok:
        print(f"GPU benchmark skipped: {why}")
        return 0
    torch_ops.set_tf32(False)  # cuBLAS and cuDNN (convolutions, LSTM) in float32 unless a side says TF32
    results = {"device": torch.cuda.get_device_name(), "cases": {}}
    results.update(bandwidth(args.reps))
    for name, (build, param_bytes) in cases.items():
        sides = build()
        sides["deterministic_tf32"] = with_tf32(sides["deterministic"])
        ms, host_ms = time_sides(sides, args.reps)
        peak = {side: peak_mib(fn) for side, fn in sides.items()}
        results["cases"][name] = {
            "ms": ms,
            "host_ms": host_ms,
            "peak_mib": peak,
            "param_gb_s": param_bytes / ms["fused"] / 1e6,
        }
        del sides
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)

    print(
        f"\n{results['device']}: sample_gaussian {results['sample_gb_s']:.0f} GB/s of mu/rho/w traffic, "
        f"device copy {results['copy_gb_s']:.0f} GB/s"
    )
    header = (
        f"{'case':40} {'fused ms':>9} {'unfused':>9} {'determ.':>9} {'det.TF32':>9} {'unfused/fused':>14} "
        f"{'fused/determ.':>14} {'fused/TF32':>11} {'mu+rho GB/s':>12} {'peak MiB f/u/d':>18} {'host ms f/u':>12}"
    )
    print(header)
    print("-" * len(header))
    for name, r in results["cases"].items():
        ms, peak, host = r["ms"], r["peak_mib"], r["host_ms"]
        print(
            f"{name:40} {ms['fused']:9.3f} {ms['unfused']:9.3f} {ms['deterministic']:9.3f} "
            f"{ms['deterministic_tf32']:9.3f} {ms['unfused'] / ms['fused']:13.2f}x "
            f"{ms['fused'] / ms['deterministic']:13.2f}x {ms['fused'] / ms['deterministic_tf32']:10.2f}x "
            f"{r['param_gb_s']:12.0f} {peak['fused']:6.0f}/{peak['unfused']:.0f}/{peak['deterministic']:.0f}"
            f"{host['fused']:8.3f}/{host['unfused']:.3f}"
        )
    # Sides beyond the table's: conv's hybrid (fused sampling + cuDNN, what engine="auto" runs) in
    # float32 and TF32, lstm's unfused layer through cuDNN, the estimators' default-estimator step.
    for name, r in results["cases"].items():
        ms = r["ms"]
        for side in sorted(set(ms) - {"fused", "unfused", "deterministic", "deterministic_tf32"}):
            baseline = "deterministic_tf32" if side.endswith("_tf32") else "deterministic"
            print(
                f"{name}: {side} {ms[side]:.3f} ms = {ms[side] / ms[baseline]:.2f}x {baseline}, "
                f"fused/{side} {ms['fused'] / ms[side]:.2f}x, peak {r['peak_mib'][side]:.0f} MiB"
            )
    if args.compare:
        print_comparison(results, args.compare)
    return 0


def print_comparison(results, path):
    """Each case's fused time in results (this build, A) against the same case in the results file at
    path (another build, B, run on the same card): B's speed-up A / B is what changed between them."""
    if not os.path.exists(path):
        print(f"\nno {path}: nothing to compare with")
        return
    with open(path) as f:
        other = json.load(f)
    print(f"\nfused ms of this build (A) and of {path} (B, {other['device']}):")
    for name, r in results["cases"].items():
        a = r["ms"]["fused"]
        if name in other["cases"]:
            b = other["cases"][name]["ms"]["fused"]
            print(f"{name:40} A {a:9.3f}  B {b:9.3f}  A / B {a / b:5.2f}x")
        else:
            print(f"{name:40} A {a:9.3f}  B: no such case")


if __name__ == "__main__":
    sys.exit(main())
