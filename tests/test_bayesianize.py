"""fusedbnn.bayesianize: trained Keras models turned Bayesian, with MOPED (issue 17)."""

import copy
import importlib.util
import math
import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_allclose
from fusedbnn import BayesianModel, GaussianDistribution, bayesianize, nn, ops
from fusedbnn.convert import MIN_SIGMA, PerWeightPriorGaussian
from fusedbnn.losses import ELBOLoss, bayesian_modules

TINY_RHO = -40.0  # softplus(-40) = 4e-18: every sample is the posterior mean in float32


def randomize(model, seed=0):
    """Trained-looking weights: random kernels and biases, BatchNormalization statistics off 0 / 1."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        values = rng.normal(0.0, 0.3, variable.shape)
        variable.assign(np.abs(values) + 0.5 if "variance" in variable.path else values)
    return model


def sequential_model():
    """Conv2D (SAME, with an activation), BatchNormalization, a strided grouped Conv2D, Dropout, a
    nested Sequential of Dense layers, and a Dense with softmax."""
    head = keras.Sequential(
        [keras.Input((54,)), keras.layers.Dense(12, activation="tanh", name="head_dense")], name="head"
    )
    return randomize(
        keras.Sequential(
            [
                keras.Input((8, 8, 2)),
                keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_same"),
                keras.layers.BatchNormalization(name="bn"),
                keras.layers.Conv2D(6, 3, strides=2, groups=2, name="conv_grouped"),
                keras.layers.Flatten(),
                keras.layers.Dropout(0.5, name="dropout"),
                head,
                keras.layers.Dense(5, activation="softmax", name="out"),
            ],
            name="sequential_cnn",
        )
    )


def functional_model():
    """Three inputs: images through Conv2D (SAME) and BatchNormalization, sequences through a causal
    dilated Conv1D and an LSTM (its states too), token ids through an Embedding; a nested functional
    model, Dropout, and a Dense output."""
    image = keras.Input((7, 7, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv2d")(image)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten()(x)
    sequence = keras.Input((9, 4), name="sequence")
    s = keras.layers.Conv1D(5, 3, padding="causal", dilation_rate=2, activation="relu", name="conv1d")(sequence)
    s, h, c = keras.layers.LSTM(6, return_sequences=True, return_state=True, name="lstm")(s)
    s = keras.layers.GlobalAveragePooling1D()(s)
    tokens = keras.Input((5,), dtype="int32", name="tokens")
    e = keras.layers.Flatten()(keras.layers.Embedding(20, 3, name="embedding")(tokens))
    inner_input = keras.Input((196 + 15,))
    inner = keras.Model(
        inner_input, keras.layers.Dense(10, activation="relu", name="inner_dense")(inner_input), name="inner"
    )
    z = inner(keras.layers.Concatenate()([x, e]))
    z = keras.layers.Dropout(0.5, name="dropout")(keras.layers.Concatenate()([z, s, h, c]))
    return randomize(keras.Model([image, sequence, tokens], keras.layers.Dense(3, name="out")(z), name="multi"))


def sequential_inputs():
    return np.random.default_rng(1).normal(size=(4, 8, 8, 2)).astype(np.float32)


def functional_inputs():
    rng = np.random.default_rng(2)
    return [
        rng.normal(size=(4, 7, 7, 3)).astype(np.float32),
        rng.normal(size=(4, 9, 4)).astype(np.float32),
        rng.integers(0, 20, (4, 5)).astype(np.int32),
    ]


MODELS = {"sequential": (sequential_model, sequential_inputs), "functional": (functional_model, functional_inputs)}
CONVERTED = {
    "sequential": {"conv_same": nn.Conv2d, "conv_grouped": nn.Conv2d, "head_dense": nn.Linear, "out": nn.Linear},
    "functional": {
        "conv2d": nn.Conv2d,
        "conv1d": nn.Conv1d,
        "lstm": nn.SequenceLSTM,
        "embedding": nn.Embedding,
        "inner_dense": nn.Linear,
        "out": nn.Linear,
    },
}


def all_layers(model):
    """Every layer of a model, nested models' included, by name."""
    found = {}
    for layer in model.layers:
        found[layer.name] = layer
        if isinstance(layer, keras.Model):
            found.update(all_layers(layer))
    return found


