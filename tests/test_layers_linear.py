"""GaussianDistribution, BayesianModule and the Linear layer: illia's API, docs/design.md's behaviour."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_allclose
from fusedbnn import GaussianDistribution, losses, nn, ops, reference


def illia_log_prob(x, mu, sigma, mu_prior, std_prior):
    x, mu, sigma = (np.asarray(v, np.float64) for v in (x, mu, sigma))
    log_n = lambda v, m, s: -0.5 * np.log(2 * np.pi) - np.log(s) - 0.5 * ((v - m) / s) ** 2  # noqa: E731
    return np.sum(log_n(x, mu, sigma)) - np.sum(log_n(x, mu_prior, std_prior))


class TestGaussianDistribution:
    def test_attributes_and_initial_values(self):
        d = GaussianDistribution((40, 50), mu_prior=0.1, std_prior=0.3, mu_init=0.5, rho_init=-4.0, seed=1)
        assert d.num_params == 2000 and d.mu_prior == 0.1 and d.std_prior == 0.3
        assert d.mu.trainable and d.rho.trainable and tuple(d.mu.shape) == (40, 50)
        assert abs(np.mean(d.mu.numpy()) - 0.5) < 0.02 and abs(np.std(d.mu.numpy()) - 0.1) < 0.01
        assert abs(np.mean(d.rho.numpy()) + 4.0) < 0.02 and abs(np.std(d.rho.numpy()) - 0.1) < 0.01

    def test_sample_is_seeded_and_fresh(self):
        d = GaussianDistribution((6, 7), rho_init=-1.0)
        np.testing.assert_array_equal(d.sample([1, 2]).numpy(), d.sample([1, 2]).numpy())
        assert not np.allclose(d.sample().numpy(), d.sample().numpy())
        assert_allclose(d.sample([3, 4]), reference.sample_gaussian(d.mu, d.rho, tf.constant([3, 4])), atol=1e-6)

    def test_log_prob_is_illias_formula(self):
        d = GaussianDistribution((5, 3), mu_prior=0.2, std_prior=0.5, rho_init=-1.0)
        x = d.sample([7, 7])
        expected = illia_log_prob(x, d.mu.numpy(), tf.nn.softplus(d.rho).numpy(), 0.2, 0.5)
        assert d.log_prob(x).numpy() == pytest.approx(expected, rel=1e-5)
        assert d.kl_at_seed([7, 7]).numpy() == pytest.approx(expected, rel=1e-4)

    @pytest.mark.parametrize("kwargs", [dict(shape=(0, 3)), dict(shape=()), dict(shape=(3,), std_prior=0.0)])
    def test_invalid_arguments(self, kwargs):
        with pytest.raises(ValueError, match="shape|std_prior"):
            GaussianDistribution(**kwargs)


class TestLinear:
    def test_illia_api(self):
        layer = nn.Linear(5, 3, seed=0)
        assert isinstance(layer, nn.BayesianModule) and layer.is_bayesian and not layer.frozen
        assert len(layer.trainable_weights) == 4
        assert tuple(layer.w.shape) == (3, 5) and tuple(layer.b.shape) == (3,)
        assert layer.weights_distribution.num_params == 15 and layer.bias_distribution.num_params == 3
        assert layer(tf.zeros([2, 5])).shape == (2, 3)
        assert layer(tf.zeros([4, 2, 5])).shape == (4, 2, 3)
        assert nn.Linear(5, 3, use_bias=False).bias_distribution is None

    def test_each_call_samples_afresh(self):
        layer = nn.Linear(8, 4)
        x = tf.ones([1, 8])
        assert not np.allclose(layer(x).numpy(), layer(x).numpy())

    def test_freeze_unfreeze_and_kl(self):
        layer = nn.Linear(6, 4, seed=3)
        x = tf.random.normal([5, 6])
        layer(x)
        kl_last_call, n = layer.kl_cost()
        layer.freeze()
        assert layer.frozen and n == 28
        y1, y2 = layer(x).numpy(), layer(x).numpy()
        np.testing.assert_array_equal(y1, y2)
        assert_allclose(y1, x.numpy() @ layer.w.numpy().T + layer.b.numpy(), rtol=1e-5, atol=1e-6)
        # freeze() keeps the last call's sample, so its KL is unchanged.
        kl_frozen, _ = layer.kl_cost()
        wd, bd = layer.weights_distribution, layer.bias_distribution
        expected = illia_log_prob(layer.w, wd.mu, wd.sigma, 0.0, 0.1) + illia_log_prob(
            layer.b, bd.mu, bd.sigma, 0.0, 0.1
        )
        assert kl_frozen.numpy() == pytest.approx(expected, rel=1e-4)
        assert kl_last_call.numpy() == pytest.approx(expected, rel=1e-4)
        grads = tf.GradientTape()
        with grads:
            loss = tf.reduce_sum(layer(x))
        assert all(g is None for g in grads.gradient(loss, layer.trainable_weights))
        # One example [in] gives [out], frozen as sampling (tf.nn.bias_add refused rank 1).
        one = tf.function(layer)(x[0])
        assert one.shape == (4,)
        assert_allclose(one, y1[0], rtol=1e-5, atol=1e-6)
        layer.unfreeze()
        assert not layer.frozen and not np.allclose(layer(x).numpy(), y1)

    def test_freeze_is_seen_by_traced_functions(self):
        layer = nn.Linear(3, 2)
        call = tf.function(lambda x: layer(x))
        x = tf.ones([1, 3])
        call(x)
        layer.freeze()
        np.testing.assert_array_equal(call(x).numpy(), call(x).numpy())
        layer.unfreeze()
        assert not np.allclose(call(x).numpy(), call(x).numpy())

    def test_output_moments_match_the_gaussian(self):
        layer = nn.Linear(4, 3, seed=1)
        layer.weights_distribution.rho.assign(tf.fill([3, 4], -1.0))
        layer.bias_distribution.rho.assign(tf.fill([3], -1.5))
        x = tf.constant([[1.0, -2.0, 0.5, 3.0]])
        wd, bd = layer.weights_distribution, layer.bias_distribution
        mean = x.numpy() @ wd.mu.numpy().T + bd.mu.numpy()
        var = (x.numpy() ** 2) @ (wd.sigma.numpy() ** 2).T + bd.sigma.numpy() ** 2
        # Rows of one call share one weight sample: the moments are over calls.
        many = np.stack([layer(x).numpy()[0] for _ in range(3000)])
        assert_allclose(many.mean(0), mean[0], atol=4 * np.sqrt(var[0] / 3000).max())
        assert_allclose(many.var(0), var[0], rtol=0.1)

    def test_gradients_flow_to_mu_and_rho(self):
        layer = nn.Linear(4, 2)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(tf.ones([3, 4]))) + layer.kl_cost()[0]
        grads = tape.gradient(loss, layer.trainable_weights)
        assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)

    def test_config_round_trip(self):
        prior = GaussianDistribution((3, 5), mu_prior=0.2, std_prior=0.7)
        layer = nn.Linear(5, 3, weights_distribution=prior, use_bias=False, seed=4, name="lin")
        config = layer.get_config()
        assert config["input_size"] == 5 and config["use_bias"] is False and config["seed"] == 4
        clone = nn.Linear.from_config(config)
        assert clone.weights_distribution.std_prior == 0.7 and clone.bias_distribution is None
        assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer)).input_size == 5

    def test_save_and_load_keeps_frozen_sample(self, tmp_path):
        model = keras.Sequential([keras.Input((5,)), nn.Linear(5, 3, seed=2)])
        x = tf.random.normal([4, 5])
        model(x)
        model.layers[0].freeze()
        path = str(tmp_path / "m.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        assert loaded.layers[0].frozen
        np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())

    @pytest.mark.parametrize(
        "args, match",
        [
            ((0, 3), "input_size"),
            ((3, -1), "output_size"),
            ((2.5, 3), "input_size"),
            ((3, 2, GaussianDistribution((3, 3))), "weights_distribution"),
        ],
    )
    def test_invalid_construction(self, args, match):
        with pytest.raises(ValueError, match=match):
            nn.Linear(*args)

    def test_invalid_calls(self):
        layer = nn.Linear(4, 2)
        with pytest.raises(ValueError, match=f"layer '{layer.name}'.*axis -1 of input shape to have value 4"):
            layer(tf.zeros([2, 5]))
        other = nn.Linear(4, 2)
        with pytest.raises(
            ValueError, match=f"Linear layer '{other.name}': inputs must be floating point, got dtype int32"
        ):
            other(tf.zeros([2, 4], tf.int32))

    def test_trains_in_fit(self):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(256, 3)).astype(np.float32)
        y = x @ np.float32([[1.0], [-2.0], [0.5]])
        model = keras.Sequential([keras.Input((3,)), nn.Linear(3, 1, seed=0)])
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
        history = model.fit(x, y, epochs=15, batch_size=32, verbose=0)
        assert history.history["loss"][-1] < 0.2 * history.history["loss"][0]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: nn.Linear(8, 4, seed=1.5), "seed must be None or an int, got 1.5"),
        (lambda: nn.Linear(8, 4, seed=True), "seed must be None or an int, got True"),
        (lambda: nn.Embedding(8, 4, seed="x"), "seed must be None or an int, got 'x'"),
        (lambda: nn.Linear(8, 4, use_bias="no"), "use_bias must be True or False, got 'no'"),
        (lambda: nn.Conv2d(3, 4, 3, use_bias=1), "use_bias must be True or False, got 1"),
        (lambda: GaussianDistribution((3,), std_prior="a"), "std_prior must be a positive finite number, got 'a'"),
        (lambda: GaussianDistribution((3,), std_prior=math.inf), "std_prior must be a positive finite number"),
        (lambda: GaussianDistribution((3,), mu_prior=math.nan), "mu_prior must be a finite number, got nan"),
        (lambda: GaussianDistribution((3,), mu_init="0"), "mu_init must be a finite number"),
        (lambda: GaussianDistribution((3,), seed=2.0), "seed must be None or an int, got 2.0"),
        (lambda: losses.ELBOLoss("mse", kl_weight="a"), "kl_weight must be a finite number, got 'a'"),
        (lambda: losses.KLDivergenceLoss(weight=math.nan), "weight must be a finite number, got nan"),
        (lambda: ops.gaussian_kl_analytic(tf.zeros([2]), tf.zeros([2]), std_prior=math.inf), "std_prior must be"),
    ],
)
def test_arguments_of_the_wrong_kind_raise_naming_them(make, match):
    # Each was taken before: a float seed truncated, "no" as a bias, an infinite prior as an inf KL.
    with pytest.raises(ValueError, match=match):
        make()
