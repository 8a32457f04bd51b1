"""GPU benchmark: fused fusedbnn CUDA kernels against the unfused Bayesian layer as a PyTorch user
writes it (mu + softplus(rho) * randn_like(mu), then matmul / gather) and the deterministic layer,
float32 on one card. CUDA events; each step's sides run alternately, medians reported.

    python tests/gpu/bench.py [--reps 50] [--json results.json]
"""

import argparse
import json
import statistics
import sys

import torch
import torch.nn.functional as F

import torch_ops


def time_sides(sides, reps, warmup=5):
    """Median milliseconds of each zero-argument callable, run in turn within every repetition."""
    for _ in range(warmup):
        for fn in sides.values():
            fn()
    times = {name: [] for name in sides}
    for _ in range(reps):
        for name, fn in sides.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times[name].append(start.elapsed_time(end))
    return {name: statistics.median(t) for name, t in times.items()}


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
    dy = randn(*ids_shape, dim)
    mu, rho = randn(num, dim, scale=0.05, grad=backward), randn(num, dim, shift=-5.0, grad=backward)
    table = randn(num, dim, grad=backward)
    mud, rhod = mu.detach(), rho.detach()

    def fused():
        torch_ops.embedding(ids, mud, rhod, (1, 2), max_norm=max_norm)
        if backward:
            torch_ops.embedding_grad(ids, dy, mud, rhod, (1, 2), max_norm=max_norm)

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


def bandwidth(reps):
    """GB/s of sample_gaussian (mu, rho read, w written) and of a plain device copy, 2^26 floats."""
    n = 1 << 26
    mu, rho = torch.randn(n, device="cuda"), torch.randn(n, device="cuda")
    w = torch.empty(n, device="cuda")
    src, dst = torch.randn(2 * n, device="cuda"), torch.empty(2 * n, device="cuda")
    core, stream = torch_ops.core, torch.cuda.current_stream().cuda_stream
    ms = time_sides({
        "sample": lambda: core.cuda.sample_gaussian(mu.data_ptr(), rho.data_ptr(), w.data_ptr(), n, (1, 2), stream),
        "copy": lambda: dst.copy_(src),
    }, reps)
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
    "embedding 50000x128 32x64 zipf fwd+bwd": (lambda: embedding_sides(50000, 128, (32, 64), True, zipf=True),
                                               8 * 2048 * 128),
    "embedding 50000x128 32x64 max_norm fwd": (
        lambda: embedding_sides(50000, 128, (32, 64), False, max_norm=0.5), 8 * 2048 * 128),
    "embedding 50000x128 32x64 max_norm fwd+bwd": (
        lambda: embedding_sides(50000, 128, (32, 64), True, max_norm=0.5), 8 * 2048 * 128),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    ok, why = torch_ops.available()
    if not ok:
        print(f"GPU benchmark skipped: {why}")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = False
    results = {"device": torch.cuda.get_device_name(), "cases": {}}
    results.update(bandwidth(args.reps))
    for name, (build, param_bytes) in CASES.items():
        sides = build()
        ms = time_sides(sides, args.reps)
        peak = {side: peak_mib(fn) for side, fn in sides.items()}
        results["cases"][name] = {"ms": ms, "peak_mib": peak, "param_gb_s": param_bytes / ms["fused"] / 1e6}
        del sides
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)

    print(f"\n{results['device']}: sample_gaussian {results['sample_gb_s']:.0f} GB/s of mu/rho/w traffic, "
          f"device copy {results['copy_gb_s']:.0f} GB/s")
    header = (f"{'case':36} {'fused ms':>9} {'unfused':>9} {'determ.':>9} {'unfused/fused':>14} "
              f"{'fused/determ.':>14} {'mu+rho GB/s':>12} {'peak MiB f/u/d':>18}")
    print(header)
    print("-" * len(header))
    for name, r in results["cases"].items():
        ms, peak = r["ms"], r["peak_mib"]
        print(f"{name:36} {ms['fused']:9.3f} {ms['unfused']:9.3f} {ms['deterministic']:9.3f} "
              f"{ms['unfused'] / ms['fused']:13.2f}x {ms['fused'] / ms['deterministic']:13.2f}x "
              f"{r['param_gb_s']:12.0f} {peak['fused']:6.0f}/{peak['unfused']:.0f}/{peak['deterministic']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
