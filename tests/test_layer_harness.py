"""Every layer through one harness (as Keras' ``run_layer_test``): build and call, config round trip,
``.keras`` save and load, a training step, freeze/unfreeze (a sample or the posterior means), mixed
precision, variable paths and initial seeds. Only the public API is used."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_allclose
from fusedbnn import BayesianModel, GaussianDistribution, nn, reference


def ids(shape, rows):
    return np.random.default_rng(0).integers(0, rows, shape).astype(np.int32)


def floats(shape):
    return np.random.default_rng(1).normal(size=shape).astype(np.float32)


def gates(layer, prefix):
    return tf.concat([getattr(layer, prefix + gate) for gate in "fico"], axis=-1)


# name: (make(seed), input, [(frozen value, distribution whose mu it takes with use_mean)])
LAYERS = {
    "Linear": (
        lambda seed=None, **kw: nn.Linear(6, 4, seed=seed, **kw),
        floats((3, 6)),
        lambda m: [(m.w, m.weights_distribution), (m.b, m.bias_distribution)],
    ),
    "Conv1d": (
        lambda seed=None, **kw: nn.Conv1d(3, 4, 3, padding=1, seed=seed, **kw),
        floats((2, 9, 3)),
        lambda m: [(m.w, m.weights_distribution), (m.b, m.bias_distribution)],
    ),
    "Conv2d": (
        lambda seed=None, **kw: nn.Conv2d(3, 4, 3, padding=1, seed=seed, **kw),
        floats((2, 7, 6, 3)),
        lambda m: [(m.w, m.weights_distribution), (m.b, m.bias_distribution)],
    ),
    "Embedding": (
        lambda seed=None, **kw: nn.Embedding(11, 5, seed=seed, **kw),
        ids((3, 4), 11),
        lambda m: [(m.w, m.weights_distribution)],
    ),
    "LSTM": (
        lambda seed=None, **kw: nn.LSTM(11, 4, 5, 3, seed=seed, **kw),
        ids((2, 6), 11),
        lambda m: [
            (m.embedding.w, m.embedding.weights_distribution),
            (gates(m, "w"), m.gate_weights_distribution),
            (gates(m, "b"), m.gate_bias_distribution),
            (m.wv, m.output_weights_distribution),
            (m.bv, m.output_bias_distribution),
        ],
    ),
    "SequenceLSTM": (
        lambda seed=None, **kw: nn.SequenceLSTM(5, return_sequences=True, seed=seed, **kw),
        floats((2, 6, 3)),
        lambda m: [(m.w, m.weights_distribution), (m.b, m.bias_distribution)],
    ),
}


def main_output(outputs):
    return outputs[0] if isinstance(outputs, tuple) else outputs


def as_model(layer, x):
    inputs = keras.Input(x.shape[1:], dtype=x.dtype)
    return BayesianModel(inputs, main_output(layer(inputs)))


@pytest.fixture(params=sorted(LAYERS))
def case(request):
    return LAYERS[request.param]


def test_calls_sample_afresh_and_freeze_fixes_the_last_sample(case):
    make, x, frozen_pairs = case
    layer = make(seed=3)
    first, second = main_output(layer(x)).numpy(), main_output(layer(x)).numpy()
    assert not np.allclose(first, second)
    kl_last, num_params = layer.kl_cost()
    assert num_params == sum(dist.num_params for _, dist in frozen_pairs(layer))
    layer.freeze()
    assert layer.frozen
    np.testing.assert_allclose(main_output(layer(x)), second, rtol=1e-5, atol=1e-5)
    assert_allclose(layer.kl_cost()[0], kl_last, rtol=1e-4, atol=1e-2)
    layer.unfreeze()
    assert not layer.frozen and not np.allclose(main_output(layer(x)), second)


def test_analytic_kl_cost_is_the_closed_form_over_every_parameter(case):
    """kl_cost(analytic=True): the reference closed-form KL summed over every distribution (the
    LSTM's embedding included), independent of the sample and of freezing; gradients reach mu and rho."""
    make, x, _ = case
    layer = make(seed=3)
    layer(x)
    distributions = {id(v): v for v in _distributions(layer)}.values()
    expected = sum(float(reference.gaussian_kl_analytic(d.mu, d.rho, d.mu_prior, d.std_prior)) for d in distributions)
    with tf.GradientTape() as tape:
        kl, num_params = layer.kl_cost(analytic=True)
    assert num_params == layer.kl_cost()[1] == sum(d.num_params for d in distributions)
    assert_allclose(kl, expected, rtol=1e-5)
    gradients = tape.gradient(kl, layer.trainable_weights)
    assert all(g is not None for g in gradients)
    layer(x)
    layer.freeze()
    assert_allclose(tf.function(lambda: layer.kl_cost(analytic=True)[0])(), expected, rtol=1e-5)


def _distributions(layer):
    """Every GaussianDistribution of a layer and of the layers inside it."""
    return [d for d in layer._flatten_layers() if isinstance(d, GaussianDistribution)]


def test_freeze_with_use_mean_fixes_the_posterior_means(case):
    make, x, frozen_pairs = case
    layer = make(seed=4)
    layer(x)
    layer.freeze(use_mean=True)
    for value, dist in frozen_pairs(layer):
        np.testing.assert_array_equal(value, dist.mu)
    np.testing.assert_array_equal(main_output(layer(x)), main_output(layer(x)))
    layer.frozen = False  # illia's modules set the flag directly
    assert not layer.frozen and not np.allclose(main_output(layer(x)), main_output(layer(x)))


def test_a_training_step_reaches_every_trainable_variable(case):
    make, x, _ = case
    layer = make(seed=5)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            y = main_output(layer(x))
            kl, n = layer.kl_cost()
            loss = tf.reduce_sum(tf.square(y)) + kl / n
        return tape.gradient(loss, layer.trainable_variables)

    grads = step()
    assert len(grads) == len(layer.trainable_variables) > 0
    for g, v in zip(grads, layer.trainable_variables):
        assert g is not None, v.path
        assert np.any(tf.convert_to_tensor(g).numpy() != 0), v.path


def test_config_round_trip_and_keras_save_load(case, tmp_path):
    make, x, _ = case
    layer = make(seed=6)
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config
    model = as_model(layer, x)
    model.predict(x, verbose=0)
    layer.freeze()
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)
    for original, restored in zip(model.weights, loaded.weights):
        assert original.path == restored.path
        np.testing.assert_array_equal(original.numpy(), restored.numpy(), err_msg=original.path)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(case, policy):
    make, x, _ = case
    keras.mixed_precision.set_global_policy(policy)
    try:
        layer = make(seed=7)
        with tf.GradientTape() as tape:
            y = main_output(layer(x))
            loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2) + layer.kl_cost()[0]
        grads = tape.gradient(loss, layer.trainable_variables)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert y.dtype == keras.mixed_precision.Policy(policy).compute_dtype
    assert all(v.dtype == "float32" for v in layer.weights if v.dtype.startswith("float"))
    assert all(g is not None for g in grads)


