"""Code written for illia's TensorFlow layers runs unchanged (docs/design.md lists the deviations)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import fusedbnn
from conftest import assert_allclose
from fusedbnn import GaussianDistribution, nn
from fusedbnn.losses import ELBOLoss, KLDivergenceLoss
from fusedbnn.uncertainty import predict_mc


@keras.saving.register_keras_serializable(package="test_illia_parity")
class IlliaStyleScale(nn.BayesianModule):
    """A custom module written the way illia's docs write one: its own distribution, freeze,
    unfreeze, kl_cost and call, with ``self.frozen`` set directly and read as a bool."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.distribution = GaussianDistribution((units,), mu_init=1.0, rho_init=-3.0, seed=5)
        self.w = self.add_weight(name="w", shape=(units,), initializer="zeros", trainable=False)

    def freeze(self):
        self.w.assign(self.distribution.sample())
        self.frozen = True

    def unfreeze(self):
        self.frozen = False

    def kl_cost(self):
        return self.distribution.log_prob(self.w), self.distribution.num_params

    def call(self, inputs):
        w = self.w if self.frozen else self.distribution.sample()
        return inputs * w

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_setting_frozen_freezes_and_traced_functions_see_it():
    layer = nn.Linear(4, 3, seed=1)
    x = tf.ones([2, 4])
    traced = tf.function(lambda: layer(x))
    layer.freeze()
    frozen_output = traced().numpy()
    layer.frozen = False
    assert not layer.frozen
    assert not np.allclose(traced(), frozen_output)
    layer.frozen = True
    np.testing.assert_array_equal(traced(), frozen_output)


def test_w_and_b_hold_the_last_calls_sample():
    layer = nn.Linear(5, 3, seed=2)
    x = tf.random.normal([4, 5])
    y = layer(x)
    assert_allclose(y, x.numpy() @ layer.w.numpy().T + layer.b.numpy(), rtol=1e-5, atol=1e-5)
    y_next = layer(x)  # a new sample, and w follows it
    assert_allclose(y_next, x.numpy() @ layer.w.numpy().T + layer.b.numpy(), rtol=1e-5, atol=1e-5)
    conv = nn.Conv1d(2, 3, 3, seed=3)
    xc = tf.random.normal([2, 7, 2])
    yc = conv(xc)
    expected = tf.nn.conv1d(xc, conv.w, 1, "VALID") + conv.b
    assert_allclose(yc, expected, rtol=1e-5, atol=1e-5)


def test_lstm_has_illias_per_gate_distributions():
    layer = nn.LSTM(9, 3, 4, 2, seed=3)
    ids = np.random.default_rng(0).integers(0, 9, (2, 5))
    layer(ids)
    packed_w, packed_b = layer.gate_weights_distribution, layer.gate_bias_distribution
    for index, gate in enumerate("fico"):
        w_dist, b_dist = getattr(layer, f"w{gate}_distribution"), getattr(layer, f"b{gate}_distribution")
        assert tuple(w_dist.shape) == (3 + 4, 4) and w_dist.num_params == 28 and b_dist.num_params == 4
        np.testing.assert_array_equal(w_dist.mu, packed_w.mu.numpy()[:, 4 * index : 4 * index + 4])
        np.testing.assert_array_equal(b_dist.rho, packed_b.rho.numpy()[4 * index : 4 * index + 4])
        sample = w_dist.sample([1, 2])
        assert sample.shape == (7, 4)
        np.testing.assert_array_equal(sample, w_dist.sample([1, 2]))
        sigma = np.log1p(np.exp(w_dist.rho.numpy()))
        log_n = lambda v, m, s: -0.5 * np.log(2 * np.pi) - np.log(s) - 0.5 * ((v - m) / s) ** 2  # noqa: E731
        expected = np.sum(log_n(sample, w_dist.mu, sigma)) - np.sum(log_n(sample, 0.0, 0.1))
        assert float(w_dist.log_prob(sample)) == pytest.approx(expected, rel=1e-4)
        # illia's names of the frozen (or last) values are the matching slices.
        np.testing.assert_array_equal(getattr(layer, f"w{gate}"), tf.split(gates_sample(layer), 4, axis=-1)[index])
    assert layer.wv_distribution is layer.output_weights_distribution
    assert layer.bv_distribution is layer.output_bias_distribution
    assert len(layer.trainable_weights) == 10  # the packed variables (illia: 22)


def gates_sample(layer):
    return tf.concat([layer.wf, layer.wi, layer.wc, layer.wo], axis=-1)


def test_an_illia_style_custom_module_trains_saves_and_predicts(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = (2 * x).astype(np.float32)
    inputs = keras.Input((3,))
    model = fusedbnn.BayesianModel(inputs, IlliaStyleScale(3)(nn.Linear(3, 3, seed=1)(inputs)))
    kl_loss = KLDivergenceLoss()(model)
    assert np.isfinite(float(kl_loss))
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss=ELBOLoss("mse", num_samples=2, kl_weight=1e-3))
    history = model.fit(x, y, epochs=20, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    samples = predict_mc(model, x[:5], num_samples=4)
    assert samples.shape == (4, 5, 3) and not np.allclose(samples[0], samples[1])
    for module in fusedbnn.losses.bayesian_modules(model):
        module.freeze()
    expected = model.predict(x[:5], verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded.predict(x[:5], verbose=0), expected)
