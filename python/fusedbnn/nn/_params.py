"""Shared pieces of the layers: argument checks and the (distribution, seed) pairs they sample."""

import keras
import numpy as np
import tensorflow as tf

from fusedbnn.distributions import GaussianDistribution


def positive_int(value, name):
    """``value`` as an int, or ValueError naming ``name`` unless it is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def derived_seed(seed, offset):
    return None if seed is None else int(seed) + offset


def distribution(given, shape, name, seed):
    """The given distribution, checked against ``shape``, or a default GaussianDistribution."""
    if given is None:
        return GaussianDistribution(shape, seed=seed, name=name)
    if isinstance(given, dict):
        given = keras.saving.deserialize_keras_object(given)
    if not isinstance(given, GaussianDistribution):
        raise ValueError(f"{name} must be a GaussianDistribution, got {type(given).__name__}")
    if tuple(given.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(given.shape)}")
    return given


class SampledParameter:
    """One Bayesian parameter of a layer: its distribution, the seed of the last call's sample, and
    the frozen sample, as variables of the owning layer."""

    def __init__(self, layer, dist, name):
        self.dist = dist
        self.seed = layer.add_weight(name=f"{name}_seed", shape=(2,), dtype="int64", initializer="zeros",
                                     trainable=False)
        self.seed.assign(layer._seed_generator.next())
        self._add_frozen_variables(layer, name)

    def _add_frozen_variables(self, layer, name):
        """The variables that hold the frozen sample (one, ``frozen_value``, unless overridden)."""
        self.frozen_value = layer.add_weight(name=name, shape=self.dist.shape, initializer="zeros", trainable=False)

    def draw_seed(self, layer):
        """A fresh seed, remembered as the seed of the last call's sample."""
        seed = layer._seed_generator.next()
        self.seed.assign(seed)
        return seed

    def freeze(self):
        self.frozen_value.assign(self.dist.sample(self.seed))

    def kl(self, frozen):
        """KL of the last call's sample, or of the frozen sample."""
        return tf.cond(frozen, lambda: self.dist.log_prob(self.frozen_value), lambda: self.dist.kl_at_seed(self.seed))
