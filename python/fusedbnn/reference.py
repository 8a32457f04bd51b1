"""The functional API of ``fusedbnn.ops`` in plain TensorFlow: the test oracle and the benchmarks' baseline.

Each function samples with ``tf.random.stateless_normal`` and lets autodiff do the rest, as an
unfused Bayesian layer does. No production module imports this one, so the tests of the fused ops
(and of ``ops.conv2d(engine="tensorflow")``) compare against code written independently of them.
Run it with ``jit_compile=False``: XLA draws other numbers.
"""

import math

import tensorflow as tf

from fusedbnn import _conv_args

__all__ = [
    "ESTIMATORS",
    "conv1d",
    "conv2d",
    "embedding",
    "estimator_seed",
    "estimator_signs",
    "gaussian_kl",
    "gaussian_kl_analytic",
    "linear",
    "lstm",
    "sample_gaussian",
]


def sample_gaussian(mu, rho, seed):
    """``mu + softplus(rho) * stateless_normal(shape(mu), seed)``."""
    eps = tf.random.stateless_normal(tf.shape(mu), seed=seed, dtype=mu.dtype)
    return mu + tf.nn.softplus(rho) * eps


def _log_normal(x, mean, std):
    return -0.5 * math.log(2.0 * math.pi) - tf.math.log(std) - 0.5 * tf.square((x - mean) / std)


def gaussian_kl(mu, rho, seed, mu_prior=0.0, std_prior=0.1):
    """``sum(log N(w; mu, sigma)) - sum(log N(w; mu_prior, std_prior))`` at one sample w."""
    w = sample_gaussian(mu, rho, seed)
    log_posterior = tf.reduce_sum(_log_normal(w, mu, tf.nn.softplus(rho)))
    log_prior = tf.reduce_sum(_log_normal(w, tf.cast(mu_prior, w.dtype), tf.cast(std_prior, w.dtype)))
    return log_posterior - log_prior


def gaussian_kl_analytic(mu, rho, mu_prior=0.0, std_prior=0.1):
    """``sum(KL(N(mu, sigma^2) || N(mu_prior, std_prior^2)))`` in closed form, sigma = softplus(rho)."""
    sigma = tf.nn.softplus(rho)
    std_prior = tf.cast(std_prior, mu.dtype)
    mean_gap = mu - tf.cast(mu_prior, mu.dtype)
    return tf.reduce_sum(
        tf.math.log(std_prior / sigma) + (tf.square(sigma) + tf.square(mean_gap)) / (2.0 * tf.square(std_prior)) - 0.5
    )


ESTIMATORS = ("reparameterization", "flipout", "local_reparameterization")


def estimator_seed(x_seed, k):
    """The seed of what an estimator draws per example: k = 0 the input signs, 1 the output signs,
    2 the output noise (docs/design.md, "Estimators")."""
    return tf.random.experimental.stateless_fold_in(tf.cast(x_seed, tf.int64), tf.constant(k, tf.int64))


def estimator_signs(shape, x_seed, k):
    """+1 / -1 (float32) of ``shape``: ``2 * stateless_uniform(shape, estimator_seed(x_seed, k), 0, 2, int32) - 1``."""
    bits = tf.random.stateless_uniform(shape, estimator_seed(x_seed, k), minval=0, maxval=2, dtype=tf.int32)
    return tf.cast(2 * bits - 1, tf.float32)


def _safe_sqrt(variance):
    """sqrt with a zero gradient (not NaN) where the variance is 0, as the fused ops have it."""
    zero = tf.equal(variance, 0.0)
    return tf.where(zero, 0.0, tf.sqrt(tf.where(zero, 1.0, variance)))


def _check_estimator(estimator, x_seed):
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if estimator != "reparameterization" and x_seed is None:
        raise ValueError(f"estimator {estimator!r} needs x_seed")


def _dense(x, w):
    if x.shape[-1] == 0 or w.shape[0] == 0:
        # TensorFlow's oneDNN matmul aborts the process on an empty contraction inside a graph
        # (forward with in == 0, backward with out == 0).
        return tf.reduce_sum(x[..., None, :] * w, axis=-1)
    return tf.tensordot(x, w, axes=[[x.shape.rank - 1], [1]])


