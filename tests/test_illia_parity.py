"""Code written for illia's TensorFlow layers runs unchanged (docs/design.md lists the deviations)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_layer_harness import LAYERS, as_model, main_output

import fusedbnn
from conftest import MODES, assert_allclose, run
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
        return self.distribution.log_prob(self.w if self.frozen else None), self.distribution.num_params

    def call(self, inputs):
        w = self.w if self.frozen else self.distribution.sample()
        return inputs * w

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_priors_are_variables_read_by_traced_kls():
    """illia's mu_prior / std_prior are non-trainable scalar variables: four weights, and assigning a
    prior changes the next KL of a function traced before, without retracing."""
    d = GaussianDistribution((5, 3), mu_prior=0.2, std_prior=0.3, seed=1)
    assert len(d.weights) == 4 and len(d.trainable_weights) == 2
    assert d.mu_prior.shape == () and d.std_prior.shape == ()
    assert d.mu_prior.numpy() == np.float32(0.2) and d.std_prior.numpy() == np.float32(0.3)
    traces = []

    @tf.function
    def kls(seed):
        traces.append(1)
        return d.kl_at_seed(seed), d.kl_analytic()

    seed = tf.constant([3, 4], tf.int64)
    before = [k.numpy() for k in kls(seed)]
    d.std_prior.assign(0.5)
    d.mu_prior.assign(-0.1)
    after = [k.numpy() for k in kls(seed)]
    assert len(traces) == 1
    expected = (
        fusedbnn.reference.gaussian_kl(d.mu, d.rho, seed, -0.1, 0.5),
        fusedbnn.reference.gaussian_kl_analytic(d.mu, d.rho, -0.1, 0.5),
    )
    for b, a, e in zip(before, after, expected):
        assert b != a
        assert_allclose(a, e, rtol=1e-4, atol=1e-3)
    assert_allclose(d.log_prob(d.sample(seed)), expected[0], rtol=1e-4, atol=1e-3)
    # illia's log_prob takes any tensor of weights: a float64 one (a NumPy draw, say) is read as float32.
    assert_allclose(d.log_prob(tf.cast(d.sample(seed), tf.float64)), expected[0], rtol=1e-4, atol=1e-3)
    # The config holds floats, at the current values; a copy from it gets the same priors.
    config = d.get_config()
    assert (config["mu_prior"], config["std_prior"]) == (pytest.approx(-0.1), 0.5)
    assert type(config["mu_prior"]) is float and type(config["std_prior"]) is float
    assert GaussianDistribution.from_config(config).std_prior.numpy() == np.float32(0.5)


@pytest.fixture(params=sorted(LAYERS))
def case(request):
    return LAYERS[request.param]


def test_setting_frozen_fixes_the_last_sample_as_freeze_does_and_traced_functions_see_it(case):
    """illia's ``frozen = True`` keeps using the last sample: it is freeze(), inner modules included,
    never zeros, and after freeze() and unfreeze() the newest sample, not the older frozen one."""
    make, x, frozen_pairs = case
    layer = make(seed=1)
    traced = tf.function(lambda: main_output(layer(x)))
    for _ in range(2):  # the second round re-freezes after unfreezing
        last = traced().numpy()
        kl_last = layer.kl_cost()[0]
        layer.frozen = True
        assert layer.frozen and all(m.frozen for m in layer._flatten_layers() if isinstance(m, nn.BayesianModule))
        np.testing.assert_allclose(traced(), last, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(traced(), traced())
        assert_allclose(layer.kl_cost()[0], kl_last, rtol=1e-4, atol=1e-2)
        for value, dist in frozen_pairs(layer):
            assert_is_a_sample(value, dist)
        layer.frozen = False
        assert not layer.frozen and not np.allclose(traced(), last)


def assert_is_a_sample(value, dist):
    """``value`` is a draw of ``dist`` (within 6 sigma of mu, not mu itself): not zeros, which lie
    about 0.1 (the spread of the initial mu) from mu while sigma is about 1e-3."""
    deviation = np.abs(np.asarray(value) - dist.mu.numpy())
    assert np.all(deviation < 6 * dist.sigma.numpy()) and np.any(deviation > 0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("how", ["freeze", "use_mean", "setter"])
def test_freezing_before_the_first_call_fixes_a_first_sample(case, how, mode):
    """illia's freeze() samples first if nothing was sampled; SequenceLSTM, whose parameters are made
    when it is built, fixes them as it builds them, also when a tf.function's first trace builds it."""
    make, x, frozen_pairs = case
    layer = make(seed=2)
    if how == "setter":
        layer.frozen = True
    else:
        layer.freeze(use_mean=how == "use_mean")
    output = run(mode, lambda: main_output(layer(x)))
    assert np.any(output != 0)
    np.testing.assert_allclose(main_output(layer(x)), output, rtol=1e-5, atol=1e-6)  # eager: other rounding
    expected_kl = 0.0
    for value, dist in frozen_pairs(layer):
        if how == "use_mean":
            np.testing.assert_array_equal(value, dist.mu)
        else:
            assert_is_a_sample(value, dist)
        expected_kl += float(dist.log_prob(value))
    kl, num_params = layer.kl_cost()
    assert num_params == sum(dist.num_params for _, dist in frozen_pairs(layer))
    assert_allclose(kl, expected_kl, rtol=1e-4, atol=1e-2)
    assert abs(float(kl)) < 10 * num_params  # the zeros gave about -6600 per parameter


