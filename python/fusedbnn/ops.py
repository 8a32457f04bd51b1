"""The fused ops: sampling, KL and layer ops, each with its fused gradient.

Every op samples ``w = mu + softplus(rho) * eps`` inside, with ``eps`` equal to
``tf.random.stateless_normal(mu.shape, seed)`` and never stored: gradients regenerate it from
``seed``. ``fusedbnn.reference`` has the same functions in plain TensorFlow (the tests' oracle),
without the ``kl_prior`` / ``kl_priors`` forms (their KL is ``gaussian_kl`` at the same seed).
"""

import numbers

import keras
import tensorflow as tf
from tensorflow.python.ops import resource_variable_ops

from fusedbnn import _conv_args, _plain
from fusedbnn._loader import load_op_library
from fusedbnn._validation import embedding_options, float_tensor, positive_std, seed_tensor

__all__ = [
    "ESTIMATORS",
    "conv1d",
    "conv2d",
    "embedding",
    "gaussian_kl",
    "gaussian_kl_analytic",
    "linear",
    "lstm",
    "sample_gaussian",
]

_ops = load_op_library()


def _mu_rho_seed(mu, rho, seed, prefix=""):
    return (float_tensor(mu, prefix + "mu"), float_tensor(rho, prefix + "rho"), seed_tensor(seed, prefix + "seed"))


def sample_gaussian(mu, rho, seed, kl_prior=None):
    """``mu + softplus(rho) * eps`` with ``eps = stateless_normal(shape(mu), seed)``.

    With ``kl_prior=(mu_prior, std_prior)`` (as ``gaussian_kl``'s) returns ``(w, kl)``, ``kl`` the
    one-sample KL ``gaussian_kl(mu, rho, seed, mu_prior, std_prior)`` at that w from the same pass
    over the noise; the gradient of both regenerates the noise once. This KL gives the prior mean
    no gradient.
    """
    mu, rho, seed = _mu_rho_seed(mu, rho, seed)
    if kl_prior is None:
        return _ops.fused_bnn_sample_gaussian(mu, rho, seed)
    return tuple(_ops.fused_bnn_sample_gaussian_kl(mu, rho, seed, *_prior(mu, *kl_prior)))


@tf.RegisterGradient("FusedBnn>SampleGaussian")
def _sample_gaussian_grad(op, dw):
    _, rho, seed = op.inputs
    return dw, _ops.fused_bnn_sample_gaussian_grad(dw, rho, seed), None


@tf.RegisterGradient("FusedBnn>SampleGaussianKl")
def _sample_gaussian_kl_grad(op, dw, dkl):
    dw = tf.zeros_like(op.outputs[0]) if dw is None else dw
    # No dkl (the kl output unused) is a zero: the op then runs the plain sampling gradient.
    dkl = tf.zeros([]) if dkl is None else dkl
    dmu, drho = _ops.fused_bnn_sample_gaussian_kl_grad(dw, dkl, *op.inputs)
    return dmu, drho, None, None, None


def _prior(mu, mu_prior, std_prior):
    """The prior inputs of the KL ops: float32 ``mu_prior`` (a scalar or of mu's shape) and
    ``std_prior`` (a scalar; a Python number must be positive, a tensor is checked by the op)."""
    if isinstance(std_prior, numbers.Real):
        std_prior = positive_std(std_prior)
    mu_prior, std_prior = (
        float_tensor(float(v) if isinstance(v, numbers.Real) else v, name)
        for v, name in ((mu_prior, "mu_prior"), (std_prior, "std_prior"))
    )
    if mu_prior.shape.rank not in (None, 0) and not mu_prior.shape.is_compatible_with(mu.shape):
        raise ValueError(f"mu_prior must be a scalar or have mu's shape {mu.shape}, got shape {mu_prior.shape}")
    if std_prior.shape.rank not in (None, 0):
        raise ValueError(f"std_prior must be a scalar, got shape {std_prior.shape}")
    return mu_prior, std_prior


def gaussian_kl(mu, rho, seed, mu_prior=0.0, std_prior=0.1):
    """illia's one-sample KL estimate at ``w = sample_gaussian(mu, rho, seed)``.

    ``sum(log N(w; mu, softplus(rho))) - sum(log N(w; mu_prior, std_prior))``, a float32 scalar.
    ``mu_prior`` is a float, or a float32 tensor (a variable, say) that is a scalar or has mu's
    shape (one prior mean per element); ``std_prior`` a positive float or float32 scalar tensor.
    Tensors are read when the op runs: assigning a prior variable needs no retracing. The
    gradient covers ``mu``, ``rho`` and ``mu_prior``; ``std_prior`` gets none (priors are fixed
    hyperparameters, as in illia).
    """
    mu, rho, seed = _mu_rho_seed(mu, rho, seed)
    return _ops.fused_bnn_gaussian_kl(mu, rho, seed, *_prior(mu, mu_prior, std_prior))


