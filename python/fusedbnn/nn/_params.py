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


def replica_seed(seed):
    """``seed``, made distinct per replica under a tf.distribute strategy with several replicas.

    Replicas run the same graph with mirrored seed generators; without this, every replica would
    draw the same noise. The replica id is global across workers, so workers differ too.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return seed
    replica_id = tf.cast(context.replica_id_in_sync_group, tf.int64)
    return tf.cast(tf.random.experimental.stateless_fold_in(seed, replica_id), seed.dtype)


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


class SampledParameter(tf.__internal__.tracking.AutoTrackable):
    """One Bayesian parameter of a layer: its distribution, the seed of the last call's sample, and
    the frozen sample, as variables of the owning layer.

    Trackable, with the layer's seed-generator state as an attribute: ``tf.saved_model.save`` only
    exports variables it reaches through attributes, and Keras reaches neither these nor the state.
    """

    def __init__(self, layer, dist, name):
        self.dist = dist
        self.seed = layer.add_weight(name=f"{name}_seed", shape=(2,), dtype="int64", initializer="zeros",
                                     trainable=False)
        self.seed.assign(layer._seed_generator.next())
        self._add_frozen_variables(layer, name)
        self.generator_state = layer._seed_generator.state

    def _add_frozen_variables(self, layer, name):
        """The variables that hold the frozen sample (one, ``frozen_value``, unless overridden)."""
        self.frozen_value = layer.add_weight(name=name, shape=self.dist.shape, initializer="zeros", trainable=False)

    def draw_seed(self, layer):
        """A fresh seed (per replica), remembered as the seed of the last call's sample."""
        seed = replica_seed(layer._seed_generator.next())
        self.seed.assign(seed)
        return seed

    def freeze(self):
        self.frozen_value.assign(self.dist.sample(self.seed))

    def kl(self, frozen):
        """KL of the last call's sample, or of the frozen sample."""
        return tf.cond(frozen, lambda: self.dist.log_prob(self.frozen_value), lambda: self.dist.kl_at_seed(self.seed))


class WeightAndBias:
    """Mixin of the layers with one sampled weight ``_w`` and an optional sampled bias ``_b``
    (Linear, Conv1d, Conv2d); the layer sets ``use_bias`` and ``_seed_generator`` first."""

    def _init_weight_and_bias(self, weight_shape, outputs, weights_distribution, bias_distribution, seed):
        self.weights_distribution = distribution(weights_distribution, weight_shape, "weights_distribution", seed)
        self._w = SampledParameter(self, self.weights_distribution, "w")
        self.bias_distribution = None
        self._b = None
        if self.use_bias:
            self.bias_distribution = distribution(bias_distribution, (outputs,), "bias_distribution",
                                                  derived_seed(seed, 2))
            self._b = SampledParameter(self, self.bias_distribution, "b")

    @property
    def b(self):
        """The frozen bias sample (one value per output), or None without bias."""
        return None if self._b is None else self._b.frozen_value

    def _parameters(self):
        return [p for p in (self._w, self._b) if p is not None]
