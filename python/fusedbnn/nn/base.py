"""BayesianModule: the base of every fusedbnn layer (illia's API)."""

import keras
import tensorflow as tf
from tensorflow.python.ops import control_flow_util


class BayesianModule(keras.layers.Layer):
    """A Keras layer whose parameters are Gaussian distributions, sampled afresh on every call.

    ``freeze()`` fixes one sample (stored in non-trainable variables, kept by saving) and
    ``unfreeze()`` resumes sampling. The frozen flag is a variable, so functions that Keras has
    already traced see the change. ``kl_cost()`` returns ``(kl, num_params)`` for the sample of the
    last call, or for the fixed sample when frozen. The fused ops cannot be compiled by XLA, so
    ``supports_jit`` is False.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.is_bayesian = True
        self.seed = seed
        self.supports_jit = False
        self._frozen = self.add_weight(name="frozen", shape=(), dtype="bool", initializer="zeros", trainable=False)

    def __call__(self, *args, **kwargs):
        if control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()):
            raise ValueError(
                f"{type(self).__name__} layer '{self.name}' cannot run under XLA (jit_compile=True): its fused "
                "ops have no XLA kernels. Use jit_compile=False (Keras compile() falls back to it by itself)."
            )
        return super().__call__(*args, **kwargs)

    @property
    def frozen(self):
        """Whether the layer uses its fixed sample instead of sampling."""
        return bool(self._frozen.numpy())

    def _set_frozen(self, value):
        self._frozen.assign(value)

    def freeze(self):
        """Fix the parameters at the sample of the last call (or a first sample) and stop sampling."""
        raise NotImplementedError

    def unfreeze(self):
        """Resume sampling on every call."""
        self._set_frozen(False)

    def kl_cost(self):
        """``(kl, num_params)``: the one-sample KL estimate and the number of Bayesian parameters."""
        raise NotImplementedError

    def _when_frozen(self, frozen_fn, sampling_fn):
        """``frozen_fn()`` if frozen else ``sampling_fn()``, decided when the graph runs."""
        return tf.cond(self._frozen, frozen_fn, sampling_fn)

    def get_config(self):
        config = super().get_config()
        config["seed"] = self.seed
        return config
