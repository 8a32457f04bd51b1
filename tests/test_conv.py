"""ops.conv2d / ops.conv1d (both engines) and _core.conv2d: forward and every gradient against the reference."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import MODES, assert_allclose, gaussian_params, grads, run, seed_of
from fusedbnn import _conv_args, _core, _plain, ops, reference

ENGINES = ["fused", "auto"]


def conv_inputs(rng, x_shape, kernel_shape, bias=True):
    x = tf.constant(rng.normal(size=x_shape).astype(np.float32))
    w_mu, w_rho = gaussian_params(rng, kernel_shape)
    args = [x, w_mu, w_rho, seed_of(rng)]
    if bias:
        b_mu, b_rho = gaussian_params(rng, [kernel_shape[-1]])
        args += [b_mu, b_rho, seed_of(rng)]
    return args


def compare(mode, args, conv="conv2d", engine="fused", rtol=2e-4, atol=2e-4, **kwargs):
    fused_fn, reference_fn = getattr(ops, conv), getattr(reference, conv)

    def both(*args):
        floats = [a for a in args if a.dtype == tf.float32]
        return (
            grads(lambda: fused_fn(*args, engine=engine, **kwargs), floats),
            grads(lambda: reference_fn(*args, **kwargs), floats),
        )

    fused, ref = run(mode, both, *args)
    for name, f, r in zip(["y", "dx", "dw_mu", "dw_rho", "db_mu", "db_rho"], fused, ref):
        scale = max(1.0, float(np.abs(r).max())) if r.size else 1.0
        assert f.shape == r.shape, name
        assert_allclose(f, r, rtol=rtol, atol=atol * scale, err_msg=f"{name} {kwargs}")


def kernel_2d(kernel, channels, out, groups):
    return [*kernel, channels // groups, out]


def x_2d(batch, spatial, channels, data_format):
    return [batch, *spatial, channels] if data_format == "NHWC" else [batch, channels, *spatial]


# (batch, spatial, in, out, kernel, kwargs): strides 1, 2 and unequal; VALID, SAME, explicit; dilation
# 1, 2, 3; groups 1, 2 and depthwise; odd sizes; batch 1 and 0; 1x1 and non-square kernels.
CONV2D_CASES = [
    (2, (7, 6), 4, 5, (3, 3), {}),
    (1, (9, 7), 3, 6, (3, 2), dict(stride=2, padding="SAME")),
    (2, (8, 9), 4, 6, (2, 3), dict(stride=[2, 1], padding=[[1, 2], [0, 3]], groups=2)),
    (2, (9, 9), 4, 4, (3, 3), dict(dilation=3, padding="SAME", groups=4)),
    (2, (11, 10), 6, 5, (3, 2), dict(stride=[1, 2], dilation=[2, 1], padding="VALID")),
    (3, (7, 8), 6, 9, (2, 2), dict(stride=2, dilation=2, padding="SAME", groups=3)),
    (2, (5, 5), 3, 7, (1, 1), {}),
    (2, (6, 5), 4, 8, (1, 1), dict(groups=2)),
    (1, (5, 7), 5, 3, (1, 1), dict(stride=2, padding=[1, 0])),
    (0, (5, 5), 3, 4, (3, 3), dict(padding="SAME")),
    (2, (4, 13), 2, 3, (4, 5), dict(padding="SAME", dilation=2)),
    (1, (1, 1), 1, 1, (1, 1), {}),
    (2, (7, 8), 6, 6, (3, 3), dict(padding="SAME", groups=6)),
    (3, (9, 8), 4, 6, (3, 2), dict(stride=2, groups=2)),
    (2, (6, 7), 4, 8, (2, 3), dict(stride=[1, 2], padding="SAME", groups=4)),
    (2, (5, 6), 3, 4, (2, 2), dict(padding=[[3, 1], [0, 2]])),  # padding beyond the kernel window
    # Per-group products large enough for one GEMM per group (the cases above take the small-group loops).
    (2, (6, 7), 16, 34, (3, 3), dict(stride=[2, 1], padding="SAME", dilation=[1, 2], groups=2)),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("case", range(len(CONV2D_CASES)))
def test_conv2d_matches_reference(mode, data_format, case, rng):
    batch, spatial, n_in, n_out, kernel, kwargs = CONV2D_CASES[case]
    groups = kwargs.get("groups", 1)
    args = conv_inputs(
        rng, x_2d(batch, spatial, n_in, data_format), kernel_2d(kernel, n_in, n_out, groups), bias=case % 2 == 0
    )
    for engine in ENGINES:
        compare(mode, args, engine=engine, data_format=data_format, **kwargs)


def test_conv2d_random_configs(rng):
    for _ in range(10):
        groups = int(rng.choice([1, 2, 3]))
        n_in, n_out = groups * int(rng.integers(1, 4)), groups * int(rng.integers(1, 4))
        kernel = tuple(int(k) for k in rng.integers(1, 4, 2))
        kwargs = dict(
            stride=[int(s) for s in rng.integers(1, 4, 2)],
            dilation=[int(d) for d in rng.integers(1, 3, 2)],
            groups=groups,
            padding=str(rng.choice(["VALID", "SAME"])),
            data_format=str(rng.choice(["NHWC", "NCHW"])),
        )
        spatial = [int(s) for s in rng.integers(5, 12, 2)]
        args = conv_inputs(
            rng,
            x_2d(int(rng.integers(1, 4)), spatial, n_in, kwargs["data_format"]),
            kernel_2d(kernel, n_in, n_out, groups),
            bias=bool(rng.integers(2)),
        )
        compare("eager", args, engine="fused", **kwargs)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("padding", ["VALID", "SAME"])
@pytest.mark.parametrize("stride", [[1, 3], [2, 1]])
def test_unequal_strides_avoid_tensorflows_broken_kernels(channels, padding, stride, rng):
    """TensorFlow 2.21's oneDNN convolutions mishandle unequal strides (the filter gradient writes
    out of bounds; one-channel forwards return garbage): engine="tensorflow" (and the frozen layers)
    convolve at stride 1 and subsample, and engine="auto" keeps such convolutions in the fused op.
    Checked against loops."""
    x = rng.normal(size=[2, 6, 5, channels]).astype(np.float32)
    w = rng.normal(size=[1, 3, channels, 3]).astype(np.float32)
    args = _conv_args.conv2d_args(stride, padding, 1, 1, "NHWC")
    y = _plain.conv2d_with_kernel(tf.constant(x), tf.constant(w), None, args).numpy()
    if padding == "SAME":
        total = [max((-(-n // s) - 1) * s + k - n, 0) for n, k, s in zip([6, 5], [1, 3], stride)]
        x = np.pad(x, [[0, 0], *[[t // 2, t - t // 2] for t in total], [0, 0]])
    out_h, out_w = (x.shape[1] - 1) // stride[0] + 1, (x.shape[2] - 3) // stride[1] + 1
    expected = np.zeros([2, out_h, out_w, 3])
    for i in range(out_h):
        for j in range(out_w):
            expected[:, i, j] = np.einsum("bwc,wco->bo", x[:, i * stride[0], j * stride[1] : j * stride[1] + 3], w[0])
    assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    fused_args = conv_inputs(rng, [2, 6, 5, channels], [1, 3, channels, 3])
    for engine in ENGINES:
        compare("function", fused_args, engine=engine, stride=stride, padding=padding)


@pytest.mark.parametrize(
    "x_shape, kernel_shape, groups, data_format",
    [
        ([9, 23, 21, 16], [3, 3, 16, 12], 1, "NHWC"),
        ([12, 16, 40, 40], [3, 3, 1, 32], 16, "NCHW"),  # depthwise, multiplier 2
        ([4, 128, 20, 20], [3, 3, 64, 8], 2, "NCHW"),  # k_g = 576: two tiles of dW^T per group
    ],
)
def test_conv2d_large_enough_for_several_chunks(x_shape, kernel_shape, groups, data_format, rng):
    """More images than one chunk holds, so partial kernel gradients are accumulated."""
    args = conv_inputs(rng, x_shape, kernel_shape)
    compare(
        "function", args, engine="fused", padding="SAME", groups=groups, data_format=data_format, rtol=5e-4, atol=5e-4
    )


CONV1D_CASES = [
    (2, 13, 4, 5, 3, {}),
    (1, 17, 3, 6, 4, dict(stride=2, padding="SAME")),
    (2, 16, 4, 6, 2, dict(stride=[3], padding=[2, 1], groups=2)),
    (2, 19, 4, 4, 3, dict(dilation=3, padding="SAME", groups=4)),
    (3, 20, 6, 9, 2, dict(stride=2, dilation=2, padding=1, groups=3)),
    (0, 9, 3, 4, 5, dict(padding="SAME")),
    (1, 7, 5, 3, 1, {}),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("data_format", ["NWC", "NCW"])
@pytest.mark.parametrize("case", range(len(CONV1D_CASES)))
def test_conv1d_matches_reference(mode, data_format, case, rng):
    batch, length, n_in, n_out, kernel, kwargs = CONV1D_CASES[case]
    groups = kwargs.get("groups", 1)
    x_shape = [batch, length, n_in] if data_format == "NWC" else [batch, n_in, length]
    args = conv_inputs(rng, x_shape, [kernel, n_in // groups, n_out], bias=case % 2 == 0)
    for engine in ENGINES:
        compare(mode, args, conv="conv1d", engine=engine, data_format=data_format, **kwargs)


@pytest.mark.parametrize("planted", ["w_mu", "x"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize(
    "conv, x_shape, kernel_shape, kwargs",
    [
        ("conv2d", [2, 6, 7, 3], [3, 3, 3, 4], dict(padding="VALID")),
        ("conv2d", [2, 3, 5, 6], [2, 2, 3, 4], dict(padding=[[3, 1], [0, 2]], data_format="NCHW")),
        ("conv1d", [2, 11, 4], [3, 2, 6], dict(dilation=2, groups=2)),
    ],
)
def test_a_non_finite_weight_or_input_reaches_only_the_gradients_it_affects(
    planted, value, conv, x_shape, kernel_shape, kwargs, rng
):
    """Stride-1 backwards take dx and dW from the im2col of the zero-padded dy, whose padding times
    a NaN or Inf weight (dx) or input (dW) is NaN; such calls take the im2col of x and the gather
    (conv_backward), like the reference."""
    x, w_mu, w_rho, w_seed = conv_inputs(rng, x_shape, kernel_shape, bias=False)
    if planted == "w_mu":  # the last tap, which never reaches the first input column
        w_mu = tf.tensor_scatter_nd_update(w_mu, [[n - 1 for n in kernel_shape]], [value])
    else:  # the first pixel, which the last taps never read
        x = tf.tensor_scatter_nd_update(x, [[0] * len(x_shape)], [value])
    fused_fn, reference_fn = getattr(ops, conv), getattr(reference, conv)
    fused = grads(lambda: fused_fn(x, w_mu, w_rho, w_seed, engine="fused", **kwargs), [x, w_mu])
    ref = grads(lambda: reference_fn(x, w_mu, w_rho, w_seed, **kwargs), [x, w_mu])
    for name, f, r in zip(["dx", "dw_mu"], fused[1:], ref[1:]):
        finite = np.isfinite(r)
        np.testing.assert_array_equal(np.isfinite(f), finite, err_msg=name)
        assert_allclose(f[finite], r[finite], rtol=2e-4, atol=2e-4, err_msg=name)
    affected = np.isfinite(ref[1 if planted == "w_mu" else 2])
    assert 0 < affected.sum() < affected.size


@pytest.mark.parametrize(
    "conv, x_shape, kernel_shape, kwargs, planted",
    [
        ("conv2d", [1, 7, 7, 2], [2, 2, 2, 3], dict(dilation=2), [0, 3, 3, 1]),
        ("conv2d", [2, 9, 8, 2], [2, 3, 2, 3], dict(dilation=[2, 3], stride=2, padding="SAME"), [0, 5, 4, 1]),
        (
            "conv2d",
            [1, 4, 8, 9],
            [3, 2, 2, 4],
            dict(dilation=[3, 2], stride=[1, 2], data_format="NCHW", groups=2),
            [0, 2, 4, 4],
        ),
        ("conv1d", [2, 11, 4], [3, 4, 2], dict(dilation=2, padding=[2, 1]), [0, 5, 2]),
    ],
)
@pytest.mark.parametrize("mode", MODES)
def test_a_non_finite_input_reaches_only_the_outputs_that_read_it_with_tensorflows_kernels(
    conv, x_shape, kernel_shape, kwargs, planted, mode
):
    """engine="tensorflow" (as the frozen layers) dilated the kernel with zero taps, whose products
    with an Inf or NaN input made NaN of outputs that skip it."""
    rng = np.random.default_rng(3)
    x, w_mu, _, w_seed = conv_inputs(rng, x_shape, kernel_shape, bias=False)
    x = tf.tensor_scatter_nd_update(x, [planted], [np.inf])  # a pixel that some outputs read
    w_rho = tf.fill(w_mu.shape, -np.inf)  # sigma 0: w is mu exactly
    fn = getattr(ops, conv)
    fused, plain = (
        run(mode, lambda engine=engine: fn(x, w_mu, w_rho, w_seed, engine=engine, **kwargs))
        for engine in ("fused", "tensorflow")
    )
    np.testing.assert_array_equal(np.isnan(plain), np.isnan(fused))
    np.testing.assert_array_equal(np.isinf(plain), np.isinf(fused))
    finite = np.isfinite(fused)
    assert 0 < finite.sum() < finite.size
    assert_allclose(plain[finite], fused[finite], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_conv2d_numeric_gradient(data_format):
    rng = np.random.default_rng(5)
    x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed = conv_inputs(rng, x_2d(2, (4, 5), 4, data_format), [2, 3, 2, 4])

    def fn(x, wm, wr, bm, br):
        return ops.conv2d(
            x,
            wm,
            wr,
            w_seed,
            bm,
            br,
            b_seed,
            stride=[2, 1],
            padding="SAME",
            dilation=[1, 2],
            groups=2,
            data_format=data_format,
            engine="fused",
        )

    theoretical, numerical = tf.test.compute_gradient(fn, [x, w_mu, w_rho, b_mu, b_rho], delta=1e-2)
    for t, n in zip(theoretical, numerical):
        assert_allclose(t, n, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_core_matches_the_op(data_format):
    rng = np.random.default_rng(7)
    x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed = conv_inputs(rng, x_2d(3, (7, 8), 6, data_format), [3, 2, 3, 4])
    kwargs = dict(stride=[2, 1], padding=[[1, 0], [2, 1]], dilation=[1, 2], groups=2, data_format=data_format)
    numpy_args = [a.numpy() for a in (x, w_mu, w_rho)]
    seeds = dict(w_seed=tuple(w_seed.numpy()), b_seed=tuple(b_seed.numpy()))
    core_kwargs = dict(
        stride=(2, 1),
        padding="EXPLICIT",
        explicit_paddings=[1, 0, 2, 1],
        dilation=(1, 2),
        groups=2,
        data_format=data_format,
        b_mu=b_mu.numpy(),
        b_rho=b_rho.numpy(),
        **seeds,
    )
    y = _core.conv2d(*numpy_args, **core_kwargs)
    fused = grads(
        lambda: ops.conv2d(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, engine="fused", **kwargs),
        [x, w_mu, w_rho, b_mu, b_rho],
    )
    assert_allclose(y, fused[0])
    dy = fused[0].numpy() * 0 + np.cos(np.arange(y.size, dtype=np.float32)).reshape(y.shape)
    for name, core_grad, op_grad in zip(
        ["dx", "dw_mu", "dw_rho", "db_mu", "db_rho"], _core.conv2d_grad(dy, *numpy_args, **core_kwargs), fused[1:]
    ):
        assert_allclose(core_grad, op_grad, err_msg=name)


def test_backward_on_the_op_pool_is_bit_identical_to_the_single_threaded_core(rng):
    """Several chunks summed into dW^T, two tiles of it per group: the op's threads split both."""
    x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed = conv_inputs(rng, [4, 20, 20, 128], [3, 3, 64, 8])
    kwargs = dict(padding="SAME", groups=2)
    sources = [x, w_mu, w_rho, b_mu, b_rho]
    with tf.GradientTape() as tape:
        tape.watch(sources)
        y = ops.conv2d(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, engine="fused", **kwargs)
    dy = rng.normal(size=y.shape).astype(np.float32)
    fused = tape.gradient(y, sources, output_gradients=tf.constant(dy))
    core = _core.conv2d_grad(
        dy,
        x.numpy(),
        w_mu.numpy(),
        w_rho.numpy(),
        w_seed=tuple(w_seed.numpy()),
        b_mu=b_mu.numpy(),
        b_rho=b_rho.numpy(),
        b_seed=tuple(b_seed.numpy()),
        **kwargs,
    )
    for name, core_grad, op_grad in zip(["dx", "dw_mu", "dw_rho", "db_mu", "db_rho"], core, fused):
        np.testing.assert_array_equal(core_grad, op_grad, err_msg=name)


