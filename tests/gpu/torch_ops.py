"""PyTorch front end of fusedbnn._core.cuda for the GPU tests and benchmark (no TensorFlow needed).

`_core` is loaded from its file (FUSEDBNN_CORE, else python/fusedbnn/_core*.so), not through the
fusedbnn package, whose __init__ imports TensorFlow. Every wrapper takes contiguous float32 CUDA
tensors, allocates its outputs, and enqueues the kernels on PyTorch's current stream.
"""

import glob
import importlib.machinery
import importlib.util
import os

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Tests set this: outputs start as NaN, so an element a kernel forgets to write fails the check.
POISON = False


def load_core():
    """The compiled fusedbnn._core module, or None when it is not built."""
    path = os.environ.get("FUSEDBNN_CORE")
    if not path:
        found = sorted(glob.glob(os.path.join(ROOT, "python", "fusedbnn", "_core*.so")))
        if not found:
            return None
        path = found[0]
    loader = importlib.machinery.ExtensionFileLoader("_core", path)
    spec = importlib.util.spec_from_file_location("_core", path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


core = load_core()


def available():
    """(True, "") when the CUDA kernels can run here, else (False, why)."""
    if core is None:
        return False, "fusedbnn._core is not built"
    if not getattr(core, "has_cuda", False):
        return False, "fusedbnn._core was built without CUDA (-DFUSEDBNN_CUDA=ON)"
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    return True, ""


def _stream():
    return torch.cuda.current_stream().cuda_stream


def _alloc(shape, dtype=torch.float32):
    if POISON and dtype.is_floating_point:
        return torch.full(shape, float("nan"), dtype=dtype, device="cuda")
    return torch.empty(shape, dtype=dtype, device="cuda")


def _ptr(t):
    if t is None:
        return 0
    if not (t.is_cuda and t.is_contiguous()):
        raise ValueError("expected a contiguous CUDA tensor")
    return t.data_ptr()


def _floats(*tensors):
    for t in tensors:
        if t is not None and t.dtype != torch.float32:
            raise ValueError(f"expected float32, got {t.dtype}")


def normal(n, seed):
    """eps[i] for i < n, generated on the GPU."""
    out = _alloc((n,))
    core.cuda.normal(_ptr(out), n, tuple(seed), _stream())
    return out


def sample_gaussian(mu, rho, seed):
    _floats(mu, rho)
    w = _alloc(mu.shape)
    core.cuda.sample_gaussian(_ptr(mu), _ptr(rho), _ptr(w), mu.numel(), tuple(seed), _stream())
    return w


def sample_gaussian_grad(dw, mu, rho, seed, with_w=True):
    """(drho, w), w None unless with_w."""
    _floats(dw, mu, rho)
    drho = _alloc(rho.shape)
    w = _alloc(rho.shape) if with_w else None
    core.cuda.sample_gaussian_grad(_ptr(dw), _ptr(mu) if with_w else 0, _ptr(rho), _ptr(drho), _ptr(w),
                                   rho.numel(), tuple(seed), _stream())
    return drho, w


def gaussian_kl(mu, rho, seed, mu_prior=0.0, std_prior=0.1):
    _floats(mu, rho)
    scratch = torch.empty(core.cuda.gaussian_kl_scratch_bytes(), dtype=torch.uint8, device="cuda")
    kl = _alloc(())
    core.cuda.gaussian_kl(_ptr(mu), _ptr(rho), mu.numel(), tuple(seed), mu_prior, std_prior, _ptr(scratch),
                          _ptr(kl), _stream())
    return kl


def gaussian_kl_grad(mu, rho, seed, dkl, mu_prior=0.0, std_prior=0.1):
    _floats(mu, rho, dkl)
    dmu, drho = _alloc(mu.shape), _alloc(mu.shape)
    core.cuda.gaussian_kl_grad(_ptr(mu), _ptr(rho), mu.numel(), tuple(seed), mu_prior, std_prior, _ptr(dkl),
                               _ptr(dmu), _ptr(drho), _stream())
    return dmu, drho


def _scratch(nbytes):
    return torch.empty(max(nbytes, 1), dtype=torch.uint8, device="cuda")


def linear(x, w_mu, w_rho, w_seed, b_mu=None, b_rho=None, b_seed=(0, 0)):
    """y = x W^T + b for x [rows, in], W [out, in]."""
    _floats(x, w_mu, w_rho, b_mu, b_rho)
    (rows, n_in), n_out = x.shape, w_mu.shape[0]
    scratch = _scratch(core.cuda.linear_forward_scratch_bytes(rows, n_in, n_out))
    y = _alloc((rows, n_out))
    core.cuda.linear_forward(_ptr(x), rows, n_in, n_out, _ptr(w_mu), _ptr(w_rho), tuple(w_seed), _ptr(b_mu),
                             _ptr(b_rho), tuple(b_seed), _ptr(scratch), _ptr(y), _stream())
    return y


def linear_grad(dy, x, w_mu, w_rho, w_seed, b_mu=None, b_rho=None, b_seed=(0, 0)):
    """(dx, dw_mu, dw_rho, db_mu, db_rho); the bias gradients are None without a bias."""
    _floats(dy, x, w_mu, w_rho, b_mu, b_rho)
    (rows, n_in), n_out = x.shape, w_mu.shape[0]
    scratch = _scratch(core.cuda.linear_backward_scratch_bytes(rows, n_in, n_out))
    dx, dw_mu, dw_rho = _alloc(x.shape), _alloc(w_mu.shape), _alloc(w_mu.shape)
    db_mu, db_rho = (_alloc((n_out,)), _alloc((n_out,))) if b_mu is not None else (None, None)
    core.cuda.linear_backward(_ptr(dy), _ptr(x), rows, n_in, n_out, _ptr(w_mu), _ptr(w_rho), tuple(w_seed),
                              _ptr(b_mu), _ptr(b_rho), tuple(b_seed), _ptr(scratch), _ptr(dx), _ptr(dw_mu),
                              _ptr(dw_rho), _ptr(db_mu), _ptr(db_rho), _stream())
    return dx, dw_mu, dw_rho, db_mu, db_rho


def _ids_args(ids):
    if ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"ids must be int32 or int64, got {ids.dtype}")
    return _ptr(ids), ids.dtype == torch.int64, ids.numel()


