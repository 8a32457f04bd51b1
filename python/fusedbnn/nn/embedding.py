"""Bayesian embedding layer."""

import keras
import tensorflow as tf

from fusedbnn import _plain, ops
from fusedbnn._validation import embedding_options, positive_int
from fusedbnn.nn.base import BayesianModule


def token_ids(inputs):
    """Integer ids from a layer input: int32/int64 kept, other dtypes cast to int64 (floats
    truncated, as illia does), where no id of an unsigned or float input wraps into the table."""
    ids = tf.convert_to_tensor(inputs)
    return ids if ids.dtype in (tf.int32, tf.int64) else tf.cast(ids, tf.int64)


@keras.saving.register_keras_serializable(package="fusedbnn")
class Embedding(BayesianModule):
    """Bayesian embedding table ``W [num_embeddings, embeddings_dim]`` (illia's API).

    Each unfrozen call samples only the looked-up rows of W inside one fused op; the gradients for
    the table's ``mu`` and ``rho`` are row-sparse ``tf.IndexedSlices`` over the distinct ids.

    Args:
        num_embeddings, embeddings_dim: table size, positive.
        padding_idx: an id whose outputs are zero and whose row gets no gradient, or None.
        max_norm: if given, each output vector e is scaled by ``max_norm / max(norm(e), max_norm)``
            (its norm is capped at max_norm; the table itself is not modified).
        norm_type: the p of that p-norm, positive and finite.
        scale_grad_by_freq: accepted for compatibility with illia (whose TensorFlow layer stores it
            and ignores it); has no effect.
        sparse: accepted for compatibility with illia; has no effect: the gradients are always
            row-sparse ``tf.IndexedSlices``.
        weights_distribution: GaussianDistribution of shape ``(num_embeddings, embeddings_dim)``, or
            None for the default prior N(0, 0.1^2).
        seed: optional int for reproducible initial values and noise.

    Inputs are ids of any shape (int32 or int64; other dtypes are cast to int64), each in
    ``[0, num_embeddings)``; outputs have shape ``inputs.shape + (embeddings_dim,)``. ``kl_cost()``
    covers the whole table. ``w`` is the table of the last call's sample, or the fixed one after
    ``freeze()``.
    """

    def __init__(
        self,
        num_embeddings,
        embeddings_dim,
        padding_idx=None,
        max_norm=None,
        norm_type=2.0,
        scale_grad_by_freq=False,
        sparse=False,
        weights_distribution=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        self.num_embeddings = positive_int(num_embeddings, "num_embeddings")
        self.embeddings_dim = positive_int(embeddings_dim, "embeddings_dim")
        embedding_options(padding_idx, max_norm, norm_type)
        if padding_idx is not None and padding_idx >= self.num_embeddings:
            raise ValueError(f"padding_idx must be None or in [0, {self.num_embeddings}), got {padding_idx!r}")
        self.padding_idx = None if padding_idx is None else int(padding_idx)
        self.max_norm = None if max_norm is None else float(max_norm)
        self.norm_type = float(norm_type)
        self.scale_grad_by_freq = bool(scale_grad_by_freq)
        self.sparse = bool(sparse)
        self._w = self._add_parameter(
            "w", weights_distribution, "weights_distribution", (self.num_embeddings, self.embeddings_dim)
        )
        self.weights_distribution = self._w.dist

    @property
    def w(self):
        """The table ``[num_embeddings, embeddings_dim]`` of the last call's sample, or the frozen one."""
        return self._w.value(self._frozen)

    def _options(self):
        return {"padding_idx": self.padding_idx, "max_norm": self.max_norm, "norm_type": self.norm_type}

    def _sampled_call(self, inputs):
        return ops.embedding(token_ids(inputs), *self._w.sampling_args(self), **self._options())

    def _frozen_call(self, inputs):
        return _plain.embedding_lookup(self._w.frozen_value, token_ids(inputs), **self._options())

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.embeddings_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_embeddings=self.num_embeddings,
            embeddings_dim=self.embeddings_dim,
            padding_idx=self.padding_idx,
            max_norm=self.max_norm,
            norm_type=self.norm_type,
            scale_grad_by_freq=self.scale_grad_by_freq,
            sparse=self.sparse,
            weights_distribution=keras.saving.serialize_keras_object(self.weights_distribution),
        )
        return config