def freeze_at_means(model):
    for module in bayesian_modules(model):
        module.freeze(use_mean=True)


@pytest.fixture(params=sorted(MODELS))
def kind(request):
    return request.param


def test_with_a_tiny_sigma_the_bayesian_model_computes_the_original(kind):
    make, inputs = MODELS[kind]
    model, x = make(), inputs()
    expected = model(x, training=False).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing here is left unconverted
        bayesian = bayesianize(model, rho_init=TINY_RHO)
    layers = all_layers(bayesian)
    assert {name: type(layers[name]) for name in CONVERTED[kind]} == CONVERTED[kind]
    assert {type(m) for m in bayesian_modules(bayesian)} == set(CONVERTED[kind].values())
    assert len(bayesian_modules(bayesian)) == len(CONVERTED[kind])
    assert isinstance(layers["bn"], keras.layers.BatchNormalization) and layers["bn"] is not all_layers(model)["bn"]
    assert isinstance(layers["dropout"], keras.layers.Dropout)
    if kind == "functional":
        assert isinstance(bayesian, BayesianModel)
        assert [t.name for t in bayesian.inputs] == ["image", "sequence", "tokens"]
    assert_allclose(bayesian(x, training=False), expected, rtol=0, atol=1e-5)
    freeze_at_means(bayesian)
    assert_allclose(bayesian(x, training=False), expected, rtol=0, atol=1e-6)


def test_layouts_follow_keras_to_fusedbnn():
    """Dense's kernel is transposed; the LSTM's gate blocks go from i, f, c, o to f, i, c, o."""
    dense, lstm = keras.layers.Dense(3), keras.layers.LSTM(2)
    model = randomize(keras.Sequential([keras.Input((4, 5)), lstm, dense]))
    layers = all_layers(bayesianize(model))
    assert_allclose(layers[dense.name].weights_distribution.mu, tf.transpose(dense.kernel), rtol=0, atol=0)
    i, f, c, o = np.split(np.concatenate([lstm.cell.kernel, lstm.cell.recurrent_kernel]), 4, axis=-1)
    assert_allclose(layers[lstm.name].weights_distribution.mu, np.concatenate([f, i, c, o], -1), rtol=0, atol=0)
    bi, bf, bc, bo = np.split(lstm.cell.bias.numpy(), 4)
    assert_allclose(layers[lstm.name].bias_distribution.mu, np.concatenate([bf, bi, bc, bo]), rtol=0, atol=0)


def test_shared_layers_and_lstm_initial_states_convert():
    """A Dense (with its activation) called twice stays one layer; an LSTM's initial_state is passed
    on; a keras.ops operation in the graph (``h0 + 1.0``) is kept."""
    a, b, h0 = keras.Input((4,)), keras.Input((4,)), keras.Input((3,))
    shared = keras.layers.Dense(3, activation="sigmoid", name="shared")
    sequence = keras.layers.Reshape((2, 3))(keras.layers.Concatenate()([shared(a), shared(b)]))
    outputs = keras.layers.LSTM(3, name="lstm")(sequence, initial_state=[h0 + 1.0, shared(a)])
    model = randomize(keras.Model([a, b, h0], outputs))
    x = [np.random.default_rng(i).normal(size=(5, n)).astype(np.float32) for i, n in enumerate((4, 4, 3))]
    bayesian = bayesianize(model, rho_init=TINY_RHO)
    assert {m.name for m in bayesian_modules(bayesian)} == {"shared", "lstm"}
    assert_allclose(bayesian(x), model(x), rtol=0, atol=1e-5)