def _prior_mean_grad(op, dmu, mu_prior_index):
    """d/dmu_prior of a KL op, from its dmu (-dmu per element, summed for one mean); None where the
    caller does not need it (eager backprop says so in skip_input_indices)."""
    if mu_prior_index in (getattr(op, "skip_input_indices", None) or ()):
        return None
    mu_prior = op.inputs[mu_prior_index]
    if mu_prior.shape.rank == 0:
        return -tf.reduce_sum(dmu)
    return -dmu


@tf.RegisterGradient("FusedBnn>GaussianKl")
def _gaussian_kl_grad(op, dkl):
    dmu, drho = _ops.fused_bnn_gaussian_kl_grad(dkl, *op.inputs)
    return dmu, drho, None, _prior_mean_grad(op, dmu, 3), None


def gaussian_kl_analytic(mu, rho, mu_prior=0.0, std_prior=0.1):
    """The closed-form KL of N(mu, softplus(rho)^2) from the prior N(mu_prior, std_prior^2), summed:
    ``sum(log(std_prior / sigma) + (sigma^2 + (mu - mu_prior)^2) / (2 std_prior^2) - 1/2)``.

    One fused pass over ``mu`` and ``rho`` (no noise), forward and gradient alike. Priors as in
    ``gaussian_kl``.
    """
    mu, rho = float_tensor(mu, "mu"), float_tensor(rho, "rho")
    return _ops.fused_bnn_gaussian_kl_analytic(mu, rho, *_prior(mu, mu_prior, std_prior))


@tf.RegisterGradient("FusedBnn>GaussianKlAnalytic")
def _gaussian_kl_analytic_grad(op, dkl):
    dmu, drho = _ops.fused_bnn_gaussian_kl_analytic_grad(dkl, *op.inputs)
    return dmu, drho, _prior_mean_grad(op, dmu, 2), None


def _optional_bias(b_mu, b_rho, b_seed, w_seed):
    """Bias inputs of a layer op: the real ones, or empty placeholders with use_bias=False."""
    given = [b is not None for b in (b_mu, b_rho, b_seed)]
    if any(given) and not all(given):
        raise ValueError("b_mu, b_rho and b_seed must be given together (or none of them, for no bias)")
    if not any(given):
        empty = tf.zeros([0], tf.float32)
        return empty, empty, w_seed, False
    b_mu, b_rho, b_seed = _mu_rho_seed(b_mu, b_rho, b_seed, prefix="b_")
    return b_mu, b_rho, b_seed, True


ESTIMATORS = ("reparameterization", "flipout", "local_reparameterization")


