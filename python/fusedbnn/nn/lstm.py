"""Bayesian LSTM with its token embedding and output projection (illia's LSTM)."""

import keras
import numpy as np
import tensorflow as tf

from fusedbnn import _plain, _seeds, ops
from fusedbnn._validation import float_inputs, positive_int
from fusedbnn.distributions import log_ratio
from fusedbnn.nn import _parameter
from fusedbnn.nn.base import BayesianModule
from fusedbnn.nn.embedding import Embedding, token_ids

GATES = ("f", "i", "c", "o")


class GateDistribution:
    """illia's per-gate distribution of the LSTM: a view over gate ``index`` (f, i, c, o = 0..3) of
    a packed distribution whose last axis holds the four gates. ``mu`` and ``rho`` are slices of the
    packed variables (tensors: train and assign the packed ones), with illia's ``sample``,
    ``log_prob`` and ``num_params``."""

    def __init__(self, packed, index):
        self.packed = packed
        self.index = index
        self.shape = packed.shape[:-1] + (packed.shape[-1] // 4,)
        self.std_prior = packed.std_prior

    def _gate(self, tensor):
        return tf.split(tensor, 4, axis=-1)[self.index]

    @property
    def mu_prior(self):
        """The packed prior mean, or this gate's slice of per-weight ones (bayesianize's MOPED)."""
        mu_prior = self.packed.mu_prior
        return mu_prior if len(mu_prior.shape) == 0 else self._gate(mu_prior)

    mu = property(lambda self: self._gate(self.packed.mu))
    rho = property(lambda self: self._gate(self.packed.rho))
    sigma = property(lambda self: tf.nn.softplus(self.rho))
    num_params = property(lambda self: int(np.prod(self.shape)))

    def sample(self, seed=None):
        """One draw of this gate's parameters; ``seed`` ([2] ints) makes it reproducible."""
        return ops.sample_gaussian(self.mu, self.rho, self.packed.next_seed() if seed is None else seed)

    def log_prob(self, x=None):
        """illia's log ratio ``sum(log N(x; mu, sigma)) - sum(log N(x; prior))``, x a fresh sample if None."""
        return log_ratio(self.sample() if x is None else x, self.mu, self.sigma, self.mu_prior, self.std_prior)


class _GateParameter(_parameter.SampledParameter):
    """A parameter ``[..., 4H]`` sampled as one tensor (the fused op's layout, gates f, i, c, o along
    the last axis) whose frozen sample is kept as four variables, one per gate, under illia's names."""

    def _add_frozen_variables(self, layer, name):
        shape = self.dist.shape[:-1] + (self.dist.shape[-1] // 4,)
        prefix = name.removesuffix("_gates")
        self.per_gate = {
            gate: layer.add_weight(
                name=f"{prefix}{gate}",
                shape=shape,
                dtype="float32",
                initializer="zeros",
                trainable=False,
                autocast=False,
            )
            for gate in GATES
        }

    @property
    def frozen_value(self):
        return tf.concat([self.per_gate[gate] for gate in GATES], axis=-1)

    def _set_frozen_value(self, value):
        for gate, part in zip(GATES, tf.split(value, 4, axis=-1)):
            self.per_gate[gate].assign(part)


@keras.saving.register_keras_serializable(package="fusedbnn")
class LSTM(BayesianModule):
    """Bayesian LSTM over token ids with an output projection, illia's ``LSTM``.

    ``call(inputs, init_states=None)``: inputs ``[B, T]`` or ``[B, T, 1]`` token ids go through a Bayesian
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

    def __init__(
        self,
        num_embeddings,
        embeddings_dim,
        hidden_size,
        output_size,
        padding_idx=None,
        max_norm=None,
        norm_type=2.0,
        scale_grad_by_freq=False,
        sparse=False,
        seed=None,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        self.hidden_size = positive_int(hidden_size, "hidden_size")
        self.output_size = positive_int(output_size, "output_size")
        with keras.name_scope(self.name):  # variable paths <lstm>/embedding/..., the same after loading
            self.embedding = Embedding(
                num_embeddings,
                embeddings_dim,
                padding_idx=padding_idx,
                max_norm=max_norm,
                norm_type=norm_type,
                scale_grad_by_freq=scale_grad_by_freq,
                sparse=sparse,
                seed=_seeds.derived_seed(seed, "embedding"),
                name="embedding",
                dtype=self.dtype_policy,  # the LSTM's: its outputs feed the recurrence as they are
            )
        self.num_embeddings = self.embedding.num_embeddings
        self.embeddings_dim = self.embedding.embeddings_dim
        self.padding_idx = self.embedding.padding_idx
        self.max_norm = self.embedding.max_norm
        self.norm_type = self.embedding.norm_type
        self.scale_grad_by_freq = self.embedding.scale_grad_by_freq
        self.sparse = self.embedding.sparse
        rows, hidden = self.embeddings_dim + self.hidden_size, self.hidden_size
        self._w = self._add_parameter("w_gates", None, "gate_weights_distribution", (rows, 4 * hidden), _GateParameter)
        self._b = self._add_parameter("b_gates", None, "gate_bias_distribution", (4 * hidden,), _GateParameter)
        self._wv = self._add_parameter("wv", None, "output_weights_distribution", (hidden, self.output_size))
        self._bv = self._add_parameter("bv", None, "output_bias_distribution", (self.output_size,))
        self.gate_weights_distribution, self.gate_bias_distribution = self._w.dist, self._b.dist
        self.output_weights_distribution, self.output_bias_distribution = self._wv.dist, self._bv.dist

    # illia's names: the last call's sample, or the frozen values when frozen.
    def _gate(self, parameter, index):
        return tf.split(parameter.value(self._frozen), 4, axis=-1)[index]

    wf = property(lambda self: self._gate(self._w, 0), doc="Forget-gate weights [E + H, H].")
    wi = property(lambda self: self._gate(self._w, 1), doc="Input-gate weights [E + H, H].")
    wc = property(lambda self: self._gate(self._w, 2), doc="Candidate weights [E + H, H].")
    wo = property(lambda self: self._gate(self._w, 3), doc="Output-gate weights [E + H, H].")
    bf = property(lambda self: self._gate(self._b, 0), doc="Forget-gate bias [H].")
    bi = property(lambda self: self._gate(self._b, 1), doc="Input-gate bias [H].")
    bc = property(lambda self: self._gate(self._b, 2), doc="Candidate bias [H].")
    bo = property(lambda self: self._gate(self._b, 3), doc="Output-gate bias [H].")
    wv = property(lambda self: self._wv.value(self._frozen), doc="Output weights [H, output_size].")
    bv = property(lambda self: self._bv.value(self._frozen), doc="Output bias [output_size].")

    # illia's per-gate distributions: views over the packed [E + H, 4H] and [4H] distributions.
    wf_distribution = property(lambda self: GateDistribution(self.gate_weights_distribution, 0))
    wi_distribution = property(lambda self: GateDistribution(self.gate_weights_distribution, 1))
    wc_distribution = property(lambda self: GateDistribution(self.gate_weights_distribution, 2))
    wo_distribution = property(lambda self: GateDistribution(self.gate_weights_distribution, 3))
    bf_distribution = property(lambda self: GateDistribution(self.gate_bias_distribution, 0))
    bi_distribution = property(lambda self: GateDistribution(self.gate_bias_distribution, 1))
    bc_distribution = property(lambda self: GateDistribution(self.gate_bias_distribution, 2))
    bo_distribution = property(lambda self: GateDistribution(self.gate_bias_distribution, 3))
    wv_distribution = property(lambda self: self.output_weights_distribution)
    bv_distribution = property(lambda self: self.output_bias_distribution)

    def build(self, input_shape):
        """Nothing to create: the LSTM and its embedding make every variable in ``__init__``."""

    def call(self, inputs, init_states=None):
        ids = token_ids(inputs)
        shape = ids.shape
        if shape.rank not in (2, 3) or (shape.rank == 3 and shape[-1] not in (1, None)):
            raise ValueError(
                f"LSTM layer '{self.name}': inputs must be token ids of shape [batch, steps] or "
                f"[batch, steps, 1], got shape {shape}"
            )
        if shape.rank == 3:
            ids = tf.squeeze(ids, axis=-1)
        if init_states is not None:
            if len(init_states) != 2:
                raise ValueError(
                    f"LSTM layer '{self.name}': init_states must be (h0, c0), got {len(init_states)} tensors"
                )
            init_states = tuple(tf.cast(s, tf.float32) for s in init_states)
        y, h, c = super().call(self.embedding(ids), init_states=init_states)
        return y, (h, c)

    def _fused_kl_priors(self):
        return _gate_kl_priors(self)

    def _kl_variables(self):
        """The base's variables, with each gate parameter's frozen value (a concatenation, which has no
        handle) as its four variables."""
        per_gate = [v for p in (self._w, self._b) for v in p.per_gate.values()]
        return [v for v in super()._kl_variables() if hasattr(v, "handle")] + per_gate

    def _sampled_call(self, x, init_states=None, kl_priors=None):
        lstm_args = (*self._w.sampling_args(self), *self._b.sampling_args(self))
        if kl_priors is None:
            _, (h, c) = ops.lstm(x, *lstm_args, initial_state=init_states)
            return tf.matmul(h, self._wv.draw(self)) + self._bv.draw(self), h, c
        # The gate weights' KL from the fused op, the output projection's from its sampling pass.
        _, (h, c), kl = ops.lstm(x, *lstm_args, initial_state=init_states, kl_priors=kl_priors)
        wv, wv_kl = _draw_with_kl(self._wv, self)
        bv, bv_kl = _draw_with_kl(self._bv, self)
        return (tf.matmul(h, wv) + bv, h, c), kl + wv_kl + bv_kl

    def _frozen_call(self, x, init_states=None):
        _, (h, c) = _plain.lstm_recurrence(x, self._w.frozen_value, self._b.frozen_value, init_states)
        return tf.matmul(h, self._wv.frozen_value) + self._bv.frozen_value, h, c

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


@keras.saving.register_keras_serializable(package="fusedbnn")
class SequenceLSTM(BayesianModule):
    """Bayesian LSTM over float features ``[batch, steps, features]``, Keras-style (time series).

    One fused op runs the whole recurrence with the gate weights ``W [features + units, 4 units]``
    and bias ``b [4 units]`` sampled once per call (gates f, i, c, o along the last axis; the
    backward op runs backpropagation through time and regenerates the noise). ``features`` is found
    when the layer is built.

    ``call(inputs, initial_state=None)``: ``initial_state`` is ``[h0, c0]``, each ``[batch, units]``
    (zeros if None). Returns the last ``h`` ``[batch, units]``, or every step's ``[batch, steps,
    units]`` with ``return_sequences``; with ``return_state``, ``[output, h_T, c_T]``. Masks are not
    supported: a masked input raises a ValueError.

    Args:
        units: the hidden size, positive.
        return_sequences, return_state: as in ``keras.layers.LSTM``.
        seed: optional int for reproducible initial values and noise.
        weights_distribution: GaussianDistribution of shape ``(features + units, 4 * units)``, or None
            for the default prior N(0, 0.1^2).
        bias_distribution: GaussianDistribution of shape ``(4 * units,)``, or None.

    After ``freeze()`` the fixed values are ``w`` and ``b``.
    """

    def __init__(
        self,
        units,
        return_sequences=False,
        return_state=False,
        seed=None,
        weights_distribution=None,
        bias_distribution=None,
        **kwargs,
    ):
        if kwargs.pop("go_backwards", False):  # what keras.layers.Bidirectional asks of its backward copy
            raise ValueError(
                "SequenceLSTM runs forward only (no go_backwards), so keras.layers.Bidirectional cannot wrap "
                "it: run a second SequenceLSTM on the reversed sequence (tf.reverse(x, [1])) instead"
            )
        super().__init__(seed=seed, **kwargs)
        self.units = positive_int(units, "units")
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.weights_distribution = weights_distribution
        self.bias_distribution = bias_distribution
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def build(self, input_shape):
        features = input_shape[-1]
        if features is None:
            raise ValueError(
                f"SequenceLSTM layer '{self.name}': the features axis of the inputs must be known, "
                f"got shape {input_shape}"
            )
        self._w = self._add_parameter(
            "w", self.weights_distribution, "weights_distribution", (features + self.units, 4 * self.units)
        )
        self._b = self._add_parameter("b", self.bias_distribution, "bias_distribution", (4 * self.units,))
        self.weights_distribution, self.bias_distribution = self._w.dist, self._b.dist
        # Later inputs must have these features: Keras's check names the layer and the axis.
        self.input_spec = keras.layers.InputSpec(ndim=3, axes={-1: features})

    def kl_cost(self, analytic=False):
        if not self.built:  # else (0.0, 0): a model's KL would leave the layer out silently
            raise ValueError(
                f"SequenceLSTM layer '{self.name}' is not built: its parameters' shapes depend on the "
                "inputs' features, so call it once (or build(input_shape)) before kl_cost()"
            )
        return super().kl_cost(analytic)

    @property
    def w(self):
        """The gate weights ``[features + units, 4 units]`` of the last call's sample, or the frozen ones."""
        return self._w.value(self._frozen)

    @property
    def b(self):
        """The gate bias ``[4 units]`` of the last call's sample, or the frozen one."""
        return self._b.value(self._frozen)

    def _refuse_mask(self, mask):
        if mask is not None:
            raise ValueError(
                f"SequenceLSTM layer '{self.name}' does not support masking: remove the Masking layer "
                "(or mask_zero) before it, or pad the sequences to a common length"
            )

    def call(self, inputs, initial_state=None, mask=None):
        self._refuse_mask(mask)
        if initial_state is not None:
            if len(initial_state) != 2:
                raise ValueError(
                    f"SequenceLSTM layer '{self.name}': initial_state must be [h0, c0], got "
                    f"{len(initial_state)} tensors"
                )
            initial_state = tuple(tf.cast(s, tf.float32) for s in initial_state)
        h_seq, h, c = super().call(inputs, initial_state=initial_state)
        output = h_seq if self.return_sequences else h
        return [output, h, c] if self.return_state else output

    def compute_output_spec(self, inputs, initial_state=None, mask=None):
        # On symbolic inputs Keras calls this, not call(): refuse a mask here too.
        self._refuse_mask(mask)
        return super().compute_output_spec(inputs, initial_state=initial_state, mask=mask)

    def compute_output_shape(self, input_shape):
        batch, steps = input_shape[0], input_shape[1]
        state = (batch, self.units)
        output = (batch, steps, self.units) if self.return_sequences else state
        return (output, state, state) if self.return_state else output

    def _fused_kl_priors(self):
        return _gate_kl_priors(self)

    def _sampled_call(self, x, initial_state=None, kl_priors=None):
        x = float_inputs(self, x)
        args = (*self._w.sampling_args(self), *self._b.sampling_args(self))
        if kl_priors is None:
            h_seq, (h, c) = ops.lstm(x, *args, initial_state=initial_state)
            return h_seq, h, c
        h_seq, (h, c), kl = ops.lstm(x, *args, initial_state=initial_state, kl_priors=kl_priors)
        return (h_seq, h, c), kl

    def _frozen_call(self, x, initial_state=None):
        h_seq, (h, c) = _plain.lstm_recurrence(
            float_inputs(self, x), self._w.frozen_value, self._b.frozen_value, initial_state
        )
        return h_seq, h, c

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            return_sequences=self.return_sequences,
            return_state=self.return_state,
            weights_distribution=_serialized(self.weights_distribution),
            bias_distribution=_serialized(self.bias_distribution),
        )
        return config


def _gate_kl_priors(layer):
    """The fused op's ``kl_priors``: the gate weights' and bias's priors."""
    return tuple((p.dist.mu_prior, p.dist.std_prior) for p in (layer._w, layer._b))


def _draw_with_kl(parameter, layer):
    """``parameter.draw(layer)`` and the one-sample KL at that draw, from the same sampling pass."""
    mu, rho, seed = parameter.sampling_args(layer)
    return ops.sample_gaussian(mu, rho, seed, kl_prior=(parameter.dist.mu_prior, parameter.dist.std_prior))


def _serialized(distribution):
    """A distribution's config; before ``build`` the constructor argument may already be one."""
    return (
        distribution
        if distribution is None or isinstance(distribution, dict)
        else keras.saving.serialize_keras_object(distribution)
    )
