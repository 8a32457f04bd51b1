"""GaussianDistribution: the variational posterior N(mu, softplus(rho)^2) of one parameter tensor."""

import keras
import numpy as np
import tensorflow as tf

from fusedbnn import _plain, ops
from fusedbnn._seeds import derived_seed, next_seed, on_host
from fusedbnn._validation import finite_float, optional_seed, positive_std, rho_init_value

__all__ = ["GaussianDistribution"]


def log_ratio(x, mu, sigma, mu_prior, std_prior):
    """illia's ``sum(log N(x; mu, sigma)) - sum(log N(x; mu_prior, std_prior))``."""
    x = tf.cast(x, tf.float32)  # a float64 tensor of weights too
    log_posterior = tf.reduce_sum(_plain.gaussian_log_density(x, mu, sigma))
    log_prior = tf.reduce_sum(
        _plain.gaussian_log_density(
            x, tf.convert_to_tensor(mu_prior, tf.float32), tf.convert_to_tensor(std_prior, tf.float32)
        )
    )
    return log_posterior - log_prior


@keras.saving.register_keras_serializable(package="fusedbnn")
class GaussianDistribution(keras.layers.Layer):
    """Trainable Gaussian over a tensor of shape ``shape``, with a Gaussian prior (illia's API).

    Attributes ``mu`` and ``rho`` are trainable variables initialised from N(mu_init, 0.1) and
    N(rho_init, 0.1); the standard deviation is ``softplus(rho)``, computed stably (for rho above
    about 20 it is rho itself, where illia's ``log1p(exp(rho))`` overflows). ``mu_prior`` and
    ``std_prior`` are non-trainable float32 variables of shape ``()``, as in illia (four weights in
    all): the KL ops read them when they run, so ``d.std_prior.assign(0.5)`` changes the next KL,
    also inside functions traced before. ``get_config`` holds their current values as floats.

    Args:
        shape: shape of the parameter tensor, every size positive.
        mu_prior, std_prior: the prior N(mu_prior, std_prior^2); std_prior must be positive.
        mu_init, rho_init: centres of the initial values of mu and rho (rho_init >= -80).
        seed: optional int seed for the initial values and for ``sample()`` without a seed.
    """

    def __init__(self, shape, mu_prior=0.0, std_prior=0.1, mu_init=0.0, rho_init=-7.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        if not shape or any(not isinstance(s, (int, np.integer)) or s <= 0 for s in shape):
            raise ValueError(f"shape must be a non-empty sequence of positive ints, got {shape}")
        self.shape = tuple(int(s) for s in shape)
        mu_prior, std_prior = finite_float(mu_prior, "mu_prior"), positive_std(std_prior)
        self.mu_init = finite_float(mu_init, "mu_init")
        self.rho_init = rho_init_value(rho_init)
        self.seed = seed = optional_seed(seed)
        with on_host():  # where FusedBnn>NextSeed advances it (a CPU kernel, as the layers' noise)
            self._seed_generator = keras.random.SeedGenerator(derived_seed(seed, "sample"))
        # Variables and sampling are float32 under every dtype policy (the fused ops are float32).
        self.mu = self.add_weight(
            name="mu",
            shape=self.shape,
            dtype="float32",
            autocast=False,
            initializer=keras.initializers.RandomNormal(self.mu_init, 0.1, seed=derived_seed(seed, "mu")),
        )
        self.rho = self.add_weight(
            name="rho",
            shape=self.shape,
            dtype="float32",
            autocast=False,
            initializer=keras.initializers.RandomNormal(self.rho_init, 0.1, seed=derived_seed(seed, "rho")),
        )
        self.mu_prior = self.add_weight(
            name="mu_prior",
            shape=self._prior_mean_shape(),
            trainable=False,
            dtype="float32",
            autocast=False,
            initializer=keras.initializers.Constant(mu_prior),
        )
        self.std_prior = self.add_weight(
            name="std_prior",
            shape=(),
            trainable=False,
            dtype="float32",
            autocast=False,
            initializer=keras.initializers.Constant(std_prior),
        )
        self.built = True

    def _prior_mean_shape(self):
        """The shape of ``mu_prior``: one mean for every element."""
        return ()

    @property
    def num_params(self):
        """Number of elements of the parameter tensor."""
        return int(np.prod(self.shape))

    @property
    def sigma(self):
        """The standard deviation softplus(rho)."""
        return tf.nn.softplus(self.rho)

    def next_seed(self):
        """A fresh int64 seed of shape [2] from this distribution's seed generator."""
        return next_seed(self._seed_generator)

    def sample(self, seed=None):
        """One draw ``mu + softplus(rho) * eps``; ``seed`` ([2] ints) makes it reproducible."""
        return ops.sample_gaussian(self.mu, self.rho, self.next_seed() if seed is None else seed)

    def log_prob(self, x=None):
        """``sum(log N(x; mu, sigma)) - sum(log N(x; mu_prior, std_prior))``, x a fresh sample if None."""
        return log_ratio(self.sample() if x is None else x, self.mu, self.sigma, self.mu_prior, self.std_prior)

    def kl_at_seed(self, seed):
        """``log_prob`` at the sample that ``seed`` draws, fused: the sample is never stored."""
        return ops.gaussian_kl(self.mu, self.rho, seed, self.mu_prior, self.std_prior)

    def kl_analytic(self):
        """The closed-form ``KL(N(mu, sigma^2) || N(mu_prior, std_prior^2))`` summed over the elements
        (fused, no sample)."""
        return ops.gaussian_kl_analytic(self.mu, self.rho, self.mu_prior, self.std_prior)

    # The noise state of ``sample()`` is saved beside the four weights (not one of them, as illia's
    # distribution has four), so that a module sampling through it resumes exactly from a .keras file,
    # save_weights, BackupAndRestore or a tf.train.Checkpoint. Files written before it was saved hold
    # the four alone.
    _NOISE_STATE_KEY = "noise_state"

    def save_own_variables(self, store):
        super().save_own_variables(store)
        store[self._NOISE_STATE_KEY] = self._seed_generator.state

    def load_own_variables(self, store):
        if self._NOISE_STATE_KEY in store.keys():
            self._seed_generator.state.assign(store[self._NOISE_STATE_KEY])
            store = {key: store[key] for key in store.keys() if key != self._NOISE_STATE_KEY}
        super().load_own_variables(store)

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        children = super()._trackable_children(save_type, **kwargs)
        if save_type == "checkpoint":  # tf.train.Checkpoint too
            children[self._NOISE_STATE_KEY] = self._seed_generator.state
        return children

    def get_config(self):
        config = super().get_config()
        config.update(
            shape=list(self.shape), **self._prior_config(), mu_init=self.mu_init, rho_init=self.rho_init, seed=self.seed
        )
        return config

    def _prior_config(self):
        """The prior's constructor arguments, at the variables' current values (a per-weight
        ``mu_prior``, as a subclass may have, lives in the weights only)."""
        config = {"std_prior": _as_float(self.std_prior)}
        if len(self.mu_prior.shape) == 0:
            config["mu_prior"] = _as_float(self.mu_prior)
        return config


def _as_float(variable):
    """A float32 scalar variable's current value as the shortest Python float that it rounds from
    (0.1, not 0.10000000149), read outside any function being traced."""
    with tf.init_scope():
        value = keras.ops.convert_to_numpy(variable)[()]  # a float32 scalar: a 0-d array prints as float64
    return float(np.format_float_positional(value, unique=True))
