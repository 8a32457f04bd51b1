"""Saving: .keras round trips (config, weights, frozen samples, compile config) and SavedModel export
reloaded in a fresh process."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import fusedbnn
from conftest import assert_allclose, subprocess_env
from fusedbnn.losses import ELBOLoss, bayesian_modules
from fusedbnn.nn import LSTM, Linear
from fusedbnn.uncertainty import predict_mc


def custom_model():
    """Two layers with non-default priors, initial values and seeds, one without bias."""
    inputs = keras.Input((5,))
    first = Linear(
        5,
        4,
        weights_distribution=fusedbnn.GaussianDistribution(
            (4, 5), mu_prior=0.25, std_prior=0.5, mu_init=0.1, rho_init=-1.5, seed=21
        ),
        seed=20,
        name="first",
    )
    second = Linear(
        4,
        3,
        use_bias=False,
        weights_distribution=fusedbnn.GaussianDistribution((3, 4), mu_prior=-0.5, std_prior=2.0, rho_init=-2.5),
        name="second",
    )
    return fusedbnn.BayesianModel(inputs, second(keras.layers.ReLU()(first(inputs))))


def inputs(n=6):
    return np.random.default_rng(4).normal(size=(n, 5)).astype(np.float32)


def layer_configs(model):
    return [layer.get_config() for layer in bayesian_modules(model)]


def test_keras_round_trip_keeps_config_weights_and_frozen_samples(tmp_path):
    model = custom_model()
    x = inputs()
    model.predict(x, verbose=0)
    bayesian_modules(model)[0].freeze()
    bayesian_modules(model)[1].freeze()
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")

    assert isinstance(loaded, fusedbnn.BayesianModel)
    assert layer_configs(loaded) == layer_configs(model)
    first = bayesian_modules(loaded)[0]
    assert (first.weights_distribution.mu_prior, first.weights_distribution.std_prior) == (0.25, 0.5)
    assert first.weights_distribution.rho_init == -1.5 and first.seed == 20
    assert bayesian_modules(loaded)[1].bias_distribution is None
    for original, restored in zip(model.weights, loaded.weights):
        assert original.path == restored.path
        np.testing.assert_array_equal(original.numpy(), restored.numpy(), err_msg=original.path)
    assert all(layer.frozen for layer in bayesian_modules(loaded))
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)


def moments(layer, x):
    """Exact mean and standard deviation of a Linear layer's output under its Gaussian weights."""
    dist, bias = layer.weights_distribution, layer.bias_distribution
    mean = x @ dist.mu.numpy().T + bias.mu.numpy()
    var = (x**2) @ (dist.sigma.numpy() ** 2).T + bias.sigma.numpy() ** 2
    return mean, np.sqrt(var)


def test_distribution_config_holds_the_priors_as_written():
    config = fusedbnn.GaussianDistribution((2,), mu_prior=0.2, std_prior=0.1).get_config()
    assert (repr(config["mu_prior"]), repr(config["std_prior"])) == ("0.2", "0.1")  # not 0.10000000149...


def test_an_unfrozen_reloaded_layer_samples_the_same_distribution(tmp_path):
    inputs_ = keras.Input((5,))
    layer = Linear(
        5,
        3,
        weights_distribution=fusedbnn.GaussianDistribution((3, 5), rho_init=-0.5),
        bias_distribution=fusedbnn.GaussianDistribution(3, rho_init=-1.0),
        seed=8,
    )
    model = keras.Model(inputs_, layer(inputs_))
    model.save(tmp_path / "u.keras")
    loaded = keras.models.load_model(tmp_path / "u.keras")
    x = inputs(4)
    mean, std = moments(layer, x)
    num_samples = 400
    for candidate in (model, loaded):
        sample_mean, sample_std = predict_mc(candidate, x, num_samples, aggregate=True, verbose=0)
        # Sampling error: 5 standard errors of the mean and of the standard deviation.
        np.testing.assert_array_less(np.abs(sample_mean - mean), 5 * std / np.sqrt(num_samples))
        np.testing.assert_array_less(np.abs(sample_std - std), 5 * std / np.sqrt(2 * num_samples))
    assert not np.allclose(loaded.predict(x, verbose=0), loaded.predict(x, verbose=0))