@pytest.mark.skipif(
    not ops._ONEDNN,
    reason="TensorFlow's own CPU convolutions (without oneDNN) refuse channels_first, so the "
    "original Keras model cannot run; the conversion is checked where oneDNN runs it",
)
def test_channels_first_convolutions_convert():
    model = randomize(
        keras.Sequential(
            [
                keras.Input((3, 9, 7)),
                keras.layers.Conv2D(4, (3, 2), strides=(2, 1), padding="same", data_format="channels_first"),
                keras.layers.Reshape((4, 35)),
                keras.layers.Conv1D(5, 3, dilation_rate=2, padding="causal", data_format="channels_first"),
            ]
        )
    )
    x = np.random.default_rng(3).normal(size=(2, 3, 9, 7)).astype(np.float32)
    bayesian = bayesianize(model, rho_init=TINY_RHO)
    assert [m.data_format for m in bayesian_modules(bayesian)] == ["NCHW", "NCW"]
    assert_allclose(bayesian(x), model(x), rtol=0, atol=1e-5)


def trained_values(model):
    """Each converted parameter's trained value in fusedbnn's layout, by (layer name, parameter)."""
    values = {}
    for name, layer in all_layers(model).items():
        if isinstance(layer, keras.layers.Dense):
            values[name, "weights"], values[name, "bias"] = layer.kernel.numpy().T, layer.bias.numpy()
        elif isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)):
            values[name, "weights"], values[name, "bias"] = layer.kernel.numpy(), layer.bias.numpy()
        elif isinstance(layer, keras.layers.Embedding):
            values[name, "weights"] = layer.embeddings.numpy()
    return values


def distributions(model):
    found = {}
    for module in bayesian_modules(model):
        found[module.name, "weights"] = module.weights_distribution
        if getattr(module, "bias_distribution", None) is not None:
            found[module.name, "bias"] = module.bias_distribution
    return found


def test_moped_sigma_is_delta_times_the_weight_and_the_prior_is_centred_on_it():
    model = functional_model()
    model.get_layer("out").kernel[0, 0].assign(0.0)  # a weight of exactly 0 gets the floor
    bayesian = bayesianize(model, moped_delta=0.05, std_prior=0.2)
    dists, trained = distributions(bayesian), trained_values(model)
    assert set(trained) <= set(dists)
    for key, value in trained.items():
        dist = dists[key]
        assert isinstance(dist, PerWeightPriorGaussian) and dist.std_prior == 0.2, key
        assert_allclose(dist.mu, value, rtol=0, atol=0, err_msg=str(key))
        assert_allclose(dist.prior_mean, value, rtol=0, atol=0, err_msg=str(key))
        assert_allclose(dist.sigma, np.maximum(0.05 * np.abs(value), MIN_SIGMA), rtol=1e-5, atol=0, err_msg=str(key))
    assert np.isfinite(dists["out", "weights"].rho.numpy()).all()
    assert math.isclose(dists["out", "weights"].sigma[0, 0], MIN_SIGMA, rel_tol=1e-5)
    # The LSTM too, in its own layout.
    assert_allclose(dists["lstm", "weights"].sigma, 0.05 * np.abs(dists["lstm", "weights"].mu), rtol=1e-5, atol=0)
    assert_allclose(dists["lstm", "bias"].prior_mean, dists["lstm", "bias"].mu, rtol=0, atol=0)


def test_prior_options_without_moped_or_with_a_given_mean():
    model = sequential_model()
    for dist in distributions(bayesianize(model, rho_init=-5.0)).values():
        assert type(dist) is GaussianDistribution and dist.mu_prior == 0.0
        assert_allclose(dist.rho, np.full(dist.shape, -5.0), rtol=0, atol=0)
    for dist in distributions(bayesianize(model, moped_delta=0.1, mu_prior=0.25)).values():
        assert type(dist) is GaussianDistribution and dist.mu_prior == 0.25
        assert_allclose(dist.sigma, 0.1 * np.abs(dist.mu), rtol=1e-5, atol=MIN_SIGMA)


def log_normal(x, mean, std):
    return -0.5 * np.log(2 * np.pi) - np.log(std) - 0.5 * ((x - mean) / std) ** 2