@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16"])
def test_other_dtypes_keep_float32_variables_and_freeze(case, dtype):
    # A layer given dtype= computes in float32 like under a mixed policy (docs/keras.md) and returns
    # that dtype, frozen too: the frozen values were once created in the layer's dtype, and the
    # frozen product then mixed float32 and float64.
    make, x, _ = case
    layer, twin = make(seed=7, dtype=dtype), make(seed=7)
    inputs = tf.cast(x, dtype) if x.dtype.kind == "f" else x
    for frozen in (False, True):
        if frozen:
            layer.freeze()
            twin.freeze()
        y, expected = main_output(layer(inputs)), main_output(twin(x))
        assert y.dtype == dtype
        assert_allclose(tf.cast(y, tf.float32), expected, rtol=1e-2, atol=1e-2)
    assert all(v.dtype == "float32" for v in layer.weights if v.dtype.startswith("float"))


def test_mixed_float16_fit_trains():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(256, 3)).astype(np.float32)
        y = x @ np.float32([[1.0], [-2.0], [0.5]])
        model = keras.Sequential([keras.Input((3,)), nn.Linear(3, 1, seed=0)])
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
        history = model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert history.history["loss"][-1] < 0.2 * history.history["loss"][0]


def test_variable_paths_are_unique_in_a_model_with_two_layers_of_each_kind(tmp_path):
    layers = [make() for make, _, _ in LAYERS.values() for _ in range(2)]
    paths = [v.path for layer in layers for v in layer.weights]
    assert len(paths) == len(set(paths))
    assert f"{layers[0].name}/weights/mu" in paths
    inputs = keras.Input((6,))
    model = keras.Model(inputs, nn.Linear(4, 2)(nn.Linear(6, 4)(inputs)))
    model.save_weights(tmp_path / "m.weights.h5")
    model.load_weights(tmp_path / "m.weights.h5")
    model.save(tmp_path / "legacy.h5")  # legacy HDF5: fails on duplicate variable names


