"""fusedbnn.losses: KL discovery over nested models, KLDivergenceLoss, ELBOLoss in every call form."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import fusedbnn
from conftest import assert_allclose
from fusedbnn.losses import ELBOLoss, KLDivergenceLoss, bayesian_modules, kl_divergence
from fusedbnn.nn import LSTM, BayesianModule, Linear


class Wrapper(BayesianModule):
    """A Bayesian layer built from another: its kl_cost covers the inner layer (as LSTM's covers its
    embedding), so the search must not count the inner layer again."""

    def __init__(self, inner, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner

    def call(self, x):
        return self.inner(x)

    def kl_cost(self):
        return self.inner.kl_cost()


class Block(keras.layers.Layer):
    """A plain Keras layer holding Bayesian layers (nested, not a BayesianModule)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = Linear(4, 6, seed=11)
        self.second = Linear(6, 3, use_bias=False, seed=12)

    def call(self, x):
        return self.second(tf.nn.relu(self.first(x)))


def frozen_kl(layer):
    """illia's log ratio of a Linear layer's frozen values (its last call's samples, after ``freeze()``)."""
    parts = [(layer.weights_distribution, layer.w), (layer.bias_distribution, layer.b)]
    return sum(float(dist.log_prob(value)) for dist, value in parts if dist is not None)


def nested_model():
    inner = keras.Sequential([keras.Input((3,)), Linear(3, 4, seed=10)], name="inner")
    shared = Linear(3, 3, seed=13)
    inputs = keras.Input((3,))
    h = shared(shared(inputs))  # one layer used twice: counted once
    h = inner(h)
    h = Block()(h)
    outputs = Wrapper(Linear(3, 2, seed=14))(h)
    return keras.Model(inputs, outputs)


def test_bayesian_modules_are_found_recursively_once_each():
    model = nested_model()
    names = sorted(type(m).__name__ for m in bayesian_modules(model))
    assert names == ["Linear", "Linear", "Linear", "Linear", "Wrapper"]


def test_a_layer_is_its_own_bayesian_module():
    layer = Linear(2, 3)
    assert bayesian_modules(layer) == [layer]


@pytest.mark.parametrize("weight", [1.0, 0.25])
def test_kl_divergence_loss_is_the_kl_over_all_modules_per_parameter(weight):
    model = nested_model()
    model(np.ones((5, 3), np.float32))
    linears = [m for m in model._flatten_layers() if isinstance(m, Linear)]
    assert len(linears) == 5
    expected_params = sum(layer.kl_cost()[1] for layer in linears)
    assert expected_params == 3 * 3 + 3 + 3 * 4 + 4 + 4 * 6 + 6 + 6 * 3 + 3 * 2 + 2
    kl, num_params = kl_divergence(model)
    for layer in linears:
        layer.freeze()  # fixes each layer's last samples
    expected_kl = sum(frozen_kl(layer) for layer in linears)
    assert num_params == expected_params
    assert_allclose(kl, expected_kl, rtol=1e-4)
    loss = KLDivergenceLoss(weight=weight)
    assert_allclose(loss(model), weight * expected_kl / expected_params, rtol=1e-4)
    assert_allclose(loss(model=model), loss(model), rtol=0)


def test_kl_of_a_frozen_model_is_the_log_ratio_at_the_fixed_sample():
    layer = Linear(
        5, 4, weights_distribution=fusedbnn.GaussianDistribution((4, 5), mu_prior=0.3, std_prior=0.5), seed=3
    )
    layer(np.ones((2, 5), np.float32))
    layer.freeze()
    expected = frozen_kl(layer)
    assert_allclose(KLDivergenceLoss()(layer), expected / (4 * 5 + 4), rtol=1e-5)


def test_kl_loss_rejects_models_without_bayesian_layers_and_bad_arguments():
    plain = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no fusedbnn BayesianModule"):
        KLDivergenceLoss()(plain)
    with pytest.raises(ValueError, match="model must be a Keras model"):
        KLDivergenceLoss()(object())
    with pytest.raises(ValueError, match="reduction"):
        KLDivergenceLoss(reduction="median")