def test_the_per_weight_prior_enters_the_kl():
    """kl_cost of a MOPED layer is sum log N(w; mu, sigma) - sum log N(w; trained, std_prior) at its
    sample w, sampled or frozen; with a scalar prior at 0 it would differ by far more than the tolerance."""
    dense = keras.layers.Dense(5)
    model = randomize(keras.Sequential([keras.Input((7,)), dense]))
    layer = bayesianize(model, moped_delta=0.3, std_prior=0.05).get_layer(dense.name)
    dist_w, dist_b = layer.weights_distribution, layer.bias_distribution
    for dist in (dist_w, dist_b):
        dist.mu.assign_add(0.02 * np.ones(dist.shape))  # posterior mean off the prior mean

    def expected_kl():
        total = 0.0
        for dist, w in ((dist_w, layer.w.numpy()), (dist_b, layer.b.numpy())):
            mu, sigma, prior = (v.numpy().astype(np.float64) for v in (dist.mu, dist.sigma, dist.prior_mean))
            total += np.sum(log_normal(w, mu, sigma)) - np.sum(log_normal(w, prior, 0.05))
        return total

    layer(np.ones((2, 7), np.float32))
    kl, num_params = layer.kl_cost()
    assert num_params == 7 * 5 + 5
    assert_allclose(kl, expected_kl(), rtol=1e-4, atol=1e-2)
    layer.freeze()
    assert_allclose(layer.kl_cost()[0], expected_kl(), rtol=1e-4, atol=1e-2)


def test_config_round_trip_and_keras_file(kind, tmp_path):
    make, inputs = MODELS[kind]
    x = inputs()
    bayesian = bayesianize(make(), moped_delta=0.1)
    config = bayesian.get_config()
    rebuilt = bayesian.__class__.from_config(copy.deepcopy(config))  # from_config consumes its argument
    assert rebuilt.get_config() == config
    assert {(k, type(d)) for k, d in distributions(rebuilt).items()} == {
        (k, type(d)) for k, d in distributions(bayesian).items()
    }
    freeze_at_means(bayesian)
    path = str(tmp_path / "bayesian.keras")
    bayesian.save(path)
    loaded = keras.models.load_model(path)
    assert_allclose(loaded(x, training=False), bayesian(x, training=False), rtol=0, atol=0)
    for key, dist in distributions(loaded).items():
        assert_allclose(dist.prior_mean, distributions(bayesian)[key].prior_mean, rtol=0, atol=0, err_msg=str(key))
    paths = [v.path for v in loaded.weights]
    assert len(set(paths)) == len(paths)


