"""fusedbnn.nn.Conv1d / Conv2d: sampling, freeze/unfreeze, kl_cost, validation and config round trip."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_allclose
from fusedbnn import nn, reference
from fusedbnn.distributions import GaussianDistribution

LAYERS = [
    (
        nn.Conv2d,
        dict(
            input_channels=4,
            output_channels=6,
            kernel_size=[3, 2],
            stride=[2, 1],
            padding="SAME",
            dilation=[1, 2],
            groups=2,
            data_format="NCHW",
        ),
        [2, 4, 7, 9],
    ),
    (nn.Conv2d, dict(input_channels=3, output_channels=5, kernel_size=3, padding=[[1, 0], [2, 1]]), [2, 8, 6, 3]),
    (
        nn.Conv1d,
        dict(input_channels=4, output_channels=4, kernel_size=3, stride=2, dilation=2, groups=4, padding="SAME"),
        [3, 11, 4],
    ),
    (
        nn.Conv1d,
        dict(input_channels=2, output_channels=3, kernel_size=[4], data_format="NCW", use_bias=False),
        [2, 2, 9],
    ),
]


def make(index, seed=3):
    cls, kwargs, x_shape = LAYERS[index]
    x = tf.constant(np.random.default_rng(index).normal(size=x_shape).astype(np.float32))
    return cls(seed=seed, **kwargs), x


def log_normal(x, mu, sigma):
    return -0.5 * math.log(2 * math.pi) - np.log(sigma) - 0.5 * ((x - mu) / sigma) ** 2


@pytest.mark.parametrize("index", range(len(LAYERS)))
def test_sampling_matches_the_reference_at_the_seed_of_the_call(index):
    layer, x = make(index)
    y = layer(x)
    kwargs = {
        k: v for k, v in LAYERS[index][1].items() if k in ("stride", "padding", "dilation", "groups", "data_format")
    }
    fn = reference.conv2d if isinstance(layer, nn.Conv2d) else reference.conv1d
    # The oracle convolves the call's sample (layer.w, layer.b) as a Gaussian of zero width.
    exact = lambda value: (value, tf.fill(tf.shape(value), -np.inf), tf.constant([0, 0]))  # noqa: E731
    bias = [] if layer.b is None else exact(layer.b)
    expected = fn(x, *exact(layer.w), *bias, **kwargs)
    assert y.shape == expected.shape == layer.compute_output_shape(x.shape)
    assert_allclose(y, expected, rtol=2e-4, atol=2e-4)
    assert not np.allclose(y, layer(x)), "each call samples afresh"


@pytest.mark.parametrize("index", range(len(LAYERS)))
def test_freeze_unfreeze_and_kl_cost(index):
    layer, x = make(index)
    step = tf.function(lambda x: layer(x), jit_compile=False)
    step(x)
    kl_sampled, n = layer.kl_cost()
    params = [layer.weights_distribution] + ([layer.bias_distribution] if layer.use_bias else [])
    assert n == sum(int(np.prod(p.shape)) for p in params)
    layer.freeze()
    assert layer.frozen
    frozen_out = step(x).numpy()
    np.testing.assert_array_equal(frozen_out, step(x).numpy())
    # The frozen kernel is the last call's sample, so the KL is unchanged, and equals illia's formula.
    kl_frozen, _ = layer.kl_cost()
    expected = 0.0
    for p, value in zip(params, [layer.w] + ([layer.b] if layer.use_bias else [])):
        w, mu, sigma = value.numpy().astype(np.float64), p.mu.numpy(), p.sigma.numpy().astype(np.float64)
        expected += np.sum(log_normal(w, mu, sigma)) - np.sum(log_normal(w, p.mu_prior, p.std_prior))
    assert float(kl_frozen) == pytest.approx(expected, rel=1e-4, abs=1e-2)
    assert float(kl_frozen) == pytest.approx(float(kl_sampled), rel=1e-4, abs=1e-2)
    layer.unfreeze()
    assert not layer.frozen
    assert not np.allclose(frozen_out, step(x).numpy())


@pytest.mark.parametrize("index", range(len(LAYERS)))
def test_config_round_trip_and_saving(index, tmp_path):
    layer, x = make(index)
    layer(x)
    config = layer.get_config()
    for name in (
        "input_channels",
        "output_channels",
        "kernel_size",
        "stride",
        "padding",
        "dilation",
        "groups",
        "data_format",
        "use_bias",
        "weights_distribution",
        "bias_distribution",
        "seed",
    ):
        assert name in config, name
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    layer.freeze()
    inputs = keras.Input(shape=x.shape[1:])
    model = keras.Model(inputs, layer(inputs))
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert_allclose(loaded(x), model(x))


@pytest.mark.parametrize("index", range(len(LAYERS)))
def test_a_frozen_layer_traced_for_any_shape_gives_an_empty_batch_its_output_shape(index):
    """TensorFlow's graph convolution returns an empty batch of unknown size in the input's shape;
    the frozen layers passed it on ((0, 5, 5, 2) for (0, 3, 3, 3); the next layer then failed)."""
    layer, x = make(index)
    expected = layer(x).shape[1:]
    layer.freeze()
    traced = tf.function(layer, input_signature=[tf.TensorSpec([None] * len(x.shape), tf.float32)])
    assert traced(x[:0]).shape == (0, *expected)
    assert_allclose(traced(x), layer(x), rtol=1e-5, atol=1e-6)


def test_data_format_none_means_channels_last():
    assert nn.Conv2d(3, 4, 3, data_format=None).data_format == "NHWC"
    assert nn.Conv1d(3, 4, 3, data_format=None).data_format == "NWC"


def test_kernel_has_tensorflow_layout():
    layer = nn.Conv2d(6, 4, [3, 2], groups=2)
    assert layer.weights_distribution.shape == (3, 2, 3, 4)
    assert nn.Conv1d(6, 9, 5, groups=3).weights_distribution.shape == (5, 2, 9)


def test_given_distributions_are_used_and_checked():
    wd, bd = GaussianDistribution((2, 2, 3, 5), seed=1), GaussianDistribution((5,), seed=2)
    layer = nn.Conv2d(3, 5, 2, weights_distribution=wd, bias_distribution=bd)
    assert layer.weights_distribution is wd and layer.bias_distribution is bd
    with pytest.raises(ValueError, match="weights_distribution"):
        nn.Conv2d(3, 5, 3, weights_distribution=wd)


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (nn.Conv2d, dict(input_channels=0, output_channels=4, kernel_size=3), "input_channels"),
        (nn.Conv2d, dict(input_channels=4, output_channels=-1, kernel_size=3), "output_channels"),
        (nn.Conv2d, dict(input_channels=4, output_channels=4, kernel_size=0), "kernel_size"),
        (nn.Conv2d, dict(input_channels=4, output_channels=4, kernel_size=[3, 3, 3]), "kernel_size"),
        (nn.Conv2d, dict(input_channels=4, output_channels=6, kernel_size=3, groups=4), "groups"),
        (nn.Conv2d, dict(input_channels=6, output_channels=4, kernel_size=3, groups=3), "groups"),
        (nn.Conv2d, dict(input_channels=4, output_channels=4, kernel_size=3, groups=0), "groups"),
        (nn.Conv2d, dict(input_channels=4, output_channels=4, kernel_size=3, stride=[1, 0]), "stride"),
        (nn.Conv2d, dict(input_channels=4, output_channels=4, kernel_size=3, dilation=-1), "dilation"),
        (nn.Conv2d, dict(input_channels=4, output_channels=4, kernel_size=3, padding="full"), "padding"),
        (nn.Conv2d, dict(input_channels=4, output_channels=4, kernel_size=3, data_format="NWC"), "data_format"),
        (nn.Conv1d, dict(input_channels=4, output_channels=4, kernel_size=[3, 3]), "kernel_size"),
        (nn.Conv1d, dict(input_channels=4, output_channels=4, kernel_size=3, padding=[1, 2, 3]), "padding"),
        (nn.Conv1d, dict(input_channels=4, output_channels=4, kernel_size=3, data_format="NHWC"), "data_format"),
    ],
)
def test_construction_validates_naming_the_argument(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_calls_with_the_wrong_rank_or_channels_raise():
    layer = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match=f"layer '{layer.name}'.*expected ndim=4"):
        layer(tf.zeros([2, 8, 3]))
    with pytest.raises(ValueError, match="expected axis -1 of input shape to have value 3"):
        layer(tf.zeros([2, 8, 8, 5]))
    with pytest.raises(ValueError, match="expected axis 1 of input shape to have value 3"):
        nn.Conv1d(3, 4, 3, data_format="NCW")(tf.zeros([2, 8, 3]))