def regression_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x @ rng.normal(size=(4, 1)) + 0.5).astype(np.float32)
    return x, y


def regression_model(model_class=keras.Model):
    inputs = keras.Input((4,))
    hidden = keras.layers.ReLU()(Linear(4, 16, seed=1)(inputs))
    return model_class(inputs, Linear(16, 1, seed=2)(hidden))


def frozen_elbo(model, x, y, kl_weight):
    """Hand-computed ELBO of a frozen model: MSE in NumPy plus the weighted KL per parameter."""
    prediction = model.predict(x, verbose=0)
    kl, num_params = kl_divergence(model)
    return float(np.mean((prediction - y) ** 2)) + kl_weight * float(kl) / num_params


@pytest.mark.parametrize("kl_weight", [1e-3, 0.5])
def test_elbo_equals_data_loss_plus_weighted_kl_at_a_frozen_model(kl_weight):
    x, y = regression_data()
    model = regression_model()
    model(x[:1])
    for layer in bayesian_modules(model):
        layer.freeze()
    expected = frozen_elbo(model, x, y, kl_weight)
    bound = ELBOLoss(keras.losses.MeanSquaredError(), kl_weight=kl_weight, model=model)
    assert_allclose(bound(y, model(x)), expected, rtol=1e-5)
    illia_form = ELBOLoss("mse", kl_weight=kl_weight)
    assert_allclose(illia_form(y, model(x), model), expected, rtol=1e-5)
    plain_function = ELBOLoss(lambda t, p: tf.reduce_mean(tf.square(t - p), axis=-1), kl_weight=kl_weight)
    assert_allclose(plain_function(y, model(x), model=model), expected, rtol=1e-5)
    model.compile(optimizer="sgd", loss=bound)
    assert_allclose(model.evaluate(x, y, batch_size=len(x), verbose=0), expected, rtol=1e-5)


def test_elbo_passes_sample_weights_to_the_data_loss():
    x, y = regression_data(8)
    model = regression_model()
    model(x[:1])
    for layer in bayesian_modules(model):
        layer.freeze()
    weights = np.arange(8, dtype=np.float32)
    elbo = ELBOLoss("mse", kl_weight=0.1, model=model)
    data = keras.losses.MeanSquaredError()(y, model(x), sample_weight=weights)
    kl = KLDivergenceLoss(weight=0.1)(model)
    assert_allclose(elbo(y, model(x), weights), data + kl, rtol=1e-5)  # Keras's positional form
    assert_allclose(elbo(y, model(x), sample_weight=weights), data + kl, rtol=1e-5)