def test_sequence_lstm_on_float_features():
    x = floats((2, 6, 3))
    layer = nn.SequenceLSTM(5, return_state=True, seed=1)
    h0, c0 = floats((2, 5)), floats((2, 5))
    last, h, c = layer(x, initial_state=[h0, c0])
    assert last.shape == h.shape == c.shape == (2, 5)
    layer.freeze()
    sequence = nn.SequenceLSTM(5, return_sequences=True, name="sequence")
    sequence(x)
    sequence.set_weights(layer.get_weights())
    steps = sequence(x, initial_state=[h0, c0])
    assert steps.shape == (2, 6, 5)
    assert_allclose(steps[:, -1], layer(x, initial_state=[h0, c0])[0], rtol=1e-6, atol=1e-6)
    masked = keras.layers.Masking()(keras.Input((6, 3)))
    with pytest.raises(ValueError, match="does not support masking"):
        nn.SequenceLSTM(5)(masked)


def initial_draws(layer):
    """Each distribution's initial mu and rho noise, standardised (they start at N(init, 0.1^2))."""
    dists = [d for d in layer._flatten_layers() if isinstance(d, GaussianDistribution)]
    return {
        (d.name, part): ((getattr(d, part).numpy() - init) / 0.1).ravel()[:6]
        for d in dists
        for part, init in (("mu", d.mu_init), ("rho", d.rho_init))
    }


def test_initial_values_of_parameters_and_neighbouring_seeds_never_share_draws():
    for kind, (make, _, _) in LAYERS.items():
        draws = {(seed, *key): value for seed in (1, 2, 3) for key, value in initial_draws(make(seed=seed)).items()}
        for (a, da), (b, db) in itertools.combinations(draws.items(), 2):
            n = min(len(da), len(db))
            assert not np.allclose(da[:n], db[:n], atol=1e-6), f"{kind}: {a} and {b} start from the same draws"
    # The same seed reproduces the same values.
    first, again = initial_draws(nn.Linear(6, 4, seed=1)), initial_draws(nn.Linear(6, 4, seed=1))
    assert all(np.array_equal(first[key], again[key]) for key in first)


def test_conv_padding_accepts_an_int_like_pytorch():
    x = floats((2, 7, 6, 3))
    a, b = nn.Conv2d(3, 4, 3, padding=1, seed=1), nn.Conv2d(3, 4, 3, padding=[[1, 1], [1, 1]], seed=1)
    for layer in (a, b):
        layer.freeze(use_mean=True)
    assert a(x).shape == (2, 7, 6, 4)
    assert_allclose(a(x), b(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="padding"):
        nn.Conv2d(3, 4, 3, padding=-1)


def test_lstm_accepts_ids_with_or_without_a_trailing_axis():
    layer = nn.LSTM(11, 4, 5, 3, seed=2)
    layer.freeze()
    x = ids((2, 6), 11)
    assert_allclose(layer(x)[0], layer(x[..., None])[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="token ids of shape"):
        layer(ids((2, 6, 2), 11))
