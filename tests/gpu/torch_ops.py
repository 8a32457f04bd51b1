"""PyTorch front end of fusedbnn._core.cuda for the GPU tests and benchmark (no TensorFlow needed).

`_core` is loaded from its file (FUSEDBNN_CORE, else python/fusedbnn/_core*.so), not through the
fusedbnn package, whose __init__ imports TensorFlow. Every wrapper takes contiguous float32 CUDA
tensors, allocates its outputs, and enqueues the kernels on PyTorch's current stream.
"""

import glob
import importlib.machinery
import importlib.util
import os

import numpy as np
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


def set_tf32(enabled):
    """TF32 tensor cores in cuBLAS and cuDNN on or off: PyTorch >= 2.9's fp32_precision settings,
    whose older allow_tf32 flags warn and must not be mixed with them; allow_tf32 before."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        mode = "tf32" if enabled else "ieee"
        torch.backends.cuda.matmul.fp32_precision = mode
        # cuDNN's own setting and its convolution and RNN ones, which may hold their own values.
        for backend in (torch.backends.cudnn, torch.backends.cudnn.conv, torch.backends.cudnn.rnn):
            backend.fp32_precision = mode
    else:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled


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
    core.cuda.sample_gaussian_grad(
        _ptr(dw), _ptr(mu) if with_w else 0, _ptr(rho), _ptr(drho), _ptr(w), rho.numel(), tuple(seed), _stream()
    )
    return drho, w


def _prior(mu, mu_prior):
    """(device tensor of the prior mean(s), per_element) for a float or a tensor of mu's shape."""
    if isinstance(mu_prior, torch.Tensor) and mu_prior.dim() > 0:
        _floats(mu_prior)
        return mu_prior, True
    return torch.tensor(float(mu_prior), dtype=torch.float32, device="cuda"), False


def gaussian_kl(mu, rho, seed, mu_prior=0.0, std_prior=0.1):
    _floats(mu, rho)
    scratch = torch.empty(core.cuda.gaussian_kl_scratch_bytes(), dtype=torch.uint8, device="cuda")
    kl = _alloc(())
    mean, per_element = _prior(mu, mu_prior)
    core.cuda.gaussian_kl(
        _ptr(mu),
        _ptr(rho),
        mu.numel(),
        tuple(seed),
        _ptr(mean),
        std_prior,
        _ptr(scratch),
        _ptr(kl),
        _stream(),
        per_element,
    )
    return kl


def gaussian_kl_grad(mu, rho, seed, dkl, mu_prior=0.0, std_prior=0.1):
    _floats(mu, rho, dkl)
    dmu, drho = _alloc(mu.shape), _alloc(mu.shape)
    mean, per_element = _prior(mu, mu_prior)
    core.cuda.gaussian_kl_grad(
        _ptr(mu),
        _ptr(rho),
        mu.numel(),
        tuple(seed),
        _ptr(mean),
        std_prior,
        _ptr(dkl),
        _ptr(dmu),
        _ptr(drho),
        _stream(),
        per_element,
    )
    return dmu, drho


def gaussian_kl_analytic(mu, rho, mu_prior=0.0, std_prior=0.1):
    _floats(mu, rho)
    scratch = torch.empty(core.cuda.gaussian_kl_scratch_bytes(), dtype=torch.uint8, device="cuda")
    kl = _alloc(())
    mean, per_element = _prior(mu, mu_prior)
    core.cuda.gaussian_kl_analytic(
        _ptr(mu), _ptr(rho), mu.numel(), _ptr(mean), std_prior, _ptr(scratch), _ptr(kl), _stream(), per_element
    )
    return kl


def gaussian_kl_analytic_grad(mu, rho, dkl, mu_prior=0.0, std_prior=0.1):
    _floats(mu, rho, dkl)
    dmu, drho = _alloc(mu.shape), _alloc(mu.shape)
    mean, per_element = _prior(mu, mu_prior)
    core.cuda.gaussian_kl_analytic_grad(
        _ptr(mu), _ptr(rho), mu.numel(), _ptr(mean), std_prior, _ptr(dkl), _ptr(dmu), _ptr(drho), _stream(), per_element
    )
    return dmu, drho


def _scratch(nbytes):
    return torch.empty(max(nbytes, 1), dtype=torch.uint8, device="cuda")


