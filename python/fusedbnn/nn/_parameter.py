"""One Bayesian parameter of a layer: its distribution, the seed of its last sample, its frozen value."""

import contextlib

import keras
import tensorflow as tf

from fusedbnn import _seeds
from fusedbnn.distributions import GaussianDistribution


def make_distribution(given, shape, name, seed, scope):
    """The given distribution (or its config), checked against ``shape``, or a default one.

    ``name`` is the constructor argument's name (``weights_distribution``), used in errors. The
    layer's own distribution is named after the parameter (``weights``) and made in the name scope
    ``scope`` (the layer's name), so that its variables have the paths ``<layer>/weights/mu`` and
    ``<layer>/weights/rho``, also when a saved layer is loaded from its config.
    """
    parameter = name.removesuffix("_distribution")
    if given is None:
        with keras.name_scope(scope):
            return GaussianDistribution(shape, seed=_seeds.derived_seed(seed, parameter), name=parameter)
    if isinstance(given, dict):
        own = given.get("config", {}).get("name") == parameter
        with keras.name_scope(scope) if own else contextlib.nullcontext():
            given = keras.saving.deserialize_keras_object(given)
    if not isinstance(given, GaussianDistribution):
        raise ValueError(f"{name} must be a GaussianDistribution, got {type(given).__name__}")
    if tuple(given.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(given.shape)}")
    return given


class SampledParameter(tf.__internal__.tracking.AutoTrackable):
    """One Bayesian parameter of a layer: its distribution, the seed of the last call's sample, and
    the frozen value, as variables of the owning layer.

    Trackable, with the layer's seed-generator state as an attribute: ``tf.saved_model.save`` only
    exports variables it reaches through attributes, and Keras reaches neither these nor the state.
    """

    def __init__(self, layer, dist, name):
        self.name = name
        self.dist = dist
        with _seeds.on_host():
            self.seed = layer.add_weight(
                name=f"{name}_seed", shape=(2,), dtype="int64", initializer="zeros", trainable=False
            )
        with tf.init_scope():  # outside any trace: a tf.function's first trace, which builds, is discarded
            self.seed.assign(_seeds.next_seed(layer._seed_generator))
        self._add_frozen_variables(layer, name)
        self.generator_state = layer._seed_generator.state

    def _add_frozen_variables(self, layer, name):
        """The variables that hold the frozen value (one, ``frozen_value``, unless overridden)."""
        self.frozen_value = layer.add_weight(
            name=name, shape=self.dist.shape, dtype="float32", initializer="zeros", trainable=False, autocast=False
        )

    def _set_frozen_value(self, value):
        self.frozen_value.assign(value)

    def sampling_args(self, layer):
        """``(mu, rho, seed)`` for a fused op, with a fresh seed (per replica) remembered as the
        seed of the last call's sample."""
        seed = _seeds.replica_seed(_seeds.next_seed(layer._seed_generator))
        self.seed.assign(seed)
        return self.dist.mu, self.dist.rho, seed

    def value(self, frozen):
        """The frozen value when ``frozen``, else the last call's sample, recomputed from its seed
        (illia's ``layer.w`` after a call; nothing weight-sized is written per call)."""
        return tf.cond(frozen, lambda: tf.convert_to_tensor(self.frozen_value), lambda: self.dist.sample(self.seed))

    def draw(self, layer):
        """A fresh sample (outside a fused op), its seed remembered as the last call's."""
        return self.dist.sample(self.sampling_args(layer)[2])

    def freeze(self, use_mean=False):
        """Fix the value at the last call's sample, or at the posterior mean ``mu``."""
        self._set_frozen_value(self.dist.mu if use_mean else self.dist.sample(self.seed))

    def kl(self, frozen, analytic=False):
        """KL of the last call's sample, or of the frozen value; with ``analytic`` the closed-form KL
        of the distribution (no sample). No gradient while frozen (``frozen_kl``)."""
        if analytic:
            kl = self.dist.kl_analytic()
            return tf.cond(frozen, lambda: tf.stop_gradient(kl), lambda: kl)
        return tf.cond(frozen, self.frozen_kl, lambda: self.dist.kl_at_seed(self.seed))

    def frozen_kl(self):
        """The KL of the frozen value, without gradient: frozen parameters are not updated (illia's
        ``freeze()``), and at a fixed value this log ratio has no minimum in mu and rho: ``fit``
        would drive sigma to 0 or without bound while the frozen outputs hid it."""
        return tf.stop_gradient(self.dist.log_prob(self.frozen_value))