@pytest.mark.parametrize(
    "model_class, num_samples", [(keras.Model, 1), (fusedbnn.BayesianModel, 1), (fusedbnn.BayesianModel, 3)]
)
def test_fit_on_the_elbo_lowers_the_loss(model_class, num_samples):
    x, y = regression_data(128)
    model = regression_model(model_class)
    bind = {"model": model} if model_class is keras.Model else {}
    model.compile(
        optimizer=keras.optimizers.Adam(0.02), loss=ELBOLoss("mse", num_samples=num_samples, kl_weight=1e-2, **bind)
    )
    before = model.evaluate(x, y, verbose=0)
    history = model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    after = model.evaluate(x, y, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert after < 0.5 * before


def test_num_samples_averages_the_elbo_over_fresh_forward_passes():
    x, y = regression_data(16)
    model = regression_model(fusedbnn.BayesianModel)
    kl_weight = 0.05
    model.compile(optimizer="sgd", loss=ELBOLoss("mse", num_samples=3, kl_weight=kl_weight))
    assert model.num_samples == 3
    model(x[:1])
    start = model.get_weights()  # the layers' noise state included
    per_pass = []
    for _ in range(3):  # the same three passes by hand, from the same noise state
        prediction = model(x).numpy()
        kl, num_params = kl_divergence(model)
        per_pass.append(np.mean((prediction - y) ** 2) + kl_weight * float(kl) / num_params)
    assert len(set(np.round(per_pass, 6))) == 3, "each pass draws fresh noise"
    model.set_weights(start)
    assert_allclose(model.evaluate(x, y, batch_size=len(x), verbose=0), np.mean(per_pass), rtol=1e-5)


def test_one_elbo_loss_compiled_into_two_models_adds_each_ones_kl():
    x, y = regression_data(16)
    kl_weight = 50.0  # the two models' KL per parameter differ by ~0.05
    elbo = ELBOLoss("mse", kl_weight=kl_weight)
    inputs = keras.Input((4,))
    models = [regression_model(fusedbnn.BayesianModel), keras.Model(inputs, Linear(4, 1, seed=3)(inputs))]
    for model in models:
        model.compile(optimizer="sgd", loss=elbo)
        for layer in bayesian_modules(model):
            layer.freeze()
    expected = [frozen_elbo(model, x, y, kl_weight) for model in models]
    assert abs(expected[0] - expected[1]) > 0.1
    for model, value in zip(models, expected):
        assert_allclose(model.evaluate(x, y, batch_size=len(x), verbose=0), value, rtol=1e-5)


def test_elbo_needs_a_model_and_bayesian_model_for_several_samples():
    x, y = regression_data(8)
    model = regression_model()
    with pytest.raises(ValueError, match="needs the model"):
        ELBOLoss("mse")(y, model(x))
    with pytest.raises(ValueError, match="BayesianModel"):
        ELBOLoss("mse", num_samples=2, model=model)(y, model(x))
    with pytest.raises(ValueError, match="num_samples"):
        ELBOLoss("mse", num_samples=0)
    with pytest.raises(ValueError, match="loss_function"):
        ELBOLoss(3)
    # Accepted and then ignored before (a scalar came back for "none").
    with pytest.raises(ValueError, match="ELBOLoss takes no reduction, got 'none'"):
        ELBOLoss("mse", reduction="none")
    # Each ELBOLoss of a several-output model added the whole KL (times its loss weight).
    bayesian = regression_model(fusedbnn.BayesianModel)
    elbo = ELBOLoss("mse")
    for loss in ([ELBOLoss("mse"), ELBOLoss("mse", num_samples=3)], {"a": elbo, "b": elbo}):
        with pytest.raises(ValueError, match="got 2 ELBOLosses.*KL would count that many times.*one output"):
            bayesian.compile(loss=loss)


@pytest.mark.parametrize("analytic", [False, True])
def test_elbo_with_dataset_size_and_analytic_kl(analytic):
    """dataset_size=N: data loss + KL / N, kl_weight and num_params not applied; analytic_kl and
    KLDivergenceLoss(analytic=True) take the closed-form KL."""
    x, y = regression_data()
    model = regression_model()
    model(x[:1])
    for layer in bayesian_modules(model):
        layer.freeze()
    kl = float(kl_divergence(model, analytic)[0])
    if analytic:
        expected_kl = sum(
            float(fusedbnn.reference.gaussian_kl_analytic(d.mu, d.rho, d.mu_prior, d.std_prior))
            for m in bayesian_modules(model)
            for d in (m.weights_distribution, m.bias_distribution)
        )
        assert_allclose(kl, expected_kl, rtol=1e-5)
        num_params = kl_divergence(model)[1]
        assert_allclose(KLDivergenceLoss(weight=2.0, analytic=True)(model), 2.0 * kl / num_params, rtol=1e-5)
    mse = float(np.mean((model.predict(x, verbose=0) - y) ** 2))
    elbo = ELBOLoss("mse", kl_weight=0.5, analytic_kl=analytic, dataset_size=1000, model=model)
    assert_allclose(elbo(y, model(x)), mse + kl / 1000, rtol=1e-5)
    model.compile(optimizer="sgd", loss=elbo)
    assert_allclose(model.evaluate(x, y, batch_size=len(x), verbose=0), mse + kl / 1000, rtol=1e-5)
    with pytest.raises(ValueError, match="dataset_size"):
        ELBOLoss("mse", dataset_size=0)


def test_bayesian_model_fits_with_the_analytic_kl():
    """BayesianModel honours analytic_kl and dataset_size: the KL / N term pulls the posteriors'
    sigmas up from their initial softplus(-7) towards the prior's."""
    x, y = regression_data()
    model = regression_model(fusedbnn.BayesianModel)
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=ELBOLoss("mse", num_samples=2, analytic_kl=True, dataset_size=len(x)),
    )
    model(x[:1])
    sigma_before = float(tf.reduce_mean(model.layers[1].weights_distribution.sigma))
    history = model.fit(x, y, epochs=15, batch_size=16, verbose=0).history["loss"]
    assert history[-1] < 0.75 * history[0]
    assert float(tf.reduce_mean(model.layers[1].weights_distribution.sigma)) > 1.5 * sigma_before


