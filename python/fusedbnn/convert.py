"""Turn a trained Keras model Bayesian: ``bayesianize``, with MOPED initialisation.

>>> bayesian = fusedbnn.bayesianize(trained, moped_delta=0.1)
>>> loss = fusedbnn.losses.ELBOLoss(keras.losses.SparseCategoricalCrossentropy(from_logits=True))
>>> bayesian.compile("adam", loss=loss)
>>> bayesian.fit(x, y, epochs=3)
"""

import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf
from keras.src.models.functional import Functional

from fusedbnn import nn, ops
from fusedbnn._validation import finite_float, positive_std, rho_init_value
from fusedbnn.distributions import GaussianDistribution
from fusedbnn.models import BayesianModel

__all__ = ["MIN_SIGMA", "PerWeightPriorGaussian", "bayesianize"]

# MOPED's sigma = delta * |w| is floored here, so that a weight of exactly 0 gets a finite rho.
MIN_SIGMA = 1e-8


@keras.saving.register_keras_serializable(package="fusedbnn")
class PerWeightPriorGaussian(GaussianDistribution):
    """A ``GaussianDistribution`` whose prior N(mu_prior, std_prior^2) has one mean per weight.

    ``mu_prior`` is a non-trainable variable of the parameter's shape (zeros until assigned; saved
    with the weights), read by the KL ops directly; ``prior_mean`` is the same variable.
    """

    def __init__(self, shape, std_prior=0.1, mu_init=0.0, rho_init=-7.0, seed=None, **kwargs):
        super().__init__(
            shape, mu_prior=0.0, std_prior=std_prior, mu_init=mu_init, rho_init=rho_init, seed=seed, **kwargs
        )

    def _prior_mean_shape(self):
        return self.shape

    @property
    def prior_mean(self):
        """The per-weight prior means (the variable ``mu_prior``)."""
        return self.mu_prior


