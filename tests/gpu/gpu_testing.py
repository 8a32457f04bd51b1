"""Shared pieces of the GPU tests: the skip condition, host noise as tensors, error measures."""

import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch_ops  # noqa: E402

AVAILABLE, WHY = torch_ops.available()
requires_gpu = pytest.mark.skipif(not AVAILABLE, reason=WHY)

torch_ops.POISON = True
# A float32 reference: no TF32 rounding inside matmul.
torch_ops.set_tf32(False)

ELEMENTWISE = 1e-5  # relative norm error bounds of the issue
CONTRACTION = 1e-4


def host_eps(shape, seed):
    """The host (exact, TensorFlow-identical) noise of a parameter of this shape, on the GPU."""
    n = int(np.prod(shape, dtype=np.int64))
    eps = torch_ops.core.normal(n, tuple(seed), exact=True)
    return torch.from_numpy(np.asarray(eps, dtype=np.float32).reshape(shape)).cuda()


def assert_noise_close(gpu, host, what="eps"):
    """|gpu - host| <= 1e-6 * max(1, |eps|) elementwise: the kernels' polynomial Box-Muller (noise.h's
    box_muller_poly) is within 8.3e-7 of that bound's measure of TensorFlow's libm maths, an error
    that grows with |eps| (the radius sqrt(-2 log u) and its sine)."""
    assert torch.isfinite(gpu).all(), f"{what}: non-finite values"
    excess = (gpu - host).abs() / torch.clamp(host.abs(), min=1.0)
    worst = int(excess.argmax())
    assert excess.max().item() <= 1e-6, (
        f"{what}: element {worst}: gpu {gpu.flatten()[worst].item()!r} vs host {host.flatten()[worst].item()!r}"
    )


def rng_for(*key):
    """A generator seeded from the test's parameters (the same numbers in every run)."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def gaussian_params(rng, shape):
    mu = torch.from_numpy(rng.normal(0.0, 0.5, shape).astype(np.float32)).cuda()
    rho = torch.from_numpy(rng.normal(-3.0, 1.0, shape).astype(np.float32)).cuda()
    return mu, rho


def normal_tensor(rng, shape):
    return torch.from_numpy(rng.normal(0.0, 1.0, shape).astype(np.float32)).cuda()


def seed_of(rng):
    return tuple(int(v) for v in rng.integers(-(2**31), 2**31 - 1, 2))


def misaligned(t):
    """A copy of t whose data starts 4 bytes past a 16-byte boundary (the kernels' scalar paths)."""
    flat = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    view = flat[1:].view(t.shape)
    view.copy_(t)
    return view


def assert_close(actual, expected, bound, what):
    """Relative error in norm below bound; every element written (no NaN left from the poison)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    if actual.numel() == 0:
        return
    assert torch.isfinite(actual).all(), f"{what}: non-finite elements (unwritten outputs stay NaN)"
    diff = (actual.double() - expected.double()).norm().item()
    scale = expected.double().norm().item()
    assert diff <= bound * max(scale, 1e-30), f"{what}: relative error {diff / max(scale, 1e-30):.3g} > {bound}"
