"""Conv1d / Conv2d (and ops.conv1d / conv2d) take every stride, dilation and padding form that
tf.nn.conv1d / tf.nn.conv2d take, since illia passes its layers' arguments straight to them: ints, lists
of 1, N or N+2 ints (1 at the batch and channel positions of the data format), and conv2d's explicit
padding of N+2 pairs ([0, 0] at batch and channel). Forms tf.nn rejects raise a ValueError naming the
argument."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_allclose, gaussian_params, seed_of
from fusedbnn import nn, ops, reference

FORMATS_2D = ["NHWC", "NCHW"]
FORMATS_1D = ["NWC", "NCW"]


def full_2d(data_format, h, w, outer=1):
    """tf.nn.conv2d's 4-element form of a per-axis value (ints, or pairs with outer=[0, 0])."""
    return [outer, h, w, outer] if data_format == "NHWC" else [outer, outer, h, w]


def full_1d(data_format, w):
    return [1, w, 1] if data_format == "NWC" else [1, 1, w]


# (name, the form under test for a data format, the canonical fusedbnn form of the same convolution)
FORMS_2D = [
    ("stride 4 ints", lambda f: dict(stride=full_2d(f, 2, 2)), dict(stride=[2, 2])),
    ("stride 4 ints unequal", lambda f: dict(stride=full_2d(f, 2, 3)), dict(stride=[2, 3])),
    ("stride 4-tuple", lambda f: dict(stride=tuple(full_2d(f, 1, 2))), dict(stride=[1, 2])),
    ("stride numpy", lambda f: dict(stride=np.array(full_2d(f, 2, 1))), dict(stride=[2, 1])),
    ("stride 1 int", lambda f: dict(stride=[2]), dict(stride=[2, 2])),
    ("dilation 4 ints", lambda f: dict(dilation=full_2d(f, 2, 2)), dict(dilation=[2, 2])),
    ("dilation 4 ints unequal", lambda f: dict(dilation=full_2d(f, 1, 2)), dict(dilation=[1, 2])),
    ("dilation 1 int", lambda f: dict(dilation=[2]), dict(dilation=[2, 2])),
    (
        "padding 4 pairs",
        lambda f: dict(padding=full_2d(f, [1, 1], [1, 1], outer=[0, 0])),
        dict(padding=[[1, 1], [1, 1]]),
    ),
    (
        "padding 4 pairs asymmetric",
        lambda f: dict(padding=full_2d(f, (2, 0), (1, 3), outer=(0, 0))),
        dict(padding=[[2, 0], [1, 3]]),
    ),
    (
        "all three as tf.nn.conv2d",
        lambda f: dict(
            stride=full_2d(f, 2, 2), padding=full_2d(f, [1, 0], [0, 1], outer=[0, 0]), dilation=full_2d(f, 2, 1)
        ),
        dict(stride=[2, 2], padding=[[1, 0], [0, 1]], dilation=[2, 1]),
    ),
]

FORMS_1D = [
    ("stride 3 ints", lambda f: dict(stride=full_1d(f, 2)), dict(stride=2)),
    ("stride 1 int", lambda f: dict(stride=[2]), dict(stride=2)),
    ("stride numpy", lambda f: dict(stride=np.array(full_1d(f, 3))), dict(stride=3)),
    ("dilation 3 ints", lambda f: dict(dilation=full_1d(f, 2)), dict(dilation=2)),
    ("dilation 1 int", lambda f: dict(dilation=[2]), dict(dilation=2)),
    (
        "stride and dilation 3-tuples",
        lambda f: dict(stride=tuple(full_1d(f, 2)), dilation=tuple(full_1d(f, 2)), padding="SAME"),
        dict(stride=2, dilation=2, padding="SAME"),
    ),
]


def x_of(data_format, spatial, channels=4, batch=2):
    shape = [batch, *spatial, channels] if data_format in ("NHWC", "NWC") else [batch, channels, *spatial]
    return tf.constant(np.random.default_rng(len(shape)).normal(size=shape).astype(np.float32))