def test_compiled_bayesian_model_reloads_its_elbo_and_keeps_training(tmp_path):
    model = custom_model()
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=ELBOLoss(keras.losses.MeanSquaredError(), num_samples=2, kl_weight=0.05),
    )
    x = inputs(32)
    y = np.abs(x[:, :3])
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "c.keras")
    loaded = keras.models.load_model(tmp_path / "c.keras")
    assert loaded.num_samples == 2
    assert isinstance(loaded.loss, ELBOLoss) and loaded.loss.kl_weight == 0.05
    assert loaded.loss.bound_model() is loaded
    for candidate in (model, loaded):
        for layer in bayesian_modules(candidate):
            layer.freeze()
    assert_allclose(
        loaded.evaluate(x, y, batch_size=32, verbose=0), model.evaluate(x, y, batch_size=32, verbose=0), rtol=1e-6
    )
    for layer in bayesian_modules(loaded):
        layer.unfreeze()
    history = loaded.fit(x, y, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


@keras.saving.register_keras_serializable(package="test_saving")
class RegisteredBayesianModel(fusedbnn.BayesianModel):
    """A user's subclass, built functionally."""


@pytest.mark.parametrize("model_class", [fusedbnn.BayesianModel, RegisteredBayesianModel])
@pytest.mark.parametrize("file_name", ["model.keras", "legacy.h5"])
def test_a_functional_bayesian_model_reloads_as_itself(model_class, file_name, tmp_path):
    # Legacy .h5 files name the model by its class's __name__ (FunctionalBayesianModel, the class of
    # a functional BayesianModel), which no registry knew: "Unknown layer".
    inputs_ = keras.Input((5,))
    model = model_class(inputs_, Linear(5, 3, seed=1)(inputs_))
    for layer in bayesian_modules(model):
        layer.freeze()
    model.save(tmp_path / file_name)
    loaded = keras.models.load_model(tmp_path / file_name)
    assert isinstance(loaded, model_class)
    x = inputs(4)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


FRESH_PROCESS = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf

    export_dir, saved_model_dir, unfrozen_dir, x_path, expected_path = sys.argv[1:]
    try:
        tf.saved_model.load(export_dir)
        raise SystemExit("loading without fusedbnn should fail: its ops are not registered")
    except Exception as error:
        assert "FusedBnn" in str(error), error

    import fusedbnn  # registers the ops

    x, expected = np.load(x_path), np.load(expected_path)
    exported = tf.saved_model.load(export_dir)  # keep a reference: its variables die with it
    served = exported.serve(x).numpy()
    np.testing.assert_array_equal(served, expected)
    saved = tf.saved_model.load(saved_model_dir)
    outputs = saved.signatures["serving_default"](tf.constant(x))
    np.testing.assert_array_equal(list(outputs.values())[0].numpy(), expected)
    sampling = tf.saved_model.load(unfrozen_dir)
    first, second = sampling.serve(x).numpy(), sampling.serve(x).numpy()
    assert first.shape == expected.shape and np.isfinite(first).all()
    assert not np.allclose(first, second), "an unfrozen export draws fresh noise on every call"
    print("served", served.shape)
""")


@pytest.mark.slow
def test_export_and_saved_model_reload_in_a_fresh_process(tmp_path):
    model = custom_model()
    x = inputs()
    unfrozen_dir = str(tmp_path / "unfrozen")
    model.export(unfrozen_dir, verbose=False)
    for layer in bayesian_modules(model):
        layer.freeze()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", model.predict(x, verbose=0))
    model.export(str(tmp_path / "export"), verbose=False)
    tf.saved_model.save(model, str(tmp_path / "saved_model"))
    script = tmp_path / "serve.py"
    script.write_text(FRESH_PROCESS)
    env = subprocess_env()
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp_path / "export"),
            str(tmp_path / "saved_model"),
            unfrozen_dir,
            str(tmp_path / "x.npy"),
            str(tmp_path / "expected.npy"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "served (6, 3)" in result.stdout


def test_lstm_model_round_trips_through_keras_and_saved_model(tmp_path):
    ids = np.random.default_rng(0).integers(0, 20, size=(4, 6, 1)).astype(np.int32)
    model_inputs = keras.Input((6, 1), dtype="int32")
    lstm = LSTM(20, 8, 16, 3, padding_idx=0, seed=1)
    model = fusedbnn.BayesianModel(model_inputs, lstm(model_inputs)[0])
    model.predict(ids, verbose=0)
    lstm.freeze()
    expected = model.predict(ids, verbose=0)
    model.save(tmp_path / "lstm.keras")
    loaded = keras.models.load_model(tmp_path / "lstm.keras")
    assert layer_configs(loaded) == layer_configs(model)
    np.testing.assert_array_equal(loaded.predict(ids, verbose=0), expected)
    tf.saved_model.save(model, str(tmp_path / "lstm_saved_model"))
    restored = tf.saved_model.load(str(tmp_path / "lstm_saved_model"))
    served = restored.signatures["serving_default"](tf.constant(ids))
    np.testing.assert_array_equal(list(served.values())[0].numpy(), expected)