def _estimator_seed(estimator, x_seed):
    """x_seed as the ops take it (int64), checked against the estimator: required unless the
    estimator is the default one, which shares one weight sample over the batch."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if estimator == "reparameterization":
        return None
    if x_seed is None:
        raise ValueError(f"estimator {estimator!r} needs x_seed, a [2] seed of the per-example randomness")
    return tf.cast(seed_tensor(x_seed, "x_seed"), tf.int64)


def _checked_kl_priors(kl_priors):
    """``kl_priors`` (None or two pairs), else ValueError."""
    if kl_priors is not None and (
        len(kl_priors) != 2 or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in kl_priors)
    ):
        raise ValueError(f"kl_priors must be ((w_mu_prior, w_std_prior), (b_mu_prior, b_std_prior)), got {kl_priors!r}")
    return kl_priors


def _kl_priors(kl_priors, w_mu, b_mu, use_bias):
    """The prior inputs of a layer op: ``(w_mu_prior, w_std_prior, b_mu_prior, b_std_prior)`` from
    ``((w_mu_prior, w_std_prior), (b_mu_prior, b_std_prior))`` (the bias pair only with a bias), or
    placeholders the op does not read when ``kl_priors`` is None."""
    if _checked_kl_priors(kl_priors) is None:
        return (tf.constant(0.0), tf.constant(1.0)) * 2
    w_prior = _prior(w_mu, *kl_priors[0])
    b_prior = _prior(b_mu, *kl_priors[1]) if use_bias else (tf.constant(0.0), tf.constant(1.0))
    return (*w_prior, *b_prior)


def linear(
    x,
    w_mu,
    w_rho,
    w_seed,
    b_mu=None,
    b_rho=None,
    b_seed=None,
    estimator="reparameterization",
    x_seed=None,
    kl_priors=None,
):
    """Bayesian dense layer: ``x @ W^T + b``, W ``[out, in]`` and b ``[out]`` sampled in the op.

    ``x`` has shape ``[..., in]``; the result ``[..., out]``. Without ``b_*`` there is no bias.

    ``kl_priors=((w_mu_prior, w_std_prior), (b_mu_prior, b_std_prior))`` (priors as in
    ``gaussian_kl``; the bias pair is ignored without a bias) returns ``(y, kl)`` instead, ``kl``
    the one-sample KL of the sample the op drew, ``gaussian_kl(w_mu, w_rho, w_seed, *w_prior) +
    gaussian_kl(b_mu, b_rho, b_seed, *b_prior)``, computed in the sampling pass; its gradient is
    added in the backward op's pass that regenerates the noise (reparameterization only). Unlike
    ``gaussian_kl``'s, this KL gives the prior means no gradient.

    ``estimator`` (docs/design.md, "Estimators"): "reparameterization" samples one W per call for
    the whole batch; "flipout" computes ``x mu^T + ((x * s_in) (sigma * eps)^T) * s_out + b`` with
    random signs per example (x's first axis: all positions of an example share them);
    "local_reparameterization" computes ``x mu^T + sqrt(x^2 (sigma^2)^T) * eps_out + b`` with
    output-shaped noise, independent across an example's positions too (exact for x ``[batch,
    in]``; beyond, a loss that combines positions sees too little variance: use flipout). The signs
    and ``eps_out`` derive from ``x_seed`` (``[2]``, required by these two) and are never stored.
    """
    x = float_tensor(x, "x")
    w_mu, w_rho, w_seed = _mu_rho_seed(w_mu, w_rho, w_seed, prefix="w_")
    x_seed = _estimator_seed(estimator, x_seed)
    if kl_priors is not None and estimator != "reparameterization":
        raise ValueError(f"kl_priors needs estimator 'reparameterization' (one weight sample), got {estimator!r}")
    b_mu, b_rho, b_seed, use_bias = _optional_bias(b_mu, b_rho, b_seed, w_seed)
    # The op takes both seeds in one dtype.
    w_seed, b_seed = tf.cast(w_seed, tf.int64), tf.cast(b_seed, tf.int64)
    inputs = (x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed)
    if estimator == "flipout":
        return _ops.fused_bnn_flipout_linear(*inputs, x_seed, use_bias=use_bias)
    if estimator == "local_reparameterization":
        return _ops.fused_bnn_local_reparam_linear(*inputs, x_seed, use_bias=use_bias)[0]
    priors = _kl_priors(kl_priors, w_mu, b_mu, use_bias)
    y, kl = _ops.fused_bnn_linear(*inputs, *priors, use_bias=use_bias, with_kl=kl_priors is not None)
    return y if kl_priors is None else (y, kl)


def _linear_layer_grads(op, grad_op, dy, *extra_inputs):
    """The gradients of a linear op's inputs (x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, then any
    seeds): none for the seeds, none for the bias without one."""
    use_bias = op.get_attr("use_bias")
    dx, dw_mu, dw_rho, db_mu, db_rho = grad_op(dy, *op.inputs, *extra_inputs, use_bias=use_bias)
    if not use_bias:
        db_mu = db_rho = None
    seeds = [None] * (len(op.inputs) - 7)
    return [dx, dw_mu, dw_rho, None, db_mu, db_rho, None, *seeds]


@tf.RegisterGradient("FusedBnn>Linear")
def _linear_grad(op, dy, dkl):
    with_kl = op.get_attr("with_kl")
    dy = tf.zeros_like(op.outputs[0]) if dy is None else dy
    # No dkl (the kl output unused) is a zero: the op then skips the KL terms.
    dkl = tf.zeros([]) if dkl is None or not with_kl else dkl
    use_bias = op.get_attr("use_bias")
    dx, dw_mu, dw_rho, db_mu, db_rho = _ops.fused_bnn_linear_grad(
        dy, *op.inputs, dkl, use_bias=use_bias, with_kl=with_kl
    )
    if not use_bias:
        db_mu = db_rho = None
    # The priors get no gradient (fixed hyperparameters, as the layers' are).
    return [dx, dw_mu, dw_rho, None, db_mu, db_rho, None, None, None, None, None]


@tf.RegisterGradient("FusedBnn>FlipoutLinear")
def _flipout_linear_grad(op, dy):
    return _linear_layer_grads(op, _ops.fused_bnn_flipout_linear_grad, dy)


@tf.RegisterGradient("FusedBnn>LocalReparamLinear")
def _local_reparam_linear_grad(op, dy, _dy_std):
    # y_std is internal (ops.linear returns y alone): only dy flows back.
    y, y_std = op.outputs
    dy = tf.zeros_like(y) if dy is None else dy
    return _linear_layer_grads(op, _ops.fused_bnn_local_reparam_linear_grad, dy, y_std)


def _fused_conv2d(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, use_bias, args):
    return _ops.fused_bnn_conv2d(
        x,
        w_mu,
        w_rho,
        w_seed,
        b_mu,
        b_rho,
        b_seed,
        strides=list(args.strides),
        dilations=list(args.dilations),
        padding=args.padding,
        explicit_paddings=list(args.explicit) if args.padding == "EXPLICIT" else [],
        groups=args.groups,
        data_format=args.data_format,
        use_bias=use_bias,
    )


def _onednn_enabled():
    """Whether TensorFlow runs its CPU convolutions with oneDNN (TF_ENABLE_ONEDNN_OPTS), which
    convolves all groups in one op, gradients included (in graphs); TensorFlow's own kernels refuse
    groups."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return False
    return bool(_pywrap_util_port.IsMklEnabled())


_ONEDNN = _onednn_enabled()