def bayesianize(
    model, moped_delta=None, mu_prior=None, std_prior=0.1, rho_init=-7.0, estimator="reparameterization", layers=None
):
    """A Bayesian copy of a trained Keras model: its Dense, Conv1D, Conv2D, Embedding and LSTM
    layers replaced by fusedbnn layers whose posterior means are the trained weights.

    ``keras.layers.Dense`` becomes ``nn.Linear`` (kernel ``[in, out]`` transposed to ``W [out, in]``),
    ``Conv1D`` / ``Conv2D`` become ``nn.Conv1d`` / ``nn.Conv2d`` (same kernel layout; strides,
    dilation, groups, "valid" / "same" / "causal" padding and both data formats carried over),
    ``Embedding`` becomes ``nn.Embedding`` and ``LSTM`` becomes ``nn.SequenceLSTM`` (gate blocks
    reordered from Keras's i, f, c, o to f, i, c, o). An activation that a Dense or Conv layer
    carries is applied by a ``keras.layers.Activation`` after the Bayesian layer. Every other
    layer is copied with its weights, Sequential and functional models are rebuilt as such (a plain
    functional ``keras.Model`` at the top becomes a ``fusedbnn.BayesianModel``, so that
    ``ELBOLoss(num_samples > 1)`` works), and nested Sequential and functional models are converted
    recursively. The converted layers keep their names; the original model is not modified, and
    the result is not compiled.

    A layer of those types is left as it is, with a warning naming it, where the conversion would
    change what it computes: an Embedding with ``mask_zero``, a layer whose input carries a Keras
    mask (the fusedbnn layers do not propagate masks), an LSTM with other activations, dropout,
    no bias, ``go_backwards`` or ``stateful``, a quantized layer, a subclass of these types, or one
    inside a wrapper (``TimeDistributed``, ``Bidirectional``: the wrapper is kept).
    Nested subclassed models are copied as they are, with a warning.

    Weight regularizers and constraints of the converted layers are dropped: the KL term of the
    ELBO regularizes the Bayesian layers. An activity regularizer is dropped with a warning.

    Args:
        model: a built Sequential or functional Keras model (not subclassed).
        moped_delta: None, or MOPED's delta (Krishnan et al. 2020): each weight's initial standard
            deviation is ``delta * |w|`` (at least ``MIN_SIGMA``, so that a zero weight keeps a
            finite rho), and the prior mean is the trained weight when ``mu_prior`` is None.
        mu_prior: the prior mean, a float for every weight; None means the trained weights under
            MOPED, else 0.
        std_prior: the prior's standard deviation, positive.
        rho_init: every rho without MOPED (sigma = softplus(rho_init)), at least -80.
        estimator: the estimator of the converted Dense and Conv layers: "reparameterization" (one
            weight sample per call), "flipout" or "local_reparameterization" (per-example noise;
            docs/design.md, "Estimators"). Embeddings and LSTMs keep the first.
        layers: None to convert every layer that can be, or a list of layer names (nested models'
            layers included) to convert only those.

    Returns:
        The Bayesian model, a new ``keras.Model``.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras.Model, got {type(model).__name__}")
    if not isinstance(model, (keras.Sequential, Functional)):
        raise ValueError(
            f"model must be a Sequential or functional Keras model; '{model.name}' is a subclassed "
            f"{type(model).__name__}, whose layers' connections cannot be rebuilt"
        )
    if not model.built:
        raise ValueError(
            f"model '{model.name}' is not built: build it (or call it once) so that its layers have "
            "their trained weights"
        )
    if estimator not in ops.ESTIMATORS:
        raise ValueError(
            f"estimator must be one of {ops.ESTIMATORS} (the estimators the fusedbnn layers offer), got {estimator!r}"
        )
    if isinstance(layers, str):
        raise ValueError(f"layers must be a list of layer names, got the string {layers!r}")
    if layers is not None and not (
        isinstance(layers, (list, tuple, set, frozenset)) and all(isinstance(name, str) for name in layers)
    ):
        raise ValueError(f"layers must be None or a list of layer names, got {layers!r}")
    converter = _Converter(
        None if moped_delta is None else positive_std(moped_delta, "moped_delta"),
        None if mu_prior is None else finite_float(mu_prior, "mu_prior"),
        positive_std(std_prior),
        rho_init_value(rho_init),
        None if layers is None else set(layers),
        estimator,
        _mask_receivers(model)[0],
    )
    unknown = sorted(converter.selected - _layer_names(model)) if converter.selected is not None else []
    if unknown:
        raise ValueError(f"layers names no layer of model '{model.name}': {unknown}")
    converted = converter.model(model)
    if type(converted) is Functional:
        converted = BayesianModel(converted.input, converted.output, name=model.name)
    converter.copy_kept_weights()
    return converted


def _layer_names(model):
    """The names of the layers of ``model`` and of the Sequential and functional models inside it."""
    names = set()
    for layer in model.layers:
        names.add(layer.name)
        if isinstance(layer, (keras.Sequential, Functional)):
            names |= _layer_names(layer)
    return names


def _mask_receivers(model, inputs_masked=None):
    """``(ids, outputs_masked)``: the ids of the layers of ``model`` (nested models' included) that
    some call gives a Keras mask, and whether each output of ``model`` carries one.

    Keras marks the masked tensors of one graph (``_keras_mask``) but not across a nested model's
    boundary: a mask made inside a nested model leaves its outputs unmarked, and one entering a
    nested model is absent from its inner graph. This walk carries masks across, a layer passing a
    mask on where its ``compute_mask`` would.
    """
    graph = model._functional if isinstance(model, keras.Sequential) else model
    masked = {id(t): flag for t, flag in zip(graph.inputs, inputs_masked or [False] * len(graph.inputs))}
    receivers = set()
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            layer = node.operation
            if not node.input_tensors:  # an InputLayer: its tensor is already in masked
                continue
            flags = [
                masked.get(id(t), False) or getattr(t, "_keras_mask", None) is not None for t in node.input_tensors
            ]
            received = any(flags) or node.arguments.kwargs.get("mask") is not None
            if received:
                receivers.add(id(layer))
            if isinstance(layer, (keras.Sequential, Functional)):
                inner, outputs_masked = _mask_receivers(layer, flags)
                receivers |= inner
            else:
                passes = received and _passes_mask(layer, node)
                outputs_masked = [passes or getattr(t, "_keras_mask", None) is not None for t in node.output_tensors]
            masked.update(zip(map(id, node.output_tensors), outputs_masked))
    return receivers, [masked.get(id(t), False) for t in graph.outputs]


def _passes_mask(layer, node):
    """Whether ``layer``'s outputs carry a mask when its call at ``node`` gets one."""
    if not isinstance(layer, keras.layers.Layer):
        return False
    if getattr(layer.compute_mask, "_is_default", False):
        return layer.supports_masking
    first = node.input_tensors[0]
    try:
        mask = layer.compute_mask(*node.arguments.args, mask=keras.KerasTensor(first.shape[:-1], "bool"))
    except Exception:  # noqa: BLE001 (a user's compute_mask on a stand-in mask: assume it passes one on)
        return True
    return any(m is not None for m in tf.nest.flatten(mask))


def _inverse_softplus(sigma):
    """rho with softplus(rho) = sigma, in float64: ``sigma + log(1 - exp(-sigma))``."""
    return sigma + np.log(-np.expm1(-sigma))


class _Converter:
    """One conversion: the settings, and the layers copied unchanged, whose weights are copied once
    the new model has built them."""

    def __init__(self, moped_delta, mu_prior, std_prior, rho_init, selected, estimator, mask_receivers):
        self.estimator = estimator
        self.mask_receivers = mask_receivers
        # id of an original layer -> what _layer made of it: a layer used at several places (inside
        # and outside a nested model) stays one layer, its weights shared as before.
        self.made = {}
        self.moped_delta = moped_delta
        self.mu_prior = mu_prior
        self.std_prior = std_prior
        self.rho_init = rho_init
        self.selected = selected
        self.kept = []  # (original, copy)

    def model(self, model):
        """The converted copy of a Sequential or functional model; a model named in ``layers=`` has
        all its layers converted."""
        selected = self.selected
        if selected is not None and model.name in selected:
            self.selected = None
        try:
            return self._sequential(model) if isinstance(model, keras.Sequential) else self._functional(model)
        finally:
            self.selected = selected

    def _functional(self, model):
        taken, activations = _layer_names(model), {}

        def clone(layer):
            converted, activation = self._layer(layer, taken)
            if activation is not None:
                activations[id(converted)] = activation
            return converted

        def call(layer, *args, **kwargs):
            outputs = layer(*args, **kwargs)
            activation = activations.get(id(layer))
            return outputs if activation is None else activation(outputs)

        # New inputs under the original names (clone_model would name them after the tensors).
        inputs = tf.nest.map_structure(
            lambda x: keras.Input(batch_shape=x.shape, dtype=x.dtype, name=x._keras_history.operation.name), model.input
        )
        cloned = keras.models.clone_model(model, input_tensors=inputs, clone_function=clone, call_function=call)
        if not model.trainable:  # (setting True would override the layers' own flags)
            cloned.trainable = False
        return cloned

    def _sequential(self, model):
        taken = _layer_names(model)
        first = model.inputs[0]
        layers = [keras.Input(batch_shape=first.shape, dtype=first.dtype, name=first._keras_history.operation.name)]
        for layer in model.layers:
            converted, activation = self._layer(layer, taken)
            layers += [converted] if activation is None else [converted, activation]
        return keras.Sequential(layers, name=model.name, trainable=model.trainable)

    def _layer(self, layer, taken):
        """``(new layer, activation layer to apply after it or None)`` for one layer of a model."""
        if id(layer) not in self.made:
            self.made[id(layer)] = self._make(layer, taken)
        return self.made[id(layer)]

    def _make(self, layer, taken):
        if not isinstance(layer, keras.layers.Layer):
            return layer, None  # a keras.ops operation in a functional graph: no weights, reused
        if isinstance(layer, (keras.Sequential, Functional)):
            return self.model(layer), None
        if isinstance(layer, keras.Model):
            return self._keep(layer, "a subclassed model: its layers' connections cannot be rebuilt"), None
        convert = _CONVERTERS.get(type(layer))
        if self.selected is not None and layer.name not in self.selected:
            return self._keep(layer), None
        if convert is None:
            family = next((kind.__name__ for kind in _CONVERTERS if isinstance(layer, kind)), None)
            wrapped = [inner.name for inner in layer._flatten_layers(include_self=False) if type(inner) in _CONVERTERS]
            reason = None
            if family:
                reason = f"a subclass of {family}, whose call may differ"
            elif wrapped:
                reason = f"it wraps {', '.join(wrapped)}, and layers inside a wrapper are not converted"
            elif self.selected is not None:
                reason = "not a layer type that bayesianize converts"
            return self._keep(layer, reason), None
        reason = _unsupported(layer, self.mask_receivers)
        if reason:
            return self._keep(layer, reason), None
        converted = convert(self, layer)
        converted.trainable = layer.trainable
        if getattr(layer, "activity_regularizer", None) is not None:
            warnings.warn(
                f"bayesianize: layer '{layer.name}' ({type(layer).__name__}) loses its activity_regularizer: "
                "the fusedbnn layers take none",
                stacklevel=2,
            )
        activation = getattr(layer, "activation", None)
        if (
            activation is None
            or isinstance(layer, keras.layers.LSTM)
            or keras.activations.serialize(activation) == "linear"
        ):
            return converted, None
        name = f"{layer.name}_activation"
        while name in taken:
            name += "_"
        taken.add(name)
        return converted, keras.layers.Activation(activation, name=name, dtype=layer.dtype_policy)

    def _keep(self, layer, reason=None):
        """A copy of ``layer`` (its weights copied once built), with a warning naming it when ``reason``."""
        if reason:
            warnings.warn(
                f"bayesianize: layer '{layer.name}' ({type(layer).__name__}) kept deterministic: {reason}", stacklevel=2
            )
        try:
            copy = layer.__class__.from_config(layer.get_config())
        except Exception as error:  # noqa: BLE001 (any failure of a user's config: share the layer instead)
            if not layer.weights:  # nothing to share: no warning
                return layer
            warnings.warn(
                f"bayesianize: layer '{layer.name}' ({type(layer).__name__}) is shared with the original "
                f"model, not copied: it cannot be rebuilt from its config ({error})",
                stacklevel=2,
            )
            return layer
        self.kept.append((layer, copy))
        return copy

    def copy_kept_weights(self):
        """Each kept layer's state, as ``model.save`` writes it and ``load_model`` reads it back, layer
        by layer (wrapped layers too): its variables, then what the layer derives from them (an
        adapted Normalization's mean and variance), and its assets (a lookup layer's vocabulary,
        which is in no variable)."""
        for original, copy in self.kept:
            for source, target in zip(original._flatten_layers(), copy._flatten_layers(), strict=True):
                store = {}
                source.save_own_variables(store)
                target.load_own_variables(store)
                if hasattr(source, "save_assets"):
                    with tempfile.TemporaryDirectory() as assets:
                        source.save_assets(assets)
                        target.load_assets(assets)

    def _distribution(self, layer_name, parameter, trained):
        """The posterior of one parameter, named ``<layer>/<parameter>``, centred on ``trained``."""
        trained = tf.convert_to_tensor(trained).numpy().astype(np.float64)
        per_weight_prior = self.moped_delta is not None and self.mu_prior is None
        with keras.name_scope(layer_name):
            if per_weight_prior:
                dist = PerWeightPriorGaussian(
                    trained.shape, std_prior=self.std_prior, rho_init=self.rho_init, name=parameter
                )
                dist.prior_mean.assign(trained.astype(np.float32))
            else:
                dist = GaussianDistribution(
                    trained.shape,
                    mu_prior=self.mu_prior or 0.0,
                    std_prior=self.std_prior,
                    rho_init=self.rho_init,
                    name=parameter,
                )
        if self.moped_delta is None:
            rho = np.full(trained.shape, self.rho_init)
        else:
            rho = _inverse_softplus(np.maximum(self.moped_delta * np.abs(trained), MIN_SIGMA))
        dist.mu.assign(trained.astype(np.float32))
        dist.rho.assign(rho.astype(np.float32))
        return dist

    def _weight_and_bias(self, layer, kernel, bias):
        """Constructor arguments of a fusedbnn layer: its distributions, name and dtype policy."""
        return {
            "weights_distribution": self._distribution(layer.name, "weights", kernel),
            "bias_distribution": None if bias is None else self._distribution(layer.name, "bias", bias),
            "name": layer.name,
            "dtype": layer.dtype_policy,
        }

    def _dense(self, layer):
        kernel = keras.ops.transpose(layer.kernel)
        return nn.Linear(
            kernel.shape[1],
            kernel.shape[0],
            use_bias=layer.use_bias,
            estimator=self.estimator,
            **self._weight_and_bias(layer, kernel, layer.bias if layer.use_bias else None),
        )

    def _conv(self, layer):
        rank = len(layer.kernel_size)
        input_channels = layer.kernel.shape[-2] * layer.groups
        channels_last = layer.data_format == "channels_last"
        padding = layer.padding
        if padding == "causal":
            padding = [(layer.kernel_size[0] - 1) * layer.dilation_rate[0], 0]
        else:
            padding = padding.upper()
        layer_class, data_format = (
            (nn.Conv1d, "NWC" if channels_last else "NCW")
            if rank == 1
            else (nn.Conv2d, "NHWC" if channels_last else "NCHW")
        )
        return layer_class(
            input_channels,
            layer.filters,
            list(layer.kernel_size),
            stride=list(layer.strides),
            padding=padding,
            dilation=list(layer.dilation_rate),
            groups=layer.groups,
            data_format=data_format,
            use_bias=layer.use_bias,
            estimator=self.estimator,
            **self._weight_and_bias(layer, layer.kernel, layer.bias if layer.use_bias else None),
        )

    def _embedding(self, layer):
        table = layer.embeddings
        return nn.Embedding(
            table.shape[0],
            table.shape[1],
            weights_distribution=self._distribution(layer.name, "weights", table),
            name=layer.name,
            dtype=layer.dtype_policy,
        )

    def _lstm(self, layer):
        cell = layer.cell
        # Keras packs the gates as i, f, c, o; the fused op as f, i, c, o.
        i, f, c, o = tf.split(tf.concat([cell.kernel, cell.recurrent_kernel], axis=0), 4, axis=-1)
        bi, bf, bc, bo = tf.split(cell.bias, 4)
        converted = nn.SequenceLSTM(
            layer.units,
            return_sequences=layer.return_sequences,
            return_state=layer.return_state,
            **self._weight_and_bias(layer, tf.concat([f, i, c, o], axis=-1), tf.concat([bf, bi, bc, bo], axis=0)),
        )
        converted.build((None, None, cell.kernel.shape[0]))
        return converted


_CONVERTERS = {
    keras.layers.Dense: _Converter._dense,
    keras.layers.Conv1D: _Converter._conv,
    keras.layers.Conv2D: _Converter._conv,
    keras.layers.Embedding: _Converter._embedding,
    keras.layers.LSTM: _Converter._lstm,
}


def _unsupported(layer, mask_receivers):
    """Why ``layer`` (of a type in ``_CONVERTERS``) cannot be converted without changing what it
    computes, or None; ``mask_receivers`` holds the ids of the layers that get a Keras mask."""
    if getattr(layer, "quantization_mode", None) is not None:
        return f"quantized ({layer.quantization_mode}); the fusedbnn layers are float32"
    if id(layer) in mask_receivers:
        return "its input carries a Keras mask, which the fusedbnn layers do not support or propagate"
    if isinstance(layer, keras.layers.Embedding) and layer.mask_zero:
        return "mask_zero=True: the fusedbnn Embedding makes no mask"
    if isinstance(layer, keras.layers.LSTM):
        config = layer.get_config()
        differences = [
            f"{key}={config[key]!r}"
            for key, wanted in (
                ("activation", "tanh"),
                ("recurrent_activation", "sigmoid"),
                ("use_bias", True),
                ("dropout", 0.0),
                ("recurrent_dropout", 0.0),
                ("go_backwards", False),
                ("stateful", False),
            )
            if config[key] != wanted
        ]
        if differences:
            return (
                "nn.SequenceLSTM has tanh / sigmoid activations, a bias, no dropout and runs forward and "
                f"stateless; this LSTM has {', '.join(differences)}"
            )
    return None