def linear(x, w_mu, w_rho, w_seed, b_mu=None, b_rho=None, b_seed=(0, 0)):
    """y = x W^T + b for x [rows, in], W [out, in]."""
    _floats(x, w_mu, w_rho, b_mu, b_rho)
    (rows, n_in), n_out = x.shape, w_mu.shape[0]
    scratch = _scratch(core.cuda.linear_forward_scratch_bytes(rows, n_in, n_out))
    y = _alloc((rows, n_out))
    core.cuda.linear_forward(
        _ptr(x),
        rows,
        n_in,
        n_out,
        _ptr(w_mu),
        _ptr(w_rho),
        tuple(w_seed),
        _ptr(b_mu),
        _ptr(b_rho),
        tuple(b_seed),
        _ptr(scratch),
        _ptr(y),
        _stream(),
    )
    return y


def linear_grad(dy, x, w_mu, w_rho, w_seed, b_mu=None, b_rho=None, b_seed=(0, 0)):
    """(dx, dw_mu, dw_rho, db_mu, db_rho); the bias gradients are None without a bias."""
    _floats(dy, x, w_mu, w_rho, b_mu, b_rho)
    (rows, n_in), n_out = x.shape, w_mu.shape[0]
    scratch = _scratch(core.cuda.linear_backward_scratch_bytes(rows, n_in, n_out))
    dx, dw_mu, dw_rho = _alloc(x.shape), _alloc(w_mu.shape), _alloc(w_mu.shape)
    db_mu, db_rho = (_alloc((n_out,)), _alloc((n_out,))) if b_mu is not None else (None, None)
    core.cuda.linear_backward(
        _ptr(dy),
        _ptr(x),
        rows,
        n_in,
        n_out,
        _ptr(w_mu),
        _ptr(w_rho),
        tuple(w_seed),
        _ptr(b_mu),
        _ptr(b_rho),
        tuple(b_seed),
        _ptr(scratch),
        _ptr(dx),
        _ptr(dw_mu),
        _ptr(dw_rho),
        _ptr(db_mu),
        _ptr(db_rho),
        _stream(),
    )
    return dx, dw_mu, dw_rho, db_mu, db_rho


def _estimator_args(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, x_seed):
    """(rows, in, out) and the pointer arguments the estimator kernels share after x."""
    _floats(x, w_mu, w_rho, b_mu, b_rho)
    (rows, n_in), n_out = x.shape, w_mu.shape[0]
    shared = (rows, n_in, n_out, _ptr(w_mu), _ptr(w_rho), tuple(w_seed), _ptr(b_mu), _ptr(b_rho), tuple(b_seed))
    return (rows, n_in, n_out), shared + (tuple(x_seed),)


def flipout_linear(x, w_mu, w_rho, w_seed, b_mu=None, b_rho=None, b_seed=(0, 0), *, x_seed, rows_per_example=1):
    """y = x mu^T + ((x * s_in) (sigma * eps)^T) * s_out + b, signs from x_seed, one set per example
    of ``rows_per_example`` consecutive rows."""
    sizes, args = _estimator_args(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, x_seed)
    scratch = _scratch(core.cuda.estimator_forward_scratch_bytes("flipout", *sizes))
    y = _alloc((sizes[0], sizes[2]))
    core.cuda.flipout_linear_forward(
        _ptr(x), *args, _ptr(scratch), _ptr(y), _stream(), rows_per_example=rows_per_example
    )
    return y


def local_reparam_linear(x, w_mu, w_rho, w_seed, b_mu=None, b_rho=None, b_seed=(0, 0), *, x_seed):
    """(y, y_std): y = x mu^T + y_std * eps_out + b, y_std = sqrt(x^2 (sigma^2)^T)."""
    sizes, args = _estimator_args(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, x_seed)
    scratch = _scratch(core.cuda.estimator_forward_scratch_bytes("local_reparameterization", *sizes))
    y, y_std = _alloc((sizes[0], sizes[2])), _alloc((sizes[0], sizes[2]))
    core.cuda.local_reparam_linear_forward(_ptr(x), *args, _ptr(scratch), _ptr(y), _ptr(y_std), _stream())
    return y, y_std


def _estimator_grad(estimator, dy, x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, x_seed, y_std=None, rows_per_example=1):
    sizes, args = _estimator_args(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, x_seed)
    _floats(dy, y_std)
    scratch = _scratch(core.cuda.estimator_backward_scratch_bytes(estimator, *sizes))
    dx, dw_mu, dw_rho = _alloc(x.shape), _alloc(w_mu.shape), _alloc(w_mu.shape)
    db_mu, db_rho = (_alloc((sizes[2],)), _alloc((sizes[2],))) if b_mu is not None else (None, None)
    grads = (_ptr(scratch), _ptr(dx), _ptr(dw_mu), _ptr(dw_rho), _ptr(db_mu), _ptr(db_rho), _stream())
    if estimator == "flipout":
        core.cuda.flipout_linear_backward(_ptr(dy), _ptr(x), *args, *grads, rows_per_example=rows_per_example)
    else:
        core.cuda.local_reparam_linear_backward(_ptr(dy), _ptr(x), *args, _ptr(y_std), *grads)
    return dx, dw_mu, dw_rho, db_mu, db_rho