def test_losses_round_trip_through_their_config():
    elbo = ELBOLoss(
        keras.losses.MeanAbsoluteError(), num_samples=4, kl_weight=0.2, analytic_kl=True, dataset_size=60000
    )
    restored = keras.losses.deserialize(keras.losses.serialize(elbo))
    assert isinstance(restored, ELBOLoss)
    assert (restored.num_samples, restored.kl_weight, restored.analytic_kl, restored.dataset_size) == (
        4,
        0.2,
        True,
        60000,
    )
    assert isinstance(restored.loss_function, keras.losses.MeanAbsoluteError)
    by_name = keras.losses.deserialize(keras.losses.serialize(ELBOLoss("mse")))
    y, p = tf.constant([[1.0], [2.0]]), tf.constant([[0.0], [0.0]])
    assert_allclose(by_name.loss_function(y, p), 2.5)
    kl = keras.losses.deserialize(keras.losses.serialize(KLDivergenceLoss(weight=3.0, analytic=True)))
    assert (kl.weight, kl.analytic) == (3.0, True)


def test_num_samples_step_applies_the_mean_gradient_of_the_passes():
    x, y = regression_data(16)
    model = regression_model(fusedbnn.BayesianModel)
    kl_weight, lr = 0.05, 0.1
    elbo = ELBOLoss("mse", num_samples=3, kl_weight=kl_weight)
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=elbo)
    model(x[:1])
    start_state = model.get_weights()  # the layers' noise state included
    start_weights = [w.numpy() for w in model.trainable_weights]
    gradient_sum = [np.zeros_like(w) for w in start_weights]
    for _ in range(3):  # the three passes by hand, each with its own tape
        with tf.GradientTape() as tape:
            loss = elbo(y, model(x))
        gradient_sum = [s + g.numpy() for s, g in zip(gradient_sum, tape.gradient(loss, model.trainable_weights))]
    model.set_weights(start_state)
    model.train_on_batch(x, y)
    for weight, start, total in zip(model.trainable_weights, start_weights, gradient_sum):
        assert_allclose(weight.numpy(), start - lr * total / 3, rtol=1e-5, atol=1e-6, err_msg=weight.path)


def test_lstm_kl_includes_its_embedding_once():
    inputs = keras.Input((6, 1), dtype="int32")
    lstm = LSTM(20, 8, 16, 3, seed=1)
    model = keras.Model(inputs, lstm(inputs)[0])
    model(np.random.default_rng(0).integers(0, 20, size=(4, 6, 1)).astype(np.int32))
    assert bayesian_modules(model) == [lstm]  # the embedding is inside the LSTM's kl_cost
    kl, num_params = kl_divergence(model)
    embedding_kl, embedding_params = lstm.embedding.kl_cost()
    assert num_params == lstm.kl_cost()[1] and embedding_params == 20 * 8 < num_params
    assert_allclose(kl, lstm.kl_cost()[0], rtol=1e-6)
