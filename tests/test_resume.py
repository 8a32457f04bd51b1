"""Interrupted training resumes exactly: a run saved after two epochs, reloaded and trained two more
ends with the weights of four uninterrupted epochs, bit for bit on the CPU, through every way Keras
and TensorFlow save a training (``.keras``, ``save_weights``, ``tf.train.Checkpoint``,
``BackupAndRestore``). The layers' noise state is saved with their weights, so the resumed run draws
the noise the uninterrupted run would have drawn; ELBOLoss binds to the loaded model by itself."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import fusedbnn
from fusedbnn import nn
from fusedbnn.losses import ELBOLoss

MECHANISMS = ["keras_file", "save_weights", "checkpoint", "backup_and_restore"]
KINDS = ["bayesian_model", "functional", "sequential", "illia_module"]


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 8)).astype(np.float32)
    return x, (x @ rng.normal(size=(8, 1))).astype(np.float32)


@keras.saving.register_keras_serializable(package="test_resume")
class IlliaStyleScale(nn.BayesianModule):
    """A module written as illia's docs write one: it samples through its distribution's
    ``sample()``, whose own noise state must resume too."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.distribution = fusedbnn.GaussianDistribution((units,), mu_init=1.0, rho_init=-2.0, seed=5)

    def kl_cost(self):
        return self.distribution.log_prob(), self.distribution.num_params

    def call(self, inputs):
        return inputs * self.distribution.sample()

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def make_model(kind, num_samples=1, frozen_first=False):
    keras.utils.set_random_seed(0)
    first, second = nn.Linear(8, 16, seed=1), nn.Linear(16, 1, seed=2)
    if kind == "sequential":
        model = keras.Sequential([keras.Input((8,)), first, keras.layers.ReLU(), second])
    elif kind == "illia_module":
        model = keras.Sequential([keras.Input((8,)), first, IlliaStyleScale(16), second])
    else:
        inputs = keras.Input((8,))
        outputs = second(keras.layers.ReLU()(first(inputs)))
        model = (fusedbnn.BayesianModel if kind == "bayesian_model" else keras.Model)(inputs, outputs)
    if frozen_first:
        first(np.zeros((1, 8), np.float32))
        first.freeze()
    bind = {} if kind == "bayesian_model" else {"model": model}
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss=ELBOLoss("mse", num_samples=num_samples, kl_weight=1e-2, **bind)
    )
    return model


def fit(model, epochs, initial_epoch=0, callbacks=()):
    x, y = data()
    model.fit(
        x,
        y,
        batch_size=16,
        epochs=epochs,
        initial_epoch=initial_epoch,
        shuffle=False,
        verbose=0,
        callbacks=list(callbacks),
    )


class CrashAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("simulated crash")


def resumed(kind, mechanism, tmp_path, **model_args):
    """Two epochs, saved and restored by ``mechanism`` into a new process state, then two more."""
    model = make_model(kind, **model_args)
    if mechanism == "backup_and_restore":
        backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
        with pytest.raises(RuntimeError, match="simulated crash"):
            fit(model, 4, callbacks=[backup, CrashAfterEpoch(1)])
        model = make_model(kind, **model_args)
        fit(model, 4, callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))])
        return model
    fit(model, 2)
    if mechanism == "keras_file":
        model.save(tmp_path / "m.keras")
        model = keras.models.load_model(tmp_path / "m.keras")
    elif mechanism == "save_weights":
        model.save_weights(tmp_path / "m.weights.h5")
        model = make_model(kind, **model_args)
        model.optimizer.build(model.trainable_variables)  # else Keras skips the optimizer's variables
        model.load_weights(tmp_path / "m.weights.h5")
    else:
        checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        path = checkpoint.save(tmp_path / "ckpt")
        model = make_model(kind, **model_args)
        model.optimizer.build(model.trainable_variables)
        tf.train.Checkpoint(model=model, optimizer=model.optimizer).restore(path).assert_consumed()
    fit(model, 4, initial_epoch=2)
    return model


def assert_same_weights(actual, expected):
    assert len(actual.weights) == len(expected.weights)
    for a, e in zip(actual.weights, expected.weights):
        np.testing.assert_array_equal(a.numpy(), e.numpy(), err_msg=e.path)


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("kind", KINDS)
def test_resumed_training_ends_with_the_uninterrupted_weights(kind, mechanism, tmp_path):
    straight = make_model(kind)
    fit(straight, 4)
    assert_same_weights(resumed(kind, mechanism, tmp_path), straight)


@pytest.mark.parametrize("mechanism", ["keras_file", "backup_and_restore"])
def test_several_samples_per_step_resume_exactly(mechanism, tmp_path):
    straight = make_model("bayesian_model", num_samples=2)
    fit(straight, 4)
    assert_same_weights(resumed("bayesian_model", mechanism, tmp_path, num_samples=2), straight)


def test_a_frozen_layer_stays_frozen_with_its_weights(tmp_path):
    straight = make_model("functional", frozen_first=True)
    fit(straight, 4)
    model = resumed("functional", "keras_file", tmp_path, frozen_first=True)
    assert_same_weights(model, straight)
    first = fusedbnn.losses.bayesian_modules(model)[0]
    assert first.frozen and not fusedbnn.losses.bayesian_modules(model)[1].frozen


def test_the_loss_of_a_loaded_plain_model_binds_to_it(tmp_path):
    model = make_model("sequential")
    fit(model, 1)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.loss.bound_model() is None  # Keras compiled it from the saved config
    fit(loaded, 1)
    assert loaded.loss.bound_model() is loaded


def test_a_distribution_file_without_its_noise_state_still_loads():
    """Files written before the distribution's noise state was saved hold its four weights alone."""
    saved, loaded = fusedbnn.GaussianDistribution((3,), seed=1), fusedbnn.GaussianDistribution((3,), seed=2)
    store = {}
    saved.save_own_variables(store)
    assert sorted(store) == ["0", "1", "2", "3", "noise_state"]
    del store["noise_state"]
    state = loaded._seed_generator.state.numpy()
    loaded.load_own_variables(store)
    np.testing.assert_array_equal(loaded.mu.numpy(), saved.mu.numpy())
    np.testing.assert_array_equal(loaded._seed_generator.state.numpy(), state)