def test_fit_with_the_elbo_trains_the_copy_and_leaves_the_original():
    """A functional model becomes a BayesianModel: num_samples > 1 works. (A converted Sequential
    trains in the digits example.)"""
    model, x = functional_model(), functional_inputs()
    before = [w.numpy() for w in model.weights]
    y = np.random.default_rng(4).integers(0, 3, len(x[0]))
    bayesian = bayesianize(model, moped_delta=0.1)
    mu_before = [d.mu.numpy() for d in distributions(bayesian).values()]
    bayesian.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=ELBOLoss(keras.losses.SparseCategoricalCrossentropy(from_logits=True), num_samples=2),
    )
    history = bayesian.fit(x, y, epochs=2, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert all(not np.array_equal(d.mu.numpy(), m) for d, m in zip(distributions(bayesian).values(), mu_before))
    for weight, value in zip(model.weights, before):
        np.testing.assert_array_equal(weight.numpy(), value, err_msg=weight.path)


class CustomDense(keras.layers.Dense):
    """A subclass: its call may differ from Dense's, so it is not converted."""


@keras.saving.register_keras_serializable(package="test_bayesianize")
class Residual(keras.Model):
    """A subclassed model: its connections cannot be rebuilt, so it is copied as it is."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4)

    def call(self, x):
        return x + self.dense(x)


def test_unsupported_layers_are_warned_and_kept():
    tokens = keras.Input((6,), dtype="int32")
    masked = keras.layers.Embedding(10, 4, mask_zero=True, name="masked_embedding")(tokens)
    masked = keras.layers.LSTM(3, return_sequences=True, name="masked_lstm")(masked)
    masked = keras.layers.GlobalAveragePooling1D()(keras.layers.Dense(4, name="masked_dense")(masked))
    plain = keras.layers.Embedding(10, 4, name="embedding")(tokens)
    relu_lstm = keras.layers.LSTM(4, activation="relu", name="relu_lstm")(plain)
    dropout_lstm = keras.layers.LSTM(4, dropout=0.2, name="dropout_lstm")(plain)
    custom = CustomDense(4, name="custom_dense")(relu_lstm)
    residual = Residual(name="residual")(dropout_lstm)
    outputs = keras.layers.Dense(2, name="out")(keras.layers.Concatenate()([masked, custom, residual]))
    model = randomize(keras.Model(tokens, outputs))
    ids = np.random.default_rng(5).integers(1, 10, (3, 6)).astype(np.int32)
    ids[:, -2:] = 0  # padding, masked
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bayesian = bayesianize(model, rho_init=TINY_RHO)
    kept = {
        "masked_embedding": "mask_zero",
        "masked_lstm": "mask",
        "masked_dense": "mask",
        "relu_lstm": "activation='relu'",
        "dropout_lstm": "dropout=0.2",
        "custom_dense": "subclass of Dense",
        "residual": "subclassed model",
    }
    messages = [str(w.message) for w in caught]
    for name, reason in kept.items():
        assert [m for m in messages if f"'{name}'" in m and "kept deterministic" in m and reason in m], name
        assert not getattr(bayesian.get_layer(name), "is_bayesian", False)
    assert len(messages) == len(kept)
    assert {m.name for m in bayesian_modules(bayesian)} == {"embedding", "out"}
    assert_allclose(bayesian(ids), model(ids), rtol=0, atol=1e-5)


def kept_with_warnings(model):
    """The converted model and the names of the layers bayesianize warned it kept."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bayesian = bayesianize(model, rho_init=TINY_RHO)
    kept = {m.split("'")[1] for m in (str(w.message) for w in caught) if "kept deterministic" in m}
    return bayesian, kept


def test_masks_across_nested_models_keep_the_layers_they_reach():
    # Keras marks no mask on a nested model's outputs, nor inside a nested model called on a masked
    # tensor: the Dense layers behind such masks were converted, and the pooling then averaged over
    # the padding (outputs off by 0.01-0.03).
    ids = np.random.default_rng(5).integers(1, 10, (3, 6)).astype(np.int32)
    ids[:, -2:] = 0
    tokens = keras.Input((6,), dtype="int32")
    embed = keras.Sequential([keras.Input((6,), dtype="int32"), keras.layers.Embedding(10, 4, mask_zero=True)])
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Dense(4, name="outer_dense")(embed(tokens)))
    out_of_nested = randomize(keras.Model(tokens, keras.layers.Dense(2, name="after_pooling")(pooled)))
    masked = keras.layers.Embedding(10, 4, mask_zero=True, name="outer_embedding")(tokens)
    head = keras.Sequential(
        [keras.Input((6, 4)), keras.layers.Dense(4, name="inner_dense"), keras.layers.GlobalAveragePooling1D()]
    )
    into_nested = randomize(keras.Model(tokens, keras.layers.Dense(2, name="after_head")(head(masked))))
    for model, masked_dense, converted in (
        (out_of_nested, "outer_dense", "after_pooling"),
        (into_nested, "inner_dense", "after_head"),
    ):
        bayesian, kept = kept_with_warnings(model)
        assert masked_dense in kept and converted not in kept
        assert {m.name for m in bayesian_modules(bayesian)} == {converted}
        assert_allclose(bayesian(ids), model(ids), rtol=0, atol=1e-6)


def test_an_lstm_given_a_mask_argument_is_kept():
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    inputs, mask_input = keras.Input((5, 3)), keras.Input((5,), dtype="bool")
    model = keras.Model([inputs, mask_input], keras.layers.LSTM(2, name="lstm")(inputs, mask=mask_input))
    bayesian, kept = kept_with_warnings(model)  # raised SequenceLSTM's "does not support masking"
    assert kept == {"lstm"}
    assert_allclose(bayesian([x, mask]), model([x, mask]), rtol=0, atol=0)