def exact(value):
    """A Gaussian of zero width at ``value``: the reference then convolves exactly that sample."""
    return value, tf.fill(tf.shape(value), -np.inf), tf.constant([0, 0])


def check_layer(cls, reference_fn, data_format, form, canonical, x):
    layer = cls(4, 6, 3, seed=5, data_format=data_format, **form)
    twin = cls(4, 6, 3, seed=5, data_format=data_format, **canonical)
    # Sampled: the same seed gives the same sample, so the same output as the canonical form's layer,
    # and that is the reference convolution of the call's sample with the canonical arguments.
    y = layer(x)
    assert y.shape == layer.compute_output_shape(x.shape) == twin.compute_output_shape(x.shape)
    assert_allclose(y, twin(x), rtol=1e-5, atol=1e-5)
    expected = reference_fn(x, *exact(layer.w), *exact(layer.b), data_format=data_format, **canonical)
    assert_allclose(y, expected, rtol=2e-4, atol=2e-4)
    # Frozen: the stored sample through the plain-TensorFlow path.
    layer.freeze()
    expected = reference_fn(x, *exact(layer.w), *exact(layer.b), data_format=data_format, **canonical)
    assert_allclose(layer(x), expected, rtol=2e-4, atol=2e-4)
    # The form survives the config round trip.
    clone = cls.from_config(layer.get_config())
    assert clone.compute_output_shape(x.shape) == y.shape


@pytest.mark.parametrize("data_format", FORMATS_2D)
@pytest.mark.parametrize("name, form, canonical", FORMS_2D, ids=[f[0] for f in FORMS_2D])
def test_conv2d_takes_tf_nn_conv2d_forms(name, form, canonical, data_format):
    check_layer(nn.Conv2d, reference.conv2d, data_format, form(data_format), canonical, x_of(data_format, (9, 8)))


@pytest.mark.parametrize("data_format", FORMATS_1D)
@pytest.mark.parametrize("name, form, canonical", FORMS_1D, ids=[f[0] for f in FORMS_1D])
def test_conv1d_takes_tf_nn_conv1d_forms(name, form, canonical, data_format):
    check_layer(nn.Conv1d, reference.conv1d, data_format, form(data_format), canonical, x_of(data_format, (11,)))


def test_the_reviewers_reproducer_matches_tf_nn_conv2d_and_conv1d():
    """The forms of the defect report, frozen, against tf.nn itself with the very same arguments."""
    x = x_of("NHWC", (8, 8))
    for kwargs, tf_kwargs in [
        (dict(padding=[[0, 0], [1, 1], [1, 1], [0, 0]]), dict(strides=1, padding=[[0, 0], [1, 1], [1, 1], [0, 0]])),
        (dict(stride=[1, 2, 2, 1]), dict(strides=[1, 2, 2, 1], padding="VALID")),
        (dict(stride=[2]), dict(strides=[2], padding="VALID")),
        (dict(dilation=[1, 2, 2, 1]), dict(strides=1, padding="VALID", dilations=[1, 2, 2, 1])),
    ]:
        layer = nn.Conv2d(4, 6, 3, seed=1, **kwargs)
        layer.freeze()
        assert_allclose(layer(x), tf.nn.conv2d(x, layer.w, **tf_kwargs) + layer.b, rtol=2e-4, atol=2e-4)
    x = x_of("NWC", (10,))
    for kwargs, tf_kwargs in [
        (dict(stride=[1, 2, 1]), dict(stride=[1, 2, 1], padding="VALID")),
        (dict(dilation=[1, 2, 1]), dict(stride=1, padding="VALID", dilations=[1, 2, 1])),
        (dict(stride=[2]), dict(stride=[2], padding="VALID")),
    ]:
        layer = nn.Conv1d(4, 6, 3, seed=1, **kwargs)
        layer.freeze()
        assert_allclose(layer(x), tf.nn.conv1d(x, layer.w, **tf_kwargs) + layer.b, rtol=2e-4, atol=2e-4)