def _sampled_conv2d(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, use_bias, args, kl_priors=None):
    """The kernel sampled by the fused op and handed to TensorFlow's own convolution; the fused
    sampling gradient finishes the backward pass. With kl_priors, ``(y, kl)``: the sampling ops'
    KL outputs."""
    w_prior, b_prior = (None, None) if kl_priors is None else kl_priors
    w = sample_gaussian(w_mu, w_rho, w_seed, w_prior)
    b = sample_gaussian(b_mu, b_rho, b_seed, b_prior) if use_bias else None
    if kl_priors is not None:
        w, kl = w
        if use_bias:
            b, b_kl = b
            kl += b_kl
    # oneDNN's graph rewrite gives the grouped convolution its gradient: in graphs only (not eager),
    # and not for explicit padding, which it leaves to TensorFlow's own kernels.
    native_groups = _ONEDNN and args.padding != "EXPLICIT" and not tf.executing_eagerly()
    y = _plain.conv2d_with_kernel(x, w, b, args, native_groups=native_groups)
    return y if kl_priors is None else (y, kl)


def _prefers_tensorflow_engine(x, args):
    """Where sampling in the fused op and convolving with TensorFlow beats the in-op convolution
    (measured in benchmarks/NOTES.md): every undilated convolution (oneDNN's kernels are faster
    than the in-op im2col + GEMM, and transposing NCHW or splitting groups costs less than the
    difference). Dilated ones stay in the op: TensorFlow has no CPU gradient for dilation, and a
    zero-dilated kernel costs more. So do unequal strides (every strided Conv1d): TensorFlow's
    oneDNN kernels mishandle them (see _plain._tf_conv2d). Inputs with unknown sizes also stay in
    the op, which checks them at run time."""
    return max(args.dilations) == 1 and args.strides[0] == args.strides[1] and x.shape[1:].is_fully_defined()


_ENGINES = ("auto", "fused", "tensorflow")


def _check_conv_shapes(x, w_mu, w_rho, bias, args, rank):
    """The static shape checks the fused op also makes, so that both engines raise the same errors."""
    for tensor, name in ((x, "x"), (w_mu, "w_mu")):
        if tensor.shape.rank is not None and tensor.shape.rank != rank + 2:
            raise ValueError(f"{name} must have rank {rank + 2}, got shape {tensor.shape}")
    if not w_rho.shape.is_compatible_with(w_mu.shape):
        raise ValueError(f"w_rho must have the shape of w_mu {w_mu.shape}, got {w_rho.shape}")
    in_per_group, out = (w_mu.shape[-2], w_mu.shape[-1]) if w_mu.shape.rank else (None, None)
    channels = x.shape[-1 if args.channels_last else 1] if x.shape.rank else None
    if None not in (channels, in_per_group) and channels != in_per_group * args.groups:
        raise ValueError(
            f"x's channels ({channels}) must equal w_mu's in/groups ({in_per_group}) times groups ({args.groups})"
        )
    if out is not None and out % args.groups:
        raise ValueError(f"groups ({args.groups}) must divide w_mu's out channels ({out})")
    if x.shape.rank is not None and w_mu.shape.rank is not None:
        first = 1 if args.channels_last else 2
        _conv_args.spatial_outputs(x.shape[first : first + rank], w_mu.shape[:rank], args)
    if bias is None:
        return
    b_mu, b_rho = bias
    if not b_mu.shape.is_compatible_with([out]):
        raise ValueError(f"b_mu must have shape [{out}] (w_mu's out channels), got {b_mu.shape}")
    if not b_rho.shape.is_compatible_with(b_mu.shape):
        raise ValueError(f"b_rho must have the shape of b_mu {b_mu.shape}, got {b_rho.shape}")


def _estimator_signs(shape, x_seed, k):
    """The signs of the contract (docs/design.md, "Estimators"): ``2 * stateless_uniform(shape,
    stateless_fold_in(x_seed, k), 0, 2, int32) - 1``; k = 0 for s_in, 1 for s_out."""
    seed = tf.random.experimental.stateless_fold_in(x_seed, tf.constant(k, tf.int64))
    return tf.cast(2 * tf.random.stateless_uniform(shape, seed, minval=0, maxval=2, dtype=tf.int32) - 1, tf.float32)


def _require_known_ranks(**tensors):
    """The composed estimators need ranks (and the bias's and seeds' shapes) known when traced: TensorFlow's
    oneDNN convolution aborts the process on an input of the wrong rank instead of raising, and a
    run-time check placed before it is not kept by graph optimisation. Sizes may be unknown."""
    for name, tensor in tensors.items():
        whole_shape = name.startswith("b_") or name.endswith("seed")
        if not (tensor.shape.is_fully_defined() if whole_shape else tensor.shape.rank is not None):
            raise ValueError(
                f"{name} must have a known {'shape' if whole_shape else 'rank'} for the flipout and "
                f"local reparameterization convolutions, got shape {tensor.shape}"
            )