def flipout_linear_grad(
    dy, x, w_mu, w_rho, w_seed, b_mu=None, b_rho=None, b_seed=(0, 0), *, x_seed, rows_per_example=1
):
    """(dx, dw_mu, dw_rho, db_mu, db_rho) of flipout_linear; the bias ones None without a bias."""
    return _estimator_grad(
        "flipout", dy, x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, x_seed, rows_per_example=rows_per_example
    )


def local_reparam_linear_grad(dy, x, w_mu, w_rho, w_seed, b_mu=None, b_rho=None, b_seed=(0, 0), *, x_seed, y_std):
    """(dx, dw_mu, dw_rho, db_mu, db_rho) of local_reparam_linear, from its y_std."""
    return _estimator_grad("local_reparameterization", dy, x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, x_seed, y_std)


def _ids_args(ids):
    if ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"ids must be int32 or int64, got {ids.dtype}")
    return _ptr(ids), ids.dtype == torch.int64, ids.numel()


def _embedding_options(padding_idx, max_norm, norm_type):
    return -1 if padding_idx is None else padding_idx, 0.0 if max_norm is None else max_norm, norm_type


def embedding(ids, w_mu, w_rho, seed, padding_idx=None, max_norm=None, norm_type=2.0):
    """(out, dw_drho, bad_id): out and dw_drho = eps * sigmoid(rho) of the looked-up elements (what
    embedding_grad takes) [*ids.shape, dim]; bad_id is a device int32, 1 if an id was out of range."""
    _floats(w_mu, w_rho)
    num, dim = w_mu.shape
    out, dw_drho = _alloc((*ids.shape, dim)), _alloc((*ids.shape, dim))
    bad_id = torch.zeros((), dtype=torch.int32, device="cuda")
    core.cuda.embedding_forward(
        *_ids_args(ids),
        num,
        dim,
        _ptr(w_mu),
        _ptr(w_rho),
        tuple(seed),
        *_embedding_options(padding_idx, max_norm, norm_type),
        _ptr(out),
        _ptr(dw_drho),
        _ptr(bad_id),
        _stream(),
    )
    return out, dw_drho, bad_id


def embedding_grad_rows(ids, num, padding_idx=None):
    """(rows, positions, starts, max_positions) listed on the host, as the TensorFlow GPU kernel
    lists them from its host-memory ids, then copied to the device in one pinned transfer: the
    distinct ids in [0, num) other than padding_idx, ascending; the flat positions of each, in
    order; row u owns positions[starts[u]:starts[u + 1]] (int64 CUDA tensors); the most positions
    of a row. ids on the GPU are copied to the host first (a synchronisation the op never has)."""
    flat = ids.reshape(-1).cpu().numpy().astype(np.int64)
    keep = (flat >= 0) & (flat < num)
    if padding_idx is not None:
        keep &= flat != padding_idx
    positions = np.flatnonzero(keep)
    positions = positions[np.argsort(flat[positions], kind="stable")]
    rows, counts = np.unique(flat[positions], return_counts=True)
    starts = np.concatenate([[0], np.cumsum(counts)])
    staging = torch.from_numpy(np.concatenate([rows, positions, starts]).astype(np.int64)).pin_memory()
    plan = staging.to("cuda", non_blocking=True)
    unique, listed = len(rows), len(positions)
    return (plan[:unique], plan[unique : unique + listed], plan[unique + listed :], int(counts.max()) if unique else 0)


def embedding_grad(ids, dy, dw_drho, w_mu, w_rho, seed, padding_idx=None, max_norm=None, norm_type=2.0):
    """(rows, dw_mu, dw_rho) for dy [*ids.shape, dim] and embedding's dw_drho: dw_mu and dw_rho
    [len(rows), dim] are the gradients of the table rows `rows` (embedding_grad_rows)."""
    _floats(dy, dw_drho, w_mu, w_rho)
    num, dim = w_rho.shape
    rows, positions, starts, max_positions = embedding_grad_rows(ids, num, padding_idx)
    dw_mu, dw_rho = _alloc((rows.numel(), dim)), _alloc((rows.numel(), dim))
    core.cuda.embedding_backward(
        _ptr(rows),
        rows.numel(),
        _ptr(positions),
        positions.numel(),
        _ptr(starts),
        max_positions,
        ids.numel(),
        num,
        dim,
        _ptr(w_mu),
        _ptr(w_rho),
        tuple(seed),
        *_embedding_options(padding_idx, max_norm, norm_type),
        _ptr(dy),
        _ptr(dw_drho),
        _ptr(dw_mu),
        _ptr(dw_rho),
        _stream(),
    )
    return rows, dw_mu, dw_rho


