"""Bayesian fully connected layer."""

import keras

from fusedbnn import _plain, ops
from fusedbnn._validation import boolean, float_inputs, positive_int
from fusedbnn.nn.base import WeightAndBiasModule


@keras.saving.register_keras_serializable(package="fusedbnn")
class Linear(WeightAndBiasModule):
    """Bayesian dense layer ``y = x @ W^T + b`` with W ``[output_size, input_size]`` (illia's API).

    Each unfrozen call samples W and b inside one fused op; the backward op regenerates the noise.

    Args:
        input_size, output_size: feature counts, positive.
        weights_distribution: GaussianDistribution of shape ``(output_size, input_size)``, or None
            for the default prior N(0, 0.1^2).
        bias_distribution: GaussianDistribution of shape ``(output_size,)``, or None.
        use_bias: whether to add a bias.
        seed: optional int for reproducible initial values and noise.
        estimator: "reparameterization" (default: one W sample per call, shared by the batch),
            "flipout" or "local_reparameterization" (per-example noise; see ``fusedbnn.ops.linear``).

    ``w`` ``[output_size, input_size]`` and ``b`` are the last call's sample, or the fixed values
    after ``freeze()``.
    """

    def __init__(
        self,
        input_size,
        output_size,
        weights_distribution=None,
        bias_distribution=None,
        use_bias=True,
        seed=None,
        estimator="reparameterization",
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        self._set_estimator(estimator)
        self.input_size = positive_int(input_size, "input_size")
        self.output_size = positive_int(output_size, "output_size")
        self.use_bias = boolean(use_bias, "use_bias")
        self.input_spec = keras.layers.InputSpec(min_ndim=1, axes={-1: self.input_size})
        self._add_weight_and_bias(
            weights_distribution, bias_distribution, (self.output_size, self.input_size), self.output_size
        )

    def _fused_kl_priors(self):
        return self._weight_and_bias_kl_priors()

    def _sampled_call(self, inputs, kl_priors=None):
        args = {"kl_priors": kl_priors} if kl_priors is not None else self._estimator_args()
        return ops.linear(float_inputs(self, inputs), *self._sampling_args(), **args)

    def _frozen_call(self, inputs):
        return _plain.dense(float_inputs(self, inputs), *self._frozen_values())

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_size,)

    def get_config(self):
        config = super().get_config()
        config.update(input_size=self.input_size, output_size=self.output_size)
        return config