def _embedding_options(padding_idx, max_norm, norm_type):
    return -1 if padding_idx is None else padding_idx, 0.0 if max_norm is None else max_norm, norm_type


def embedding(ids, w_mu, w_rho, seed, padding_idx=None, max_norm=None, norm_type=2.0):
    """(out [*ids.shape, dim], bad_id): bad_id is a device int32, 1 if an id was out of range."""
    _floats(w_mu, w_rho)
    num, dim = w_mu.shape
    out = _alloc((*ids.shape, dim))
    bad_id = torch.zeros((), dtype=torch.int32, device="cuda")
    core.cuda.embedding_forward(*_ids_args(ids), num, dim, _ptr(w_mu), _ptr(w_rho), tuple(seed),
                                *_embedding_options(padding_idx, max_norm, norm_type), _ptr(out), _ptr(bad_id),
                                _stream())
    return out, bad_id


def embedding_grad_rows(ids, num, padding_idx=None):
    """(rows, positions, starts, max_positions) as the TensorFlow GPU kernel lists them on the host:
    the distinct ids in [0, num) other than padding_idx, ascending; the flat positions of each, in
    order; row u owns positions[starts[u]:starts[u + 1]] (int64 CUDA tensors); the most positions
    of a row."""
    flat = ids.reshape(-1).long()
    keep = (flat >= 0) & (flat < num)
    if padding_idx is not None:
        keep &= flat != padding_idx
    positions = torch.nonzero(keep).reshape(-1)
    positions = positions[torch.sort(flat[positions], stable=True).indices]
    rows, counts = torch.unique_consecutive(flat[positions], return_counts=True)
    starts = torch.cat([torch.zeros(1, dtype=torch.int64, device="cuda"), torch.cumsum(counts, 0)])
    return rows.contiguous(), positions.contiguous(), starts.contiguous(), int(counts.max()) if len(counts) else 0


def embedding_grad(ids, dy, w_mu, w_rho, seed, padding_idx=None, max_norm=None, norm_type=2.0):
    """(rows, dw_mu, dw_rho) for dy [*ids.shape, dim]: dw_mu and dw_rho [len(rows), dim] are the
    gradients of the table rows `rows` (embedding_grad_rows)."""
    _floats(dy, w_mu, w_rho)
    num, dim = w_rho.shape
    rows, positions, starts, max_positions = embedding_grad_rows(ids, num, padding_idx)
    dw_mu, dw_rho = _alloc((rows.numel(), dim)), _alloc((rows.numel(), dim))
    core.cuda.embedding_backward(_ptr(rows), rows.numel(), _ptr(positions), positions.numel(), _ptr(starts),
                                 max_positions, ids.numel(), num, dim, _ptr(w_mu), _ptr(w_rho), tuple(seed),
                                 *_embedding_options(padding_idx, max_norm, norm_type), _ptr(dy), _ptr(dw_mu),
                                 _ptr(dw_rho), _stream())
    return rows, dw_mu, dw_rho