def test_trainable_false_in_the_constructor_stops_training_as_in_keras(case, tmp_path):
    """``trainable=False`` in the constructor (as ``keras.layers.Dense(4, trainable=False)``) makes
    the distributions non-trainable too: a model around the layer trains nothing of it, also after a
    config round trip and a .keras save and load; ``trainable = True`` makes them trainable again."""
    make, x, _ = case
    layer = make(seed=3, trainable=False)
    model = as_model(layer, x)
    assert not layer.trainable and layer.trainable_weights == [] and model.trainable_weights == []
    copy = type(layer).from_config(layer.get_config())
    assert as_model(copy, x).trainable_weights == []
    model.save(tmp_path / "m.keras")
    assert keras.models.load_model(tmp_path / "m.keras").trainable_weights == []
    start = [v.numpy() for v in model.weights if "seed" not in v.path and "noise" not in v.path]
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=ELBOLoss("mse", kl_weight=1e-2))
    target = np.ones_like(model.predict(x, verbose=0))
    model.fit(x, target, epochs=1, verbose=0)
    end = [v.numpy() for v in model.weights if "seed" not in v.path and "noise" not in v.path]
    for before, after in zip(start, end):
        np.testing.assert_array_equal(before, after)
    layer.trainable = True
    mus = [v for v in as_model(layer, x).trainable_weights if v.path.endswith("/mu")]
    assert mus and all(v.trainable for v in mus)


@pytest.mark.parametrize("analytic_kl", [False, True])
def test_fit_leaves_a_frozen_layers_distributions_as_they_are(case, analytic_kl):
    """illia's freeze(): "Once frozen, parameters are not resampled or updated". The KL term of a
    frozen layer moved mu and rho: the log ratio at the fixed value has no minimum (the loss fell
    without bound, sigma grew or vanished, and unfreeze() showed a ruined posterior); the analytic
    KL pulled them to the prior."""
    make, x, _ = case
    layer = make(seed=4)
    model = as_model(layer, x)
    layer.freeze(use_mean=True)
    start = [v.numpy() for v in layer.trainable_weights]
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=ELBOLoss("mse", kl_weight=1.0, analytic_kl=analytic_kl))
    target = np.ones_like(model.predict(x, verbose=0))
    losses = model.fit(x, target, epochs=3, verbose=0).history["loss"]
    assert np.isfinite(losses).all() and losses[0] == pytest.approx(losses[-1])
    for before, variable in zip(start, layer.trainable_weights):
        np.testing.assert_array_equal(variable.numpy(), before, err_msg=variable.path)
    assert layer.kl_cost()[0].numpy() != 0.0  # the KL is still reported


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
    # Unfrozen, its KL is a one-sample estimate: it averages to the closed form.
    scale = next(m for m in fusedbnn.losses.bayesian_modules(model) if isinstance(m, IlliaStyleScale))
    estimates = [float(scale.kl_cost()[0]) for _ in range(400)]
    assert np.mean(estimates) == pytest.approx(float(scale.distribution.kl_analytic()), rel=0.05)
    with pytest.raises(ValueError, match=r"kl_cost\(\) of module '.*' \(IlliaStyleScale\) takes no analytic"):
        KLDivergenceLoss(analytic=True)(model)
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


def test_samples_and_sampled_distributions_cannot_be_reassigned():
    # illia code may assign layer.w or replace weights_distribution; here w is computed from the
    # last call's seed, and a replaced distribution was silently ignored (the layer went on sampling
    # from the old one, and the new one's mu and rho got no gradient).
    layer = nn.Linear(4, 3, seed=1)
    for name, value in (("w", tf.zeros([3, 4])), ("b", tf.zeros([3]))):
        with pytest.raises(AttributeError, match=f"{name} is the last call's sample .* cannot be set; freeze"):
            setattr(layer, name, value)
    with pytest.raises(AttributeError, match="wf is the last call's sample"):
        nn.LSTM(5, 3, 4, 2).wf = tf.zeros([7, 4])
    with pytest.raises(AttributeError, match="weights_distribution cannot be replaced once the layer samples"):
        layer.weights_distribution = GaussianDistribution((3, 4), mu_init=5.0)
    with pytest.raises(AttributeError, match="bias_distribution cannot be replaced"):
        layer.bias_distribution = GaussianDistribution((3,))
    layer.weights_distribution = layer.weights_distribution  # the same one: nothing changes