def _conv_estimator(x, w_mu, w_rho, w_seed, bias, args, estimator, x_seed):
    """Flipout or local reparameterization of a 2-D convolution (``x`` in args' layout), composed of
    TensorFlow's convolution and the fused sampling op, not one fused op: a sign per example and
    channel, broadcast over the spatial axes (as TFP's Conv2DFlipout), and ``eps_out`` in y's layout."""
    native_groups = _ONEDNN and args.padding != "EXPLICIT" and not tf.executing_eagerly()

    def conv(inputs, kernel, b=None):
        return _plain.conv2d_with_kernel(inputs, kernel, b, args, native_groups=native_groups)

    def per_channel(signs):
        return signs[:, None, None, :] if args.channels_last else signs[:, :, None, None]

    y = conv(x, w_mu)
    if estimator == "flipout":
        channels = tf.shape(x)[-1 if args.channels_last else 1]
        s_in = _estimator_signs(tf.stack([tf.shape(x)[0], channels]), x_seed, 0)
        s_out = _estimator_signs(tf.stack([tf.shape(x)[0], tf.shape(w_mu)[-1]]), x_seed, 1)
        perturbation = sample_gaussian(tf.zeros_like(w_mu), w_rho, w_seed)  # sigma * eps, fused
        y += conv(x * per_channel(s_in), perturbation) * per_channel(s_out)
    else:
        variance = conv(tf.square(x), tf.square(tf.nn.softplus(w_rho)))
        eps_out = tf.random.stateless_normal(
            tf.shape(y), seed=tf.random.experimental.stateless_fold_in(x_seed, tf.constant(2, tf.int64))
        )
        zero = tf.equal(variance, 0.0)  # a zero gradient, not NaN, where the variance is 0 (as the linear op)
        y += tf.where(zero, 0.0, tf.sqrt(tf.where(zero, 1.0, variance))) * eps_out
    # Added last: in graphs TensorFlow would fuse a bias added to a convolution into it, and round
    # differently from eager mode.
    return y if bias is None else y + (bias if args.channels_last else bias[:, None, None])


def _conv(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, args, engine, rank, estimator, x_seed, kl_priors):
    x = float_tensor(x, "x")
    w_mu, w_rho, w_seed = _mu_rho_seed(w_mu, w_rho, w_seed, prefix="w_")
    x_seed = _estimator_seed(estimator, x_seed)
    if _checked_kl_priors(kl_priors) is not None and estimator != "reparameterization":
        raise ValueError(f"kl_priors needs estimator 'reparameterization' (one weight sample), got {estimator!r}")
    if engine not in _ENGINES:
        raise ValueError(f"engine must be one of {_ENGINES}, got {engine!r}")
    w_seed = tf.cast(w_seed, tf.int64)
    b_mu, b_rho, b_seed, use_bias = _optional_bias(b_mu, b_rho, b_seed, w_seed)
    _check_conv_shapes(x, w_mu, w_rho, (b_mu, b_rho) if use_bias else None, args, rank)
    b_seed = tf.cast(b_seed, tf.int64)
    if x_seed is not None:
        bias = {"b_mu": b_mu, "b_rho": b_rho, "b_seed": b_seed} if use_bias else {}
        _require_known_ranks(x=x, w_mu=w_mu, w_rho=w_rho, w_seed=w_seed, x_seed=x_seed, **bias)
    if rank == 1:
        height_axis = 1 if args.channels_last else 2
        x = tf.expand_dims(x, height_axis)
        w_mu, w_rho = w_mu[None], w_rho[None]
        if kl_priors is not None and tf.convert_to_tensor(kl_priors[0][0]).shape.rank:  # one mean per weight
            kl_priors = ((tf.convert_to_tensor(kl_priors[0][0])[None], kl_priors[0][1]), kl_priors[1])
    if x_seed is not None:
        bias = sample_gaussian(b_mu, b_rho, b_seed) if use_bias else None
        y = _conv_estimator(x, w_mu, w_rho, w_seed, bias, args, estimator, x_seed)
    elif engine == "tensorflow" or (engine == "auto" and _prefers_tensorflow_engine(x, args)):
        y = _sampled_conv2d(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, use_bias, args, kl_priors)
        y, kl = (y, None) if kl_priors is None else y
    else:
        y = _fused_conv2d(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, use_bias, args)
        if kl_priors is not None:  # the in-op convolution has no KL output: drawn again
            kl = gaussian_kl(w_mu, w_rho, w_seed, *kl_priors[0])
            if use_bias:
                kl += gaussian_kl(b_mu, b_rho, b_seed, *kl_priors[1])
    y = tf.squeeze(y, height_axis) if rank == 1 else y
    return y if kl_priors is None else (y, kl)


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
    engine="auto",
    estimator="reparameterization",
    x_seed=None,
    kl_priors=None,
):
    """Bayesian 2-D convolution; the kernel ``[kh, kw, in/groups, out]`` and bias ``[out]`` are sampled
    by fused ops and never stored as ``eps``.

    Args:
        x: ``[batch, h, w, in]`` (NHWC) or ``[batch, in, h, w]`` (NCHW), float32.
        w_mu, w_rho, w_seed: the kernel's parameters and its seed (int32/int64 ``[2]``).
        b_mu, b_rho, b_seed: the bias's, or all None for no bias.
        stride, dilation: an int, ``[h, w]``, or any form ``tf.nn.conv2d`` takes (``[s]``, or
            ``[1, h, w, 1]`` for NHWC); stride > 1 together with dilation > 1 is allowed.
        padding: "VALID", "SAME" (TensorFlow's arithmetic), ``[[top, bottom], [left, right]]``,
            ``tf.nn.conv2d``'s four pairs (``[[0, 0], [top, bottom], [left, right], [0, 0]]`` for
            NHWC), or an int or ``[pad_h, pad_w]`` for symmetric padding.
        groups: divides both channel counts; ``groups == in`` is a depthwise convolution.
        data_format: "NHWC" or "NCHW", both on the CPU.
        engine: "fused" runs the convolution inside the fused op (``FusedBnn>Conv2D`` and its fused
            gradient); "tensorflow" samples the kernel with ``sample_gaussian`` and convolves with
            ``tf.nn.conv2d``; "auto" picks the faster for the arguments (see benchmarks/NOTES.md).
        estimator, x_seed: as ``linear``'s: "flipout" is ``conv(x, mu) + conv(x * s_in,
            sigma * eps) * s_out + b`` with one sign per example and channel; "local_reparameterization"
            is ``conv(x, mu) + sqrt(conv(x^2, sigma^2)) * eps_out + b``. Both are composed of
            TensorFlow's convolution and the fused sampling op (``engine`` does not apply).
        kl_priors: as ``linear``'s: ``(y, kl)`` with the one-sample KL of the kernel and bias
            samples, from the sampling ops' pass over the noise (the "tensorflow" engine; the
            in-op convolution draws it again with ``gaussian_kl``).
    """
    args = _conv_args.conv2d_args(stride, padding, dilation, groups, data_format)
    return _conv(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, args, engine, 2, estimator, x_seed, kl_priors)


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
    engine="auto",
    estimator="reparameterization",
    x_seed=None,
    kl_priors=None,
):
    """Bayesian 1-D convolution, the 2-D one with a unit height: ``x`` is ``[batch, width, in]`` (NWC)
    or ``[batch, in, width]`` (NCW), the kernel ``[k, in/groups, out]``; ``stride`` and ``dilation``
    are ints (or ``tf.nn.conv1d``'s ``[s]`` and ``[1, s, 1]`` for NWC), ``padding`` "VALID", "SAME",
    an int or ``[left, right]``. Otherwise as ``conv2d``
    (the estimators' signs and ``eps_out`` are those of the unit-height 2-D convolution)."""
    args = _conv_args.conv1d_args(stride, padding, dilation, groups, data_format)
    return _conv(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, args, engine, 1, estimator, x_seed, kl_priors)


