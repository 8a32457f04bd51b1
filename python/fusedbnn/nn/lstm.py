"""Bayesian LSTM with its token embedding and output projection (illia's LSTM)."""

import keras
import tensorflow as tf

from fusedbnn import ops, reference
from fusedbnn.nn import _params
from fusedbnn.nn.base import BayesianModule
from fusedbnn.nn.embedding import Embedding, token_ids

GATES = ("f", "i", "c", "o")


class _GateParameter(_params.SampledParameter):
    """A parameter ``[..., 4H]`` sampled as one tensor (the fused op's layout, gates f, i, c, o along
    the last axis) whose frozen sample is kept as four variables, one per gate, under illia's names."""

    def __init__(self, layer, dist, prefix):
        self._prefix = prefix
        super().__init__(layer, dist, f"{prefix}_gates")

    def _add_frozen_variables(self, layer, name):
        shape = self.dist.shape[:-1] + (self.dist.shape[-1] // 4,)
        self.per_gate = {
            gate: layer.add_weight(name=f"{self._prefix}{gate}", shape=shape, initializer="zeros", trainable=False)
            for gate in GATES
        }

    @property
    def frozen_value(self):
        return tf.concat([self.per_gate[gate] for gate in GATES], axis=-1)

    def freeze(self):
        for gate, value in zip(GATES, tf.split(self.dist.sample(self.seed), 4, axis=-1)):
            self.per_gate[gate].assign(value)


@keras.saving.register_keras_serializable(package="fusedbnn")
class LSTM(BayesianModule):
    """Bayesian LSTM over token ids with an output projection, illia's ``LSTM``.

    ``call(inputs, init_states=None)``: inputs ``[B, T, 1]`` token ids go through a Bayesian
    ``Embedding(num_embeddings, embeddings_dim)`` (``embedding``), then the recurrence
    ``z = [x_t, h] @ W + b`` with gates f, i, c, o, ``c = sig(f) c + sig(i) tanh(g)``,
    ``h = sig(o) tanh(c)``, from ``init_states = (h0, c0)`` (each ``[B, hidden_size]``, zeros if
    None); returns ``(y, (h_T, c_T))`` with ``y = h_T @ wv + bv`` of shape ``[B, output_size]``.
    Unfrozen, every call samples the gate weights once for the whole sequence inside one fused op
    (backpropagation through time in one fused gradient op).

    After ``freeze()`` the fixed weights are the variables ``wf, wi, wc, wo`` (``[E + H, H]``),
    ``bf, bi, bc, bo`` (``[H]``), ``wv`` (``[H, output_size]``), ``bv`` (``[output_size]``) and
    ``embedding.w``. ``kl_cost()`` includes the embedding (illia's leaves it out). Every prior is
    N(0, 0.1^2), as in illia.

    Args:
        num_embeddings, embeddings_dim, hidden_size, output_size: positive sizes.
        padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse: passed to the Embedding (see
            ``fusedbnn.nn.Embedding``; the last two have no effect).
        seed: optional int for reproducible initial values and noise.
    """

    def __init__(self, num_embeddings, embeddings_dim, hidden_size, output_size, padding_idx=None, max_norm=None,
                 norm_type=2.0, scale_grad_by_freq=False, sparse=False, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.hidden_size = _params.positive_int(hidden_size, "hidden_size")
        self.output_size = _params.positive_int(output_size, "output_size")
        self.embedding = Embedding(num_embeddings, embeddings_dim, padding_idx=padding_idx, max_norm=max_norm,
                                   norm_type=norm_type, scale_grad_by_freq=scale_grad_by_freq, sparse=sparse,
                                   seed=_params.derived_seed(seed, 11))
        self.num_embeddings = self.embedding.num_embeddings
        self.embeddings_dim = self.embedding.embeddings_dim
        self.padding_idx = self.embedding.padding_idx
        self.max_norm = self.embedding.max_norm
        self.norm_type = self.embedding.norm_type
        self.scale_grad_by_freq = self.embedding.scale_grad_by_freq
        self.sparse = self.embedding.sparse
        self._seed_generator = keras.random.SeedGenerator(_params.derived_seed(seed, 7))
        rows, hidden = self.embeddings_dim + self.hidden_size, self.hidden_size

        def dist(shape, name, offset):
            return _params.distribution(None, shape, name, _params.derived_seed(seed, offset))

        self.gate_weights_distribution = dist((rows, 4 * hidden), "gate_weights_distribution", 0)
        self.gate_bias_distribution = dist((4 * hidden,), "gate_bias_distribution", 2)
        self.output_weights_distribution = dist((hidden, self.output_size), "output_weights_distribution", 3)
        self.output_bias_distribution = dist((self.output_size,), "output_bias_distribution", 4)
        self._w = _GateParameter(self, self.gate_weights_distribution, "w")
        self._b = _GateParameter(self, self.gate_bias_distribution, "b")
        self._wv = _params.SampledParameter(self, self.output_weights_distribution, "wv")
        self._bv = _params.SampledParameter(self, self.output_bias_distribution, "bv")

    def _parameters(self):
        return [self._w, self._b, self._wv, self._bv]

    # The frozen weights under illia's names.
    wf = property(lambda self: self._w.per_gate["f"], doc="Frozen forget-gate weights [E + H, H].")
    wi = property(lambda self: self._w.per_gate["i"], doc="Frozen input-gate weights [E + H, H].")
    wc = property(lambda self: self._w.per_gate["c"], doc="Frozen candidate weights [E + H, H].")
    wo = property(lambda self: self._w.per_gate["o"], doc="Frozen output-gate weights [E + H, H].")
    bf = property(lambda self: self._b.per_gate["f"], doc="Frozen forget-gate bias [H].")
    bi = property(lambda self: self._b.per_gate["i"], doc="Frozen input-gate bias [H].")
    bc = property(lambda self: self._b.per_gate["c"], doc="Frozen candidate bias [H].")
    bo = property(lambda self: self._b.per_gate["o"], doc="Frozen output-gate bias [H].")
    wv = property(lambda self: self._wv.frozen_value, doc="Frozen output weights [H, output_size].")
    bv = property(lambda self: self._bv.frozen_value, doc="Frozen output bias [output_size].")

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] not in (1, None):
            raise ValueError(f"LSTM expects token ids of shape [batch, steps, 1], got shape {input_shape}")

    def call(self, inputs, init_states=None):
        ids = tf.squeeze(token_ids(inputs), axis=-1)
        x = self.embedding(ids)
        if init_states is not None:
            init_states = tuple(tf.convert_to_tensor(s, tf.float32) for s in init_states)

        def frozen():
            _, (h, c) = reference.lstm_recurrence(x, self._w.frozen_value, self._b.frozen_value, init_states)
            return tf.matmul(h, self.wv) + self.bv, h, c

        def sampling():
            gates_w, gates_b = self.gate_weights_distribution, self.gate_bias_distribution
            _, (h, c) = ops.lstm(x, gates_w.mu, gates_w.rho, self._w.draw_seed(self), gates_b.mu, gates_b.rho,
                                 self._b.draw_seed(self), initial_state=init_states)
            wv = self.output_weights_distribution.sample(self._wv.draw_seed(self))
            bv = self.output_bias_distribution.sample(self._bv.draw_seed(self))
            return tf.matmul(h, wv) + bv, h, c

        y, h, c = self._when_frozen(frozen, sampling)
        return y, (h, c)

    def freeze(self):
        self.embedding.freeze()
        for p in self._parameters():
            p.freeze()
        self._set_frozen(True)

    def unfreeze(self):
        self.embedding.unfreeze()
        super().unfreeze()

    def kl_cost(self):
        embedding_kl, embedding_params = self.embedding.kl_cost()
        kl = tf.add_n([embedding_kl] + [p.kl(self._frozen) for p in self._parameters()])
        return kl, embedding_params + sum(p.dist.num_params for p in self._parameters())

    def compute_output_shape(self, inputs_shape, init_states_shape=None):
        state = (inputs_shape[0], self.hidden_size)
        return (inputs_shape[0], self.output_size), (state, state)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_embeddings=self.num_embeddings,
            embeddings_dim=self.embeddings_dim,
            hidden_size=self.hidden_size,
            output_size=self.output_size,
            padding_idx=self.padding_idx,
            max_norm=self.max_norm,
            norm_type=self.norm_type,
            scale_grad_by_freq=self.scale_grad_by_freq,
            sparse=self.sparse,
        )
        return config
