"""Bayesian fully connected layer."""

import keras
import tensorflow as tf

from fusedbnn import ops
from fusedbnn.nn import _params
from fusedbnn.nn.base import BayesianModule


@keras.saving.register_keras_serializable(package="fusedbnn")
class Linear(_params.WeightAndBias, BayesianModule):
    """Bayesian dense layer ``y = x @ W^T + b`` with W ``[output_size, input_size]`` (illia's API).

    Each unfrozen call samples W and b inside one fused op; the backward op regenerates the noise.

    Args:
        input_size, output_size: feature counts, positive.
        weights_distribution: GaussianDistribution of shape ``(output_size, input_size)``, or None
            for the default prior N(0, 0.1^2).
        bias_distribution: GaussianDistribution of shape ``(output_size,)``, or None.
        use_bias: whether to add a bias.
        seed: optional int for reproducible initial values and noise.
    """

    def __init__(self, input_size, output_size, weights_distribution=None, bias_distribution=None, use_bias=True,
                 seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.input_size = _params.positive_int(input_size, "input_size")
        self.output_size = _params.positive_int(output_size, "output_size")
        self.use_bias = bool(use_bias)
        self._seed_generator = keras.random.SeedGenerator(_params.derived_seed(seed, 7))
        self._init_weight_and_bias((self.output_size, self.input_size), self.output_size, weights_distribution,
                                   bias_distribution, seed)

    @property
    def w(self):
        """The frozen weight sample ``[output_size, input_size]`` (set by ``freeze()``)."""
        return self._w.frozen_value

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.input_size:
            raise ValueError(f"Linear expects inputs with {self.input_size} features, got shape {input_shape}")

    def call(self, inputs):
        x = tf.convert_to_tensor(inputs)
        if x.dtype != tf.float32:
            raise ValueError(f"Linear expects float32 inputs, got dtype {x.dtype.name}")

        def frozen():
            y = tf.tensordot(x, self.w, axes=[[x.shape.rank - 1], [1]])
            return y if self._b is None else tf.nn.bias_add(y, self.b)

        def sampling():
            args = [x, self.weights_distribution.mu, self.weights_distribution.rho, self._w.draw_seed(self)]
            if self._b is not None:
                args += [self.bias_distribution.mu, self.bias_distribution.rho, self._b.draw_seed(self)]
            return ops.linear(*args)

        return self._when_frozen(frozen, sampling)

    def freeze(self):
        for p in self._parameters():
            p.freeze()
        self._set_frozen(True)

    def kl_cost(self):
        kl = tf.add_n([p.kl(self._frozen) for p in self._parameters()])
        return kl, sum(p.dist.num_params for p in self._parameters())

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_size,)

    def get_config(self):
        config = super().get_config()
        config.update(
            input_size=self.input_size,
            output_size=self.output_size,
            use_bias=self.use_bias,
            weights_distribution=keras.saving.serialize_keras_object(self.weights_distribution),
            bias_distribution=None if self.bias_distribution is None
            else keras.saving.serialize_keras_object(self.bias_distribution),
        )
        return config