def test_same_seed_is_bit_identical_and_threads_do_not_matter(rng):
    args = conv_inputs(rng, [3, 9, 8, 6], [3, 3, 6, 5])
    first = ops.conv2d(*args, padding="SAME", engine="fused").numpy()
    np.testing.assert_array_equal(first, ops.conv2d(*args, padding="SAME", engine="fused").numpy())
    single = _core.conv2d(
        *[a.numpy() for a in args[:3]],
        w_seed=tuple(args[3].numpy()),
        b_mu=args[4].numpy(),
        b_rho=args[5].numpy(),
        b_seed=tuple(args[6].numpy()),
        padding="SAME",
    )
    np.testing.assert_array_equal(first, single)
    other = list(args)
    other[3] = other[3] + 1
    assert not np.allclose(first, ops.conv2d(*other, padding="SAME", engine="fused").numpy())


@pytest.mark.parametrize("mode", MODES)
def test_bad_arguments_raise_naming_them(mode):
    x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed = conv_inputs(np.random.default_rng(0), [2, 6, 6, 4], [3, 3, 2, 6])
    good = dict(groups=2)
    cases = [
        ((tf.zeros([2, 6, 6, 5]), w_mu, w_rho, w_seed), good, "channels"),
        ((x, w_mu, w_rho, w_seed), dict(groups=1), "channels"),
        ((x, w_mu, tf.zeros([3, 3, 2, 5]), w_seed), good, "w_rho"),
        ((tf.zeros([2, 6, 6]), w_mu, w_rho, w_seed), good, "x"),
        ((x, tf.zeros([3, 2, 6]), tf.zeros([3, 2, 6]), w_seed), good, "w_mu"),
        ((tf.zeros([2, 6, 6, 4], tf.int32), w_mu, w_rho, w_seed), good, "x"),
        ((x, w_mu, w_rho, tf.constant([1, 2, 3], tf.int64)), good, "w_seed"),
        ((x, w_mu, w_rho, w_seed, tf.zeros([5]), tf.zeros([5]), b_seed), good, "b_mu"),
        ((x, w_mu, w_rho, w_seed, b_mu, tf.zeros([5]), b_seed), good, "b_rho"),
        ((x, w_mu, w_rho, w_seed, tf.zeros([0]), tf.zeros([0]), b_seed), good, "b_mu"),
        ((x, w_mu, w_rho, w_seed), dict(groups=4), "groups"),
        ((x, w_mu, w_rho, w_seed), dict(groups=0), "groups"),
        ((x, w_mu, w_rho, w_seed), dict(good, stride=0), "stride"),
        ((x, w_mu, w_rho, w_seed), dict(good, dilation=[1, 2, 3]), "dilation"),
        ((x, w_mu, w_rho, w_seed), dict(good, padding="FULL"), "padding"),
        ((x, w_mu, w_rho, w_seed), dict(good, padding=[[1, -1], [0, 0]]), "padding"),
        ((x, w_mu, w_rho, w_seed), dict(good, data_format="NWC"), "data_format"),
        ((x[:, :2], w_mu, w_rho, w_seed), good, "negative"),
    ]
    # Static shapes: both engines raise the same ValueError (the fused engine's negative output size
    # was an InvalidArgumentError at run time).
    for args, kwargs, match in cases:
        for engine in ("fused", "tensorflow"):
            with pytest.raises(ValueError, match=match):
                run(mode, lambda: ops.conv2d(*args, engine=engine, **kwargs))
    with pytest.raises(ValueError, match="x"):
        ops.conv1d(x, w_mu[0], w_rho[0], w_seed, groups=2)
    with pytest.raises(
        ValueError, match=r"width: the padded input \(2\) is smaller than the dilated kernel window \(5\)"
    ):
        ops.conv1d(x[0, :, :2], w_mu[0], w_rho[0], w_seed, groups=2, dilation=2, engine="fused")
    with pytest.raises(ValueError, match="data_format"):
        ops.conv1d(x[0], w_mu[0], w_rho[0], w_seed, groups=2, data_format="NHWC")
    with pytest.raises(ValueError, match="engine"):
        ops.conv2d(x, w_mu, w_rho, w_seed, groups=2, engine="gpu")


def test_unknown_shapes_in_graph_use_the_fused_op_and_are_checked_at_run_time():
    x, w_mu, w_rho, w_seed = conv_inputs(np.random.default_rng(0), [2, 6, 5, 4], [3, 3, 4, 3], bias=False)
    spec = [tf.TensorSpec(None, tf.float32)] * 3 + [tf.TensorSpec(None, tf.int64)]
    fn = tf.function(lambda *a: ops.conv2d(*a, padding="SAME"), input_signature=spec)
    assert_allclose(fn(x, w_mu, w_rho, w_seed), reference.conv2d(x, w_mu, w_rho, w_seed, padding="SAME"))
    with pytest.raises(tf.errors.InvalidArgumentError, match="channels"):
        fn(tf.zeros([2, 6, 5, 3]), w_mu, w_rho, w_seed)