def _conv_geometry(x, w_mu, stride, padding, dilation, groups, data_format):
    """The geometry arguments of _core.cuda's conv functions; padding "VALID", "SAME" or
    [[top, bottom], [left, right]]."""
    if isinstance(padding, str):
        mode, explicit = padding, []
    else:
        mode, explicit = "EXPLICIT", [int(v) for pair in padding for v in pair]
    return dict(
        x_shape=list(x.shape),
        w_shape=list(w_mu.shape),
        stride=tuple(stride),
        padding=mode,
        explicit_paddings=explicit,
        dilation=tuple(dilation),
        groups=groups,
        data_format=data_format,
    )


def conv2d(
    x,
    w_mu,
    w_rho,
    w_seed,
    b_mu=None,
    b_rho=None,
    b_seed=(0, 0),
    stride=(1, 1),
    padding="VALID",
    dilation=(1, 1),
    groups=1,
    data_format="NHWC",
):
    """y in x's layout for x NHWC or NCHW and the kernel [kh, kw, in/groups, out] (TensorFlow's)."""
    _floats(x, w_mu, w_rho, b_mu, b_rho)
    geometry = _conv_geometry(x, w_mu, stride, padding, dilation, groups, data_format)
    y = _alloc(tuple(core.cuda.conv_output_shape(**geometry)))
    scratch = _scratch(core.cuda.conv_forward_scratch_bytes(use_bias=b_mu is not None, **geometry))
    core.cuda.conv_forward(
        x=_ptr(x),
        w_mu=_ptr(w_mu),
        w_rho=_ptr(w_rho),
        w_seed=tuple(w_seed),
        b_mu=_ptr(b_mu),
        b_rho=_ptr(b_rho),
        b_seed=tuple(b_seed),
        scratch=_ptr(scratch),
        y=_ptr(y),
        stream=_stream(),
        **geometry,
    )
    return y


def conv2d_grad(
    dy,
    x,
    w_mu,
    w_rho,
    w_seed,
    b_mu=None,
    b_rho=None,
    b_seed=(0, 0),
    stride=(1, 1),
    padding="VALID",
    dilation=(1, 1),
    groups=1,
    data_format="NHWC",
):
    """(dx, dw_mu, dw_rho, db_mu, db_rho); the bias gradients are None without a bias."""
    _floats(dy, x, w_mu, w_rho, b_mu, b_rho)
    geometry = _conv_geometry(x, w_mu, stride, padding, dilation, groups, data_format)
    scratch = _scratch(core.cuda.conv_backward_scratch_bytes(use_bias=b_mu is not None, **geometry))
    dx, dw_mu, dw_rho = _alloc(x.shape), _alloc(w_mu.shape), _alloc(w_mu.shape)
    db_mu, db_rho = (_alloc(b_mu.shape), _alloc(b_mu.shape)) if b_mu is not None else (None, None)
    core.cuda.conv_backward(
        dy=_ptr(dy),
        x=_ptr(x),
        w_mu=_ptr(w_mu),
        w_rho=_ptr(w_rho),
        w_seed=tuple(w_seed),
        b_mu=_ptr(b_mu),
        b_rho=_ptr(b_rho),
        b_seed=tuple(b_seed),
        scratch=_ptr(scratch),
        dx=_ptr(dx),
        dw_mu=_ptr(dw_mu),
        dw_rho=_ptr(dw_rho),
        db_mu=_ptr(db_mu),
        db_rho=_ptr(db_rho),
        stream=_stream(),
        **geometry,
    )
    return dx, dw_mu, dw_rho, db_mu, db_rho