def test_a_layer_used_inside_and_outside_a_nested_model_stays_one_layer():
    shared = keras.layers.Dense(4, name="shared")
    inner = keras.Sequential([keras.Input((4,)), shared], name="inner")
    first, second = keras.Input((4,)), keras.Input((4,))
    joined = keras.layers.Concatenate()([inner(first), shared(second)])
    model = randomize(keras.Model([first, second], keras.layers.Dense(2, name="head")(joined)))
    bayesian = bayesianize(model, rho_init=TINY_RHO)
    copies = {id(layer) for layer in bayesian._flatten_layers() if layer.name == "shared"}
    assert len(copies) == 1  # two untied copies before: their KL counted twice, and fit split them
    assert len(bayesian.trainable_variables) == len(model.trainable_variables) * 2
    x = [np.ones((2, 4), np.float32), -np.ones((2, 4), np.float32)]
    assert_allclose(bayesian(x), model(x), rtol=0, atol=1e-5)


def test_what_a_conversion_keeps_or_says_it_drops():
    x = np.ones((3, 4), np.float32)
    # A Sequential's input keeps its name, so calls by name still work.
    named = randomize(keras.Sequential([keras.Input((4,), name="features"), keras.layers.Dense(2)]))
    assert_allclose(bayesianize(named, rho_init=TINY_RHO)({"features": x}), named(x), rtol=0, atol=1e-5)
    # An activity regularizer is dropped with a warning; a weightless Lambda is shared silently;
    # a Dense inside TimeDistributed stays deterministic with a warning.
    inputs = keras.Input((5, 4))
    hidden = keras.layers.Lambda(lambda t: 2.0 * t)(inputs)
    hidden = keras.layers.TimeDistributed(keras.layers.Dense(3, name="inner"), name="per_step")(hidden)
    outputs = keras.layers.Dense(2, activity_regularizer="l1", name="regularized")(hidden)
    model = randomize(keras.Model(inputs, outputs))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bayesian = bayesianize(model, rho_init=TINY_RHO)
    messages = [str(w.message) for w in caught if "bayesianize" in str(w.message)]
    assert len(messages) == 2
    assert any("'regularized' (Dense) loses its activity_regularizer" in m for m in messages)
    assert any("'per_step' (TimeDistributed) kept deterministic: it wraps inner" in m for m in messages)
    assert {m.name for m in bayesian_modules(bayesian)} == {"regularized"}
    # A nested functional model made non-trainable stays so.
    nested_inputs = keras.Input((4,))
    frozen = keras.Model(nested_inputs, keras.layers.Dense(3)(nested_inputs), name="frozen_part")
    frozen.trainable = False
    outer_inputs = keras.Input((4,))
    outer = randomize(keras.Model(outer_inputs, keras.layers.Dense(2)(frozen(outer_inputs))))
    assert bayesianize(outer).get_layer("frozen_part").trainable is False


def test_kept_layers_keep_the_state_that_is_not_in_their_weights(tmp_path):
    """Adapted preprocessing layers derive their state from their weights (Normalization's mean) or
    keep it outside any weight (a lookup layer's vocabulary); wrapped layers keep theirs inside the
    wrapper. The copies compute what the originals do, and after a save and a load too."""
    rng = np.random.default_rng(7)
    numbers, words, codes = keras.Input((4,)), keras.Input((3,), dtype="string"), keras.Input((3,), dtype="int64")
    normalization = keras.layers.Normalization(name="normalization")
    normalization.adapt(rng.normal(3.0, 2.0, (50, 4)).astype(np.float32))
    string_lookup, integer_lookup = keras.layers.StringLookup(), keras.layers.IntegerLookup()
    string_lookup.adapt(["a", "b", "c", "d", "a"])
    integer_lookup.adapt(np.array([5, 7, 9, 11]))
    features = [
        keras.layers.Dense(3)(normalization(numbers)),
        keras.layers.Flatten()(keras.layers.Embedding(string_lookup.vocabulary_size(), 2)(string_lookup(words))),
        keras.layers.Flatten()(keras.layers.Embedding(integer_lookup.vocabulary_size(), 2)(integer_lookup(codes))),
        keras.layers.Bidirectional(keras.layers.LSTM(2))(keras.layers.Reshape((2, 2))(numbers)),
    ]
    model = keras.Model([numbers, words, codes], keras.layers.Dense(2)(keras.layers.Concatenate()(features)))
    inputs = [
        tf.constant(rng.normal(3.0, 2.0, (2, 4)), tf.float32),
        tf.constant([["a", "c", "z"], ["d", "b", "a"]]),
        tf.constant([[5, 9, 3], [11, 7, 5]], tf.int64),
    ]
    bayesian = bayesianize(model, rho_init=TINY_RHO)
    assert_allclose(bayesian(inputs), model(inputs), rtol=0, atol=1e-5)
    freeze_at_means(bayesian)
    path = tmp_path / "model.keras"
    bayesian.save(path)
    assert_allclose(keras.models.load_model(path)(inputs), model(inputs), rtol=0, atol=1e-5)