@tf.RegisterGradient("FusedBnn>Conv2D")
def _conv2d_grad(op, dy):
    use_bias = op.get_attr("use_bias")
    attrs = {
        name: op.get_attr(name)
        for name in ("strides", "dilations", "padding", "explicit_paddings", "groups", "data_format")
    }
    dx, dw_mu, dw_rho, db_mu, db_rho = _ops.fused_bnn_conv2d_grad(dy, *op.inputs, use_bias=use_bias, **attrs)
    if not use_bias:
        db_mu = db_rho = None
    return dx, dw_mu, dw_rho, None, db_mu, db_rho, None


def embedding(ids, w_mu, w_rho, w_seed, padding_idx=None, max_norm=None, norm_type=2.0):
    """Bayesian embedding lookup ``W[ids]``, W ``[num_embeddings, dim]``, sampling only the rows it reads.

    ``ids`` are int32 or int64 of any shape, each in ``[0, num_embeddings)`` (else
    InvalidArgumentError naming the id); the result has shape ``ids.shape + [dim]`` and equals a
    gather from ``sample_gaussian(w_mu, w_rho, w_seed)``. Outputs at ``padding_idx`` are zero (and
    get no gradient). With ``max_norm``, each output row e is scaled by
    ``max_norm / max(norm(e, norm_type), max_norm)``, gradient included. The gradients for
    ``w_mu`` and ``w_rho`` are ``tf.IndexedSlices``: one slice per position of ``ids``, as
    ``tf.gather``'s gradient has them (repeated ids repeat; padding positions are zero slices), or,
    with ``max_norm``, one per distinct looked-up row in ascending order.

    When ``w_mu`` and ``w_rho`` are variables (``tf.Variable``, Keras variables, tf.distribute
    variables in a replica context), the ops read them in place, as ``tf.gather`` on a variable
    does: an optimizer that applies the sparse gradient with a scatter (Keras SGD, for one) switches
    TensorFlow variables to copy-on-read, after which every ordinary read copies the whole table.
    The gradient op then reads the variables' values at the time the gradient is computed (before
    any update of the step).

    On a GPU the ops read ``ids`` from host memory and check them there, so an out-of-range id
    raises the same InvalidArgumentError as on the CPU (never a silent zero row); ids computed on
    the GPU are copied to the host first, as for any host-memory input.
    """
    ids = tf.convert_to_tensor(ids)
    if ids.dtype not in (tf.int32, tf.int64):
        raise ValueError(f"ids must be an int32 or int64 tensor, got dtype {ids.dtype.name}")
    options = embedding_options(padding_idx, max_norm, norm_type)
    variables = _resource_variables(w_mu, w_rho)
    if variables is not None:
        (w_mu, w_rho), table = variables
        for name, variable in (("w_mu", w_mu), ("w_rho", w_rho)):
            if variable.dtype != tf.float32:
                raise ValueError(f"{name} must be a float32 variable, got dtype {variable.dtype.name}")
            resource_variable_ops.variable_accessed(variable)  # what a read does: the tape watches it
        lookup = _ops.fused_bnn_embedding_from_variables
    else:
        w_mu, w_rho = float_tensor(w_mu, "w_mu"), float_tensor(w_rho, "w_rho")
        table = (w_mu, w_rho)
        lookup = _ops.fused_bnn_embedding
    w_seed = seed_tensor(w_seed, "w_seed")
    num_embeddings = w_mu.shape[0] if w_mu.shape.rank == 2 else None
    if num_embeddings is not None and options["padding_idx"] >= num_embeddings:
        raise ValueError(f"padding_idx must be in [0, {num_embeddings}), got {padding_idx}")
    # The second output, dw/drho = eps * sigmoid(rho) of the looked-up elements, is for the gradient.
    y, _ = lookup(ids, *table, w_seed, **options)
    return y