def linear(x, w_mu, w_rho, w_seed, b_mu=None, b_rho=None, b_seed=None, estimator="reparameterization", x_seed=None):
    """``x @ W^T + b`` with W ``[out, in]`` and b sampled by ``sample_gaussian``; with
    ``estimator="flipout"`` ``x mu^T + ((x * s_in) (sigma * eps)^T) * s_out + b``, with
    ``"local_reparameterization"`` ``x mu^T + sqrt(x^2 (sigma^2)^T) * eps_out + b``. Flipout's
    signs are per example (x's first axis; x of rank 1 is one example), shared by its positions."""
    _check_estimator(estimator, x_seed)
    x = tf.convert_to_tensor(x)
    if estimator == "reparameterization":
        y = _dense(x, sample_gaussian(w_mu, w_rho, w_seed))
    else:
        sigma = tf.nn.softplus(w_rho)
        y = _dense(x, w_mu)
        if estimator == "flipout":
            examples = tf.shape(x)[:1] if x.shape.rank > 1 else tf.zeros([0], tf.int32)
            positions = tf.ones([max(x.shape.rank - 2, 0)], tf.int32)

            def per_example(width, k):
                signs = estimator_signs(tf.concat([examples, [width]], 0), x_seed, k)
                return tf.reshape(signs, tf.concat([examples, positions, [width]], 0))

            s_in, s_out = per_example(tf.shape(w_mu)[1], 0), per_example(tf.shape(w_mu)[0], 1)
            perturbation = sigma * tf.random.stateless_normal(tf.shape(w_mu), seed=w_seed)
            y += _dense(x * s_in, perturbation) * s_out
        else:
            eps_out = tf.random.stateless_normal(tf.shape(y), seed=estimator_seed(x_seed, 2))
            y += _safe_sqrt(_dense(x * x, sigma * sigma)) * eps_out
    if b_mu is not None:
        y = y + sample_gaussian(b_mu, b_rho, b_seed)
    return y