def test_layers_restricts_the_conversion_to_names():
    model = functional_model()
    bayesian = bayesianize(model, layers=["conv1d", "inner"])  # a named model: all inside it
    assert {m.name for m in bayesian_modules(bayesian)} == {"conv1d", "inner_dense"}
    assert isinstance(bayesian.get_layer("out"), keras.layers.Dense)
    with pytest.warns(UserWarning, match="layer 'bn' .*not a layer type that bayesianize converts"):
        bayesianize(model, layers=["bn"])
    with pytest.raises(ValueError, match=r"layers names no layer of model 'multi': \['nope'\]"):
        bayesianize(model, layers=["out", "nope"])


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("estimator", ["flipout", "local_reparameterization"])
def test_estimator_reaches_the_dense_and_conv_layers(kind, estimator):
    make_model, make_inputs = MODELS[kind]
    bayesian = bayesianize(make_model(), estimator=estimator)
    estimators = {m.name: getattr(m, "estimator", None) for m in bayesian_modules(bayesian)}
    for name, layer_class in CONVERTED[kind].items():
        expected = estimator if layer_class in (nn.Linear, nn.Conv1d, nn.Conv2d) else None
        assert estimators[name] == expected, name
    outputs = [bayesian.predict(make_inputs(), verbose=0) for _ in range(2)]
    assert np.all(np.isfinite(outputs)) and not np.allclose(*outputs)


def test_bad_arguments_raise():
    model = sequential_model()
    for kwargs, match in (
        ({"estimator": "flip"}, "estimator must be one of"),
        ({"moped_delta": 0.0}, "moped_delta must be a positive finite number"),
        ({"mu_prior": math.nan}, "mu_prior must be a finite number"),
        ({"std_prior": -1.0}, "std_prior"),
        ({"rho_init": -90.0}, r"rho_init must be a finite float >= -80"),
        ({"rho_init": math.inf}, r"rho_init must be a finite float >= -80"),
        ({"layers": "out"}, "layers must be a list of layer names"),
        ({"layers": 5}, "layers must be None or a list of layer names, got 5"),
        ({"layers": [["head_dense"]]}, "layers must be None or a list of layer names"),
    ):
        with pytest.raises(ValueError, match=match):
            bayesianize(model, **kwargs)
    with pytest.raises(ValueError, match="subclassed"):
        bayesianize(Residual())
    with pytest.raises(ValueError, match="is not built"):
        bayesianize(keras.Sequential([keras.layers.Dense(2)]))


def test_digits_moped_example_keeps_accuracy_and_gains_uncertainty():
    """The example on a short run: its claims hold (the full run is examples/digits_moped.py)."""
    pytest.importorskip("sklearn", reason="the digits example needs scikit-learn (pip install .[test])")
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "digits_moped.py")
    spec = importlib.util.spec_from_file_location("digits_moped", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    results = example.run(epochs=8, finetune_epochs=1, samples=10, verbose=0)
    assert results["deterministic accuracy"] > 0.9 and results["misclassified"] > 0
    assert example.failed_claims(results) == []
    assert example.failed_claims({**results, "entropy noise": 0.0}) == [
        "entropy on noise inputs above that on correct digits"
    ]