def _resource_variables(*values):
    """The resource variables behind ``values`` (Keras variables unwrapped) and their handles, or
    None unless all are variables with a handle here (a tf.distribute variable has one only in a
    replica context)."""
    variables = [getattr(v, "value", v) if isinstance(v, keras.Variable) else v for v in values]
    if not all(resource_variable_ops.is_resource_variable(v) for v in variables):
        return None
    try:
        return variables, [v.handle for v in variables]
    except ValueError:
        return None


def _embedding_grad(grad_op, op, dy, table_shape):
    """The gradient for y; that of the dw_drho output, which only this gradient reads, is ignored.

    Without max_norm the slices are per position, as tf.gather's gradient has them: dmu is dy itself
    (zero at padding positions) and drho is dy * dw_drho, with no noise, sort or row sums; whoever
    applies them sums repeated ids. With max_norm the op sums each distinct row through the rescale.
    """
    ids, w_mu, w_rho, w_seed = op.inputs
    options = {name: op.get_attr(name) for name in ("padding_idx", "max_norm", "norm_type")}
    # The op's gradient for dw_drho is not computed (it would need the noise): differentiating
    # through it must raise, not give a second-order gradient without that term.
    dw_drho = _first_order_only(op.outputs[1], op)
    if options["max_norm"] > 0.0:
        indices, dw_mu, dw_rho = grad_op(dy, dw_drho, ids, w_mu, w_rho, w_seed, **options)
    else:
        indices = tf.reshape(ids, [-1])
        # [positions, dim] spelled out: with no positions and dim 0, a -1 would resolve to 1.
        dw_mu = tf.reshape(dy, tf.concat([tf.shape(indices), tf.shape(dy)[-1:]], 0))
        if options["padding_idx"] >= 0:
            # dw_drho is zero at padding positions; dmu must be too ("get no gradient").
            dw_mu = dw_mu * tf.cast(indices != options["padding_idx"], dy.dtype)[:, None]
        dw_rho = dw_mu * tf.reshape(dw_drho, tf.shape(dw_mu))
    return None, tf.IndexedSlices(dw_mu, indices, table_shape), tf.IndexedSlices(dw_rho, indices, table_shape), None


@tf.RegisterGradient("FusedBnn>Embedding")
def _embedding_tensors_grad(op, dy, _):
    # int32, as tf.gather's gradient has it (tf.cond needs them to agree)
    return _embedding_grad(_ops.fused_bnn_embedding_grad, op, dy, tf.shape(op.inputs[1]))


@tf.RegisterGradient("FusedBnn>EmbeddingFromVariables")
def _embedding_variables_grad(op, dy, _):
    # As ResourceGather's gradient: the variable's shape, int32.
    table_shape = resource_variable_ops.variable_shape(op.inputs[1])
    return _embedding_grad(_ops.fused_bnn_embedding_from_variables_grad, op, dy, table_shape)


