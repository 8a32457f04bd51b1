"""Keras integration: XLA handling, and freeze()/unfreeze() inside functions Keras already traced."""

import importlib.util
import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import fusedbnn
from conftest import assert_allclose
from fusedbnn.losses import ELBOLoss, bayesian_modules, kl_divergence
from fusedbnn.nn import Linear


def small_model(model_class=fusedbnn.BayesianModel):
    inputs = keras.Input((3,))
    hidden = keras.layers.Activation("tanh")(Linear(3, 8, seed=5)(inputs))
    outputs = Linear(8, 2, bias_distribution=fusedbnn.GaussianDistribution(2, rho_init=-1.0), seed=6)(hidden)
    model = model_class(inputs, outputs)
    for layer in bayesian_modules(model):  # visible noise, so "same" and "different" are clear-cut
        layer.weights_distribution.rho.assign(tf.fill(layer.weights_distribution.shape, -1.0))
    return model


def data(n=32):
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, 3)).astype(np.float32), rng.normal(size=(n, 2)).astype(np.float32)


def test_default_compile_runs_without_xla():
    model = small_model()
    model.compile(optimizer="adam", loss=ELBOLoss("mse"))
    assert model.jit_compile is False
    x, y = data()
    model.fit(x, y, epochs=1, verbose=0)


def test_explicit_jit_compile_warns_once_and_falls_back():
    model = small_model()
    x, y = data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.compile(optimizer="adam", loss=ELBOLoss("mse"), jit_compile=True)
    assert model.jit_compile is False
    assert [str(w.message) for w in caught if "jit_compile" in str(w.message)], "one warning about jit_compile"
    history = model.fit(x, y, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_layers_under_an_xla_function_raise_one_clear_error():
    model = small_model()
    x, _ = data(4)
    with pytest.raises(ValueError, match=r"cannot run under XLA \(jit_compile=True\)"):
        tf.function(lambda inputs: model(inputs), jit_compile=True)(x)
    layer = Linear(3, 2)
    with pytest.raises(ValueError, match="Linear layer .* XLA"):
        tf.function(layer, jit_compile=True)(x)


def frozen_prediction(model, x):
    """The frozen model's output in NumPy from the stored samples ``w`` and ``b``."""
    first, second = bayesian_modules(model)
    hidden = np.tanh(x @ first.w.numpy().T + first.b.numpy())
    return hidden @ second.w.numpy().T + second.b.numpy()


def set_frozen(model, frozen):
    for layer in bayesian_modules(model):
        layer.freeze() if frozen else layer.unfreeze()


def test_freeze_and_unfreeze_reach_an_already_traced_predict_and_evaluate():
    model = small_model()
    model.compile(optimizer="sgd", loss="mse")
    x, y = data()
    sampled = [model.predict(x, verbose=0) for _ in range(2)]
    assert not np.allclose(sampled[0], sampled[1])
    predict_function, test_function = model.predict_function, None
    model.evaluate(x, y, verbose=0)
    test_function = model.test_function

    set_frozen(model, True)
    frozen = [model.predict(x, verbose=0) for _ in range(2)]
    assert model.predict_function is predict_function, "no retracing"
    np.testing.assert_array_equal(frozen[0], frozen[1])
    assert_allclose(frozen[0], frozen_prediction(model, x), rtol=1e-5, atol=1e-5)
    losses = [model.evaluate(x, y, batch_size=len(x), verbose=0) for _ in range(2)]
    assert model.test_function is test_function
    assert losses[0] == losses[1]
    assert_allclose(losses[0], np.mean((frozen_prediction(model, x) - y) ** 2), rtol=1e-5)

    set_frozen(model, False)
    resumed = [model.predict(x, verbose=0) for _ in range(2)]
    assert model.predict_function is predict_function
    assert not np.allclose(resumed[0], resumed[1])
    assert not np.allclose(resumed[0], frozen[0])


def test_freeze_reaches_an_already_traced_train_function():
    model = small_model()
    kl_weight = 0.1
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss=ELBOLoss("mse", kl_weight=kl_weight))
    x, y = data()
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    train_function = model.train_function

    set_frozen(model, True)
    seeds = noise_state(model)
    kl, num_params = kl_divergence(model)
    expected = np.mean((frozen_prediction(model, x) - y) ** 2) + kl_weight * float(kl) / num_params
    history = model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    assert model.train_function is train_function
    # The loss of the step is computed before its update: the frozen model's ELBO.
    assert_allclose(history.history["loss"][0], expected, rtol=1e-5)
    assert noise_state(model) == seeds  # frozen: nothing was sampled

    set_frozen(model, False)
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    assert model.train_function is train_function
    assert noise_state(model) != seeds