def test_a_numpy_stride_saves_and_loads(tmp_path):
    """tf.nn takes a NumPy array for strides; the layer keeps it in its config as a list."""
    x = x_of("NHWC", (8, 8))
    inputs = keras.Input((8, 8, 4))
    layer = nn.Conv2d(4, 6, 3, stride=np.array([1, 2, 2, 1]), dilation=np.array([1]), seed=1)
    model = keras.Model(inputs, layer(inputs))
    layer.freeze()
    assert layer.get_config()["stride"] == [1, 2, 2, 1]
    model.save(tmp_path / "m.keras")
    np.testing.assert_array_equal(keras.models.load_model(tmp_path / "m.keras")(x), model(x))


@pytest.mark.parametrize("data_format", FORMATS_2D)
def test_ops_conv2d_and_conv1d_take_the_same_forms(data_format, rng):
    x = x_of(data_format, (9, 8))
    w_mu, w_rho = gaussian_params(rng, [3, 3, 4, 6])
    b_mu, b_rho = gaussian_params(rng, [6])
    params = [w_mu, w_rho, seed_of(rng), b_mu, b_rho, seed_of(rng)]
    for engine in ("fused", "auto"):
        got = ops.conv2d(
            x,
            *params,
            stride=full_2d(data_format, 2, 1),
            padding=full_2d(data_format, [1, 0], [2, 2], outer=[0, 0]),
            dilation=full_2d(data_format, 1, 2),
            data_format=data_format,
            engine=engine,
        )
        want = ops.conv2d(
            x, *params, stride=[2, 1], padding=[[1, 0], [2, 2]], dilation=[1, 2], data_format=data_format, engine=engine
        )
        assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    fmt_1d = "NWC" if data_format == "NHWC" else "NCW"
    x = x_of(fmt_1d, (11,))
    w_mu, w_rho = gaussian_params(rng, [3, 4, 6])
    params = [w_mu, w_rho, seed_of(rng), b_mu, b_rho, seed_of(rng)]
    got = ops.conv1d(x, *params, stride=full_1d(fmt_1d, 2), dilation=[2], data_format=fmt_1d)
    want = ops.conv1d(x, *params, stride=2, dilation=2, data_format=fmt_1d)
    assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    got = reference.conv1d(x, *params, stride=[2], dilation=full_1d(fmt_1d, 2), data_format=fmt_1d)
    assert_allclose(got, want, rtol=2e-4, atol=2e-4)


REJECTED_2D = [
    # A stride or dilation other than 1 at the batch or channel position.
    ("stride", dict(stride=[2, 2, 2, 1]), "NHWC", "batch and channel"),
    ("stride", dict(stride=[1, 2, 2, 2]), "NHWC", "batch and channel"),
    ("stride", dict(stride=[1, 2, 2, 1]), "NCHW", "batch and channel"),  # the NHWC form under NCHW
    ("dilation", dict(dilation=[2, 1, 1, 1]), "NHWC", "batch and channel"),
    ("dilation", dict(dilation=[1, 1, 2, 2]), "NHWC", "batch and channel"),  # the NCHW form under NHWC
    # Wrong lengths, or non-positive entries.
    ("stride", dict(stride=[1, 2, 2]), "NHWC", "1, 2 or 4"),
    ("stride", dict(stride=[1, 2, 2, 1, 1]), "NCHW", "1, 2 or 4"),
    ("stride", dict(stride=[]), "NHWC", "1, 2 or 4"),
    ("stride", dict(stride=[1, 0, 2, 1]), "NHWC", "positive"),
    ("dilation", dict(dilation=[1, 2, 2]), "NCHW", "1, 2 or 4"),
    # Explicit padding: [0, 0] at batch and channel, 4 pairs of non-negative ints.
    ("padding", dict(padding=[[1, 0], [1, 1], [1, 1], [0, 0]]), "NHWC", "batch and channel"),
    ("padding", dict(padding=[[0, 0], [1, 1], [1, 1], [0, 1]]), "NHWC", "batch and channel"),
    ("padding", dict(padding=[[0, 0], [0, 0], [1, 1], [1, 1]]), "NHWC", "batch and channel"),
    ("padding", dict(padding=[[0, 0], [1, 1], [1, 1], [0, 0]]), "NCHW", "batch and channel"),
    ("padding", dict(padding=[[0, 0], [1, 1], [1, 1]]), "NHWC", r"\[\[0, 0\], \[top, bottom\]"),
    ("padding", dict(padding=[[0, 0], [1, 1], [1, 1], [0, 0], [0, 0]]), "NHWC", "non-negative"),
    ("padding", dict(padding=[[0, 0], [0, 0], [-1, 1], [1, 1]]), "NCHW", "non-negative"),
    ("padding", dict(padding=[[0, 0], [1], [1, 1], [0, 0]]), "NHWC", "non-negative"),
    ("padding", dict(padding="EXPLICIT"), "NHWC", "VALID"),
]