def lstm(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, initial_state=None, kl_priors=None):
    """Bayesian LSTM over a whole sequence in one op; returns ``(h_seq, (h_T, c_T))``.

    ``x`` is ``[B, T, E]``, W ``[E + H, 4H]`` and b ``[4H]`` are sampled once per call, gate order
    f, i, c, o along the last axis: ``z = [x_t, h] @ W + b``, ``c = sig(f) c + sig(i) tanh(g)``,
    ``h = sig(o) tanh(c)``. ``initial_state`` is ``(h0, c0)``, each ``[B, H]``, zeros if None.
    ``h_seq`` is ``[B, T, H]``. The gradient op runs backpropagation through time from the
    activations the forward op kept, and regenerates the noise for the ``rho`` gradients.

    ``kl_priors=((w_mu_prior, w_std_prior), (b_mu_prior, b_std_prior))`` returns
    ``(h_seq, (h_T, c_T), kl)`` instead, ``kl`` the one-sample KL of the W and b the op drew, as
    ``linear``'s: computed in the sampling pass, its gradient added where the backward op
    regenerates the noise, none for the prior means.
    """
    x = float_tensor(x, "x")
    w_mu, w_rho, w_seed = _mu_rho_seed(w_mu, w_rho, w_seed, prefix="w_")
    b_mu, b_rho, b_seed = _mu_rho_seed(b_mu, b_rho, b_seed, prefix="b_")
    if w_seed.dtype != b_seed.dtype:
        w_seed, b_seed = tf.cast(w_seed, tf.int64), tf.cast(b_seed, tf.int64)
    if initial_state is None:
        h0 = c0 = tf.zeros(tf.stack([tf.shape(x)[0], tf.shape(w_mu)[-1] // 4]), tf.float32)
    else:
        if len(initial_state) != 2:
            raise ValueError(f"initial_state must be a pair (h0, c0), got {len(initial_state)} tensors")
        h0, c0 = float_tensor(initial_state[0], "h0"), float_tensor(initial_state[1], "c0")
    priors = _kl_priors(kl_priors, w_mu, b_mu, use_bias=True)
    h_seq, h_last, c_last, _, _, _, kl = _ops.fused_bnn_lstm(
        x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, h0, c0, *priors, with_kl=kl_priors is not None
    )
    return (h_seq, (h_last, c_last)) if kl_priors is None else (h_seq, (h_last, c_last), kl)


@tf.RegisterGradient("FusedBnn>Lstm")
def _lstm_grad(op, dh_seq, dh_last, dc_last, _dw, _dgates, _dcells, dkl):
    h_seq, h_last, c_last, w, gates, cells, _ = op.outputs
    with_kl = op.get_attr("with_kl")
    dh_seq = tf.zeros_like(h_seq) if dh_seq is None else dh_seq
    dh_last = tf.zeros_like(h_last) if dh_last is None else dh_last
    dc_last = tf.zeros_like(c_last) if dc_last is None else dc_last
    # No dkl (the kl output unused) is a zero: the op then skips the KL terms.
    dkl = tf.zeros([]) if dkl is None or not with_kl else dkl
    dx, dw_mu, dw_rho, db_mu, db_rho, dh0, dc0 = _ops.fused_bnn_lstm_grad(
        dh_seq, dh_last, dc_last, *op.inputs, h_seq, w, gates, cells, dkl, with_kl=with_kl
    )
    # The priors get no gradient (fixed hyperparameters, as the layers' are).
    return dx, dw_mu, dw_rho, None, db_mu, db_rho, None, dh0, dc0, None, None, None, None


def _second_order_error(op_type):
    return NotImplementedError(
        f"fusedbnn's fused gradients are first-order only: a gradient of a gradient (a gradient "
        f"penalty, a Hessian-vector product, forward-mode autodiff) reached {op_type}. Use "
        f"fusedbnn.reference's function of the same name there (plain TensorFlow, every order)."
    )


def _second_order_gradients(op_type, inputs):
    """The gradients of ``inputs`` in a gradient of a fused gradient: an error now when eager; in a
    graph, gradients that raise the error when they run. Under a persistent or nested tape,
    TensorFlow builds the second-order gradients of a tf.function's first-order ones without running
    them (unless asked): building them must not fail a first-order gradient."""
    if tf.executing_eagerly():
        raise _second_order_error(op_type)
    refuse = tf.debugging.Assert(False, [str(_second_order_error(op_type))])
    with tf.control_dependencies([refuse]):
        return [tf.zeros_like(x) if x.dtype.is_floating else None for x in inputs]


def _no_second_order_gradient(op, *_):
    return _second_order_gradients(op.type, op.inputs)


def _first_order_only(tensor, op):
    """``tensor``, for a first-order gradient of ``op``; differentiating it raises."""

    @tf.custom_gradient
    def identity(x):
        def grad(_):
            return _second_order_gradients(op.type, [x])[0]

        return tf.identity(x), grad

    return identity(tensor)


for _grad_op in (
    "SampleGaussianGrad",
    "SampleGaussianKlGrad",
    "GaussianKlGrad",
    "GaussianKlAnalyticGrad",
    "LinearGrad",
    "FlipoutLinearGrad",
    "LocalReparamLinearGrad",
    "Conv2DGrad",
    "EmbeddingGrad",
    "EmbeddingFromVariablesGrad",
    "LstmGrad",
):
    tf.RegisterGradient(f"FusedBnn>{_grad_op}")(_no_second_order_gradient)