def lstm(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, h0=None, c0=None):
    """(h_seq, h_last, c_last, w, gates, cells) for x [B, T, E], W [E + H, 4H]; zero state if None."""
    _floats(x, w_mu, w_rho, b_mu, b_rho, h0, c0)
    (batch, steps, n_in), hidden = x.shape, w_mu.shape[1] // 4
    h0 = torch.zeros(batch, hidden, device="cuda") if h0 is None else h0
    c0 = torch.zeros(batch, hidden, device="cuda") if c0 is None else c0
    scratch = _scratch(core.cuda.lstm_forward_scratch_bytes(batch, steps, n_in, hidden))
    h_seq, h_last, c_last = _alloc((batch, steps, hidden)), _alloc((batch, hidden)), _alloc((batch, hidden))
    w, gates, cells = _alloc(w_mu.shape), _alloc((batch, steps, 4 * hidden)), _alloc((batch, steps, hidden))
    core.cuda.lstm_forward(
        _ptr(x),
        batch,
        steps,
        n_in,
        hidden,
        _ptr(w_mu),
        _ptr(w_rho),
        tuple(w_seed),
        _ptr(b_mu),
        _ptr(b_rho),
        tuple(b_seed),
        _ptr(h0),
        _ptr(c0),
        _ptr(w),
        _ptr(gates),
        _ptr(cells),
        _ptr(scratch),
        _ptr(h_seq),
        _ptr(h_last),
        _ptr(c_last),
        _stream(),
    )
    return h_seq, h_last, c_last, w, gates, cells


def lstm_grad(
    dh_seq, dh_last, dc_last, x, w_rho, w_seed, b_rho, b_seed, h0, c0, h_seq, w, gates, cells, dz_in_gates=False
):
    """(dx, dw_mu, dw_rho, db_mu, db_rho, dh0, dc0); with dz_in_gates the kernels overwrite gates."""
    _floats(dh_seq, dh_last, dc_last, x, w_rho, b_rho, h0, c0, h_seq, w, gates, cells)
    (batch, steps, n_in), hidden = x.shape, w_rho.shape[1] // 4
    scratch = _scratch(core.cuda.lstm_backward_scratch_bytes(batch, steps, n_in, hidden))
    dz = gates if dz_in_gates else _alloc(gates.shape)
    dx, dw_mu, dw_rho = _alloc(x.shape), _alloc(w_rho.shape), _alloc(w_rho.shape)
    db_mu, db_rho, dh0, dc0 = _alloc(b_rho.shape), _alloc(b_rho.shape), _alloc(h0.shape), _alloc(c0.shape)
    core.cuda.lstm_backward(
        _ptr(dh_seq),
        _ptr(dh_last),
        _ptr(dc_last),
        _ptr(x),
        batch,
        steps,
        n_in,
        hidden,
        _ptr(w_rho),
        tuple(w_seed),
        _ptr(b_rho),
        tuple(b_seed),
        _ptr(h0),
        _ptr(c0),
        _ptr(h_seq),
        _ptr(w),
        _ptr(gates),
        _ptr(cells),
        _ptr(dz),
        _ptr(scratch),
        _ptr(dx),
        _ptr(dw_mu),
        _ptr(dw_rho),
        _ptr(db_mu),
        _ptr(db_rho),
        _ptr(dh0),
        _ptr(dc0),
        _stream(),
    )
    return dx, dw_mu, dw_rho, db_mu, db_rho, dh0, dc0


def lstm_step_loop(x, w, b, h0, c0, keep_gates=False):
    """The LSTM of fusedbnn (gate order f, i, c, o; W [E + H, 4H]) as a plain PyTorch step loop, the
    input projection of all steps done up front: (h_seq, h_last, c_last, gates, cells), the
    activated gates and the cells only with keep_gates (else None)."""
    n_in, hidden = x.shape[2], w.shape[1] // 4
    projected = x @ w[:n_in] + b
    w_h = w[n_in:]
    h, c, hs, gates, cells = h0, c0, [], [], []
    for t in range(x.shape[1]):
        z = projected[:, t] + h @ w_h
        f, i = torch.sigmoid(z[:, :hidden]), torch.sigmoid(z[:, hidden : 2 * hidden])
        g, o = torch.tanh(z[:, 2 * hidden : 3 * hidden]), torch.sigmoid(z[:, 3 * hidden :])
        c = f * c + i * g
        h = o * torch.tanh(c)
        hs.append(h)
        if keep_gates:
            gates.append(torch.cat([f, i, g, o], 1))
            cells.append(c)
    if not keep_gates:
        gates = cells = None
    elif hs:
        gates, cells = torch.stack(gates, 1), torch.stack(cells, 1)
    else:
        gates, cells = x.new_zeros(x.shape[0], 0, 4 * hidden), x.new_zeros(x.shape[0], 0, hidden)
    h_seq = torch.stack(hs, 1) if hs else x.new_zeros(x.shape[0], 0, hidden)
    return h_seq, h, c, gates, cells