REJECTED_1D = [
    ("stride", dict(stride=[2, 1]), "NWC", "1 or 3"),  # tf.nn.conv1d takes no 2-element list
    ("stride", dict(stride=[1, 2, 1, 1]), "NCW", "1 or 3"),
    ("stride", dict(stride=[2, 2, 1]), "NWC", "batch and channel"),
    ("stride", dict(stride=[1, 2, 2]), "NWC", "batch and channel"),
    ("stride", dict(stride=[1, 2, 1]), "NCW", "batch and channel"),  # the NWC form under NCW
    ("dilation", dict(dilation=[2, 1, 1]), "NWC", "batch and channel"),
    ("dilation", dict(dilation=[1, 2, 1]), "NCW", "batch and channel"),
    ("dilation", dict(dilation=[0]), "NWC", "positive"),
    ("padding", dict(padding="causal"), "NWC", r"an int or \[left, right\], got 'causal'"),  # the 1-D forms only
]


@pytest.mark.parametrize("name, kwargs, data_format, detail", REJECTED_2D)
def test_conv2d_rejects_what_tf_nn_conv2d_rejects(name, kwargs, data_format, detail):
    with pytest.raises(ValueError, match=rf"^{name} must .*{detail}") as layer_error:
        nn.Conv2d(4, 6, 3, data_format=data_format, **kwargs)
    assert repr(next(iter(kwargs.values()))) in str(layer_error.value), "the message shows the value"
    x = x_of(data_format, (6, 6))
    w_mu, w_rho = tf.zeros([3, 3, 4, 6]), tf.zeros([3, 3, 4, 6])
    with pytest.raises(ValueError, match=rf"^{name} must .*{detail}"):
        ops.conv2d(x, w_mu, w_rho, tf.constant([0, 0]), data_format=data_format, **kwargs)


@pytest.mark.parametrize("name, kwargs, data_format, detail", REJECTED_1D)
def test_conv1d_rejects_what_tf_nn_conv1d_rejects(name, kwargs, data_format, detail):
    with pytest.raises(ValueError, match=rf"^{name} must .*{detail}"):
        nn.Conv1d(4, 6, 3, data_format=data_format, **kwargs)
    x = x_of(data_format, (8,))
    w_mu, w_rho = tf.zeros([3, 4, 6]), tf.zeros([3, 4, 6])
    with pytest.raises(ValueError, match=rf"^{name} must .*{detail}"):
        ops.conv1d(x, w_mu, w_rho, tf.constant([0, 0]), data_format=data_format, **kwargs)


@pytest.mark.parametrize(
    "data_format, message", [("NHWC", r"\[1, h, w, 1\] for NHWC"), ("NCHW", r"\[1, 1, h, w\] for NCHW")]
)
def test_messages_show_the_full_form_of_the_data_format(data_format, message):
    with pytest.raises(ValueError, match=message):
        nn.Conv2d(4, 6, 3, data_format=data_format, stride=[1, 2, 2])
    explicit = "NHWC" if data_format == "NHWC" else "NCHW"
    with pytest.raises(ValueError, match=rf"for {explicit}"):
        nn.Conv2d(4, 6, 3, data_format=data_format, padding=[[1, 1]] * 4)