def _padding_amounts(x, w, args):
    """``[[0, 0], [top, bottom], [left, right], [0, 0]]`` for NHWC ``x``, with TensorFlow's SAME rule."""
    pads = [[0, 0]]
    for axis in (0, 1):
        if args.padding != "SAME":
            pads.append(list(args.explicit[2 * axis : 2 * axis + 2]))
            continue
        size, stride = tf.shape(x)[axis + 1], args.strides[axis]
        window = (w.shape[axis] - 1) * args.dilations[axis] + 1
        total = tf.maximum((-(-size // stride) - 1) * stride + window - size, 0)
        pads.append([total // 2, total - total // 2])
    return pads + [[0, 0]]


def _conv2d_by_taps(x, w, args):
    """The convolution's definition, one tap at a time:
    ``y[b, p, q, g, o] = sum_{i, j, c} xpad[b, p*sh + i*dh, q*sw + j*dw, g, c] * w[i, j, c, g, o]``.

    Covers what TensorFlow's CPU convolution does not do (or does wrong): dilation (no CPU gradient),
    groups (oneDNN builds only), unequal strides (TensorFlow 2.21's oneDNN kernels corrupt the heap
    in the filter gradient) and empty shapes.
    """
    kh, kw, in_per_group, out = w.shape
    groups = args.groups
    xp = tf.pad(x, _padding_amounts(x, w, args))
    out_sizes, steps = [], []
    for axis, k in ((0, kh), (1, kw)):
        window = (k - 1) * args.dilations[axis] + 1
        out_size = (tf.shape(xp)[axis + 1] - window) // args.strides[axis] + 1
        out_sizes.append(out_size)
        steps.append(tf.maximum((out_size - 1) * args.strides[axis] + 1, 0))
    w_grouped = tf.reshape(w, [kh, kw, in_per_group, groups, out // groups])
    y = 0.0
    for i in range(kh):
        for j in range(kw):
            top, left = i * args.dilations[0], j * args.dilations[1]
            patch = xp[:, top : top + steps[0] : args.strides[0], left : left + steps[1] : args.strides[1], :]
            patch = tf.reshape(patch, tf.concat([tf.shape(patch)[:3], [groups, in_per_group]], 0))
            y += tf.einsum("bhwgc,cgo->bhwgo", patch, w_grouped[i, j])
    return tf.reshape(y, tf.stack([tf.shape(x)[0], out_sizes[0], out_sizes[1], out]))


def _conv2d_nhwc(x, w, args):
    plain = args.groups == 1 and args.dilations == (1, 1) and args.strides[0] == args.strides[1]
    if plain and x.shape.is_fully_defined() and x.shape.num_elements():
        out_sizes = [
            _conv_args.axis_output(
                x.shape[axis + 1],
                w.shape[axis],
                args.strides[axis],
                1,
                args.padding,
                *args.explicit[2 * axis : 2 * axis + 2],
            )[0]
            for axis in (0, 1)
        ]
        if min(out_sizes) > 0:
            # What an unfused layer writes: TensorFlow's own convolution.
            padding = args.padding if args.padding != "EXPLICIT" else _padding_amounts(x, w, args)
            return tf.nn.conv2d(x, w, args.strides, padding)
    return _conv2d_by_taps(x, w, args)


def _conv2d_sampled(x, w, b, args):
    if not args.channels_last:
        x = tf.transpose(x, [0, 2, 3, 1])
    y = _conv2d_nhwc(x, w, args)
    if b is not None:
        y = y + b
    return y if args.channels_last else tf.transpose(y, [0, 3, 1, 2])


def _conv2d_estimated(x, w_mu, w_rho, w_seed, b, args, estimator, x_seed):
    """The 2-D convolution under ``estimator``, x in args' layout: for flipout one sign per example
    and channel, broadcast over the spatial axes."""
    _check_estimator(estimator, x_seed)
    if estimator == "reparameterization":
        return _conv2d_sampled(x, sample_gaussian(w_mu, w_rho, w_seed), b, args)
    sigma = tf.nn.softplus(w_rho)
    y = _conv2d_sampled(x, w_mu, b, args)
    channel_axis = 3 if args.channels_last else 1
    expand = [1, 2] if args.channels_last else [2, 3]
    if estimator == "flipout":
        batch = tf.shape(x)[0]
        s_in = estimator_signs(tf.stack([batch, tf.shape(x)[channel_axis]]), x_seed, 0)
        s_out = estimator_signs(tf.stack([batch, tf.shape(w_mu)[-1]]), x_seed, 1)
        for axis in expand:
            s_in, s_out = tf.expand_dims(s_in, axis), tf.expand_dims(s_out, axis)
        perturbation = sigma * tf.random.stateless_normal(tf.shape(w_mu), seed=w_seed)
        return y + _conv2d_sampled(x * s_in, perturbation, None, args) * s_out
    eps_out = tf.random.stateless_normal(tf.shape(y), seed=estimator_seed(x_seed, 2))
    return y + _safe_sqrt(_conv2d_sampled(x * x, sigma * sigma, None, args)) * eps_out


def conv2d(
    x,
    w_mu,
    w_rho,
    w_seed,
    b_mu=None,
    b_rho=None,
    b_seed=None,
    stride=1,
    padding="VALID",
    dilation=1,
    groups=1,
    data_format="NHWC",
    estimator="reparameterization",
    x_seed=None,
):
    """2-D convolution with the kernel [kh, kw, in/groups, out] (and bias) sampled by ``sample_gaussian``,
    or under the estimator ``estimator``.

    Arguments as ``fusedbnn.ops.conv2d``.
    """
    args = _conv_args.conv2d_args(stride, padding, dilation, groups, data_format)
    b = None if b_mu is None else sample_gaussian(b_mu, b_rho, b_seed)
    return _conv2d_estimated(x, w_mu, w_rho, w_seed, b, args, estimator, x_seed)


def conv1d(
    x,
    w_mu,
    w_rho,
    w_seed,
    b_mu=None,
    b_rho=None,
    b_seed=None,
    stride=1,
    padding="VALID",
    dilation=1,
    groups=1,
    data_format="NWC",
    estimator="reparameterization",
    x_seed=None,
):
    """1-D convolution with the kernel [k, in/groups, out] (and bias) sampled by ``sample_gaussian``,
    as the 2-D one with a unit height. Arguments as ``fusedbnn.ops.conv1d``."""
    args = _conv_args.conv1d_args(stride, padding, dilation, groups, data_format)
    height_axis = 1 if args.channels_last else 2
    b = None if b_mu is None else sample_gaussian(b_mu, b_rho, b_seed)
    y = _conv2d_estimated(tf.expand_dims(x, height_axis), w_mu[None], w_rho[None], w_seed, b, args, estimator, x_seed)
    return tf.squeeze(y, height_axis)


def embedding(ids, w_mu, w_rho, w_seed, padding_idx=None, max_norm=None, norm_type=2.0):
    """``W[ids]`` from the fully sampled table, with illia's padding and max-norm.

    Rows at ``padding_idx`` are zero. With ``max_norm``, each row e is multiplied by
    ``max_norm / max(norm(e, norm_type), max_norm)``: illia's ``clip(norm, 0, max_norm) /
    max(norm, 1e-7)`` for every norm above 1e-7, without its 0/0 guard.
    """
    rows = tf.gather(sample_gaussian(w_mu, w_rho, w_seed), ids)
    if max_norm is not None:
        norms = tf.norm(rows, ord=norm_type, axis=-1, keepdims=True)
        rows *= max_norm / tf.maximum(norms, max_norm)
    if padding_idx is None:
        return rows
    return tf.where(tf.expand_dims(ids == padding_idx, -1), tf.zeros_like(rows), rows)


def lstm(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, initial_state=None):
    """illia's LSTM with W ``[E + H, 4H]`` (gates f, i, c, o) and b ``[4H]`` from ``sample_gaussian``,
    scanned over time. Returns ``(h_seq [B, T, H], (h_T, c_T))``."""
    w, b = sample_gaussian(w_mu, w_rho, w_seed), sample_gaussian(b_mu, b_rho, b_seed)
    if initial_state is None:
        h0 = c0 = tf.zeros(tf.stack([tf.shape(x)[0], tf.shape(w)[-1] // 4]), x.dtype)
    else:
        h0, c0 = initial_state

    def step(state, x_t):
        h, c = state
        f, i, g, o = tf.split(tf.matmul(tf.concat([x_t, h], axis=1), w) + b, 4, axis=1)
        c = c * tf.sigmoid(f) + tf.tanh(g) * tf.sigmoid(i)
        return tf.sigmoid(o) * tf.tanh(c), c

    hs, cs = tf.scan(step, tf.transpose(x, [1, 0, 2]), initializer=(h0, c0))
    last = lambda seq, first: tf.concat([first[None], seq], axis=0)[-1]  # noqa: E731 (T may be 0)
    return tf.transpose(hs, [1, 0, 2]), (last(hs, h0), last(cs, c0))