def noise_state(model):
    """The seeds of the layers' last calls and their noise generators' states (non-trainable weights)."""
    return {v.path: v.numpy().tolist() for v in model.non_trainable_weights if "seed" in v.path}


def test_bayesian_model_metrics_see_the_mean_of_the_sampled_predictions():
    model = small_model()
    model.compile(optimizer="sgd", loss=ELBOLoss("mse", num_samples=4), metrics=["mae"])
    x, y = data()
    logs = model.evaluate(x, y, batch_size=len(x), return_dict=True, verbose=0)
    assert set(logs) == {"loss", "mae"} and np.isfinite(list(logs.values())).all()


def test_subclassed_bayesian_model_trains_with_several_samples():
    class TwoLayers(fusedbnn.BayesianModel):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.first = Linear(3, 8, seed=1)
            self.second = Linear(8, 2, seed=2)

        def call(self, x):
            return self.second(tf.nn.tanh(self.first(x)))

    model = TwoLayers()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=ELBOLoss("mse", num_samples=2, kl_weight=1e-4))
    x, y = data(64)
    y = np.tanh(x[:, :2])
    history = model.fit(x, y, epochs=10, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]


def test_several_samples_average_sparse_gradients():
    """A plain Keras Embedding's gradient is sparse (IndexedSlices); num_samples > 1 adds the passes'
    slices. Frozen, every pass is the same, so two passes must make the step of one."""
    ids = keras.Input((5,), dtype="int32")
    lookup = keras.layers.Embedding(20, 4)
    model = fusedbnn.BayesianModel(ids, Linear(20, 2, seed=7)(keras.layers.Flatten()(lookup(ids))))
    set_frozen(model, True)
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 20, (32, 5)).astype(np.int32), rng.normal(size=(32, 2)).astype(np.float32)
    start, table = model.get_weights(), lookup.embeddings.numpy()
    tables = {}
    for num_samples in (1, 2, 3):
        model.set_weights(start)
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss=ELBOLoss("mse", num_samples=num_samples))
        model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
        tables[num_samples] = lookup.embeddings.numpy()
    assert np.abs(tables[1] - table).max() > 1e-3  # the step moved the table
    assert_allclose(tables[2], tables[1], rtol=1e-5, atol=1e-7)
    assert_allclose(tables[3], tables[1], rtol=1e-5, atol=1e-7)


def _digits_example():
    pytest.importorskip("sklearn", reason="the digits example needs scikit-learn (pip install .[test])")
    path = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "digits_uncertainty.py"
    )
    spec = importlib.util.spec_from_file_location("digits_uncertainty", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


def test_digits_example_is_more_uncertain_on_noise_than_on_test_digits():
    """Trained on the per-example ELBO (dataset_size), the example's model has a higher predictive
    entropy and a higher mutual information on uniform noise than on test digits."""
    example = _digits_example()
    keras.utils.set_random_seed(example.SEED)
    x_train, x_test, y_train, y_test = example.load_data()
    model = example.train(x_train, y_train, epochs=25, verbose=0)  # the example's own run, about 40 s
    _, noise = example.shifted_inputs(x_test, np.random.default_rng(0))
    probs, entropy, information = example.predictive_uncertainty(model, {"test": x_test, "noise": noise}, 20)
    assert (probs["test"].mean(axis=0).argmax(axis=-1) == y_test).mean() > 0.7
    assert entropy["noise"].mean() > entropy["test"].mean()
    assert information["noise"].mean() > information["test"].mean()


def test_digits_example_builds_trains_and_plots(tmp_path):
    """The worked example's pieces on a short run (the full run is examples/digits_uncertainty.py)."""
    example = _digits_example()
    x_train, x_test, y_train, _ = example.load_data()
    assert x_train.shape[1:] == (8, 8, 1) and x_train.max() <= 1.0
    model = example.train(x_train[:256], y_train[:256], epochs=2, verbose=0)
    history = model.history.history["loss"]
    assert history[1] < history[0]
    assert model.loss.dataset_size == 256 and model.loss.analytic_kl
    rotated, noise = example.shifted_inputs(x_test[:4], np.random.default_rng(0))
    probs = fusedbnn.uncertainty.predict_mc(keras.Sequential([model, keras.layers.Softmax()]), noise, 3, verbose=0)
    assert probs.shape == (3, 4, 10)
    example.plot(tmp_path / "figure.png", [("noise", noise[0], probs[:, 0])], {"noise": np.array([0.1, 0.2])})
    assert (tmp_path / "figure.png").stat().st_size > 1000
