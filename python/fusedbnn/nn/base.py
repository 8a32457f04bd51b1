"""BayesianModule: the base of every fusedbnn layer (illia's API), owning the behaviour they share."""

import keras
import tensorflow as tf
from tensorflow.python.ops import control_flow_util

from fusedbnn import _seeds, ops
from fusedbnn._validation import optional_seed
from fusedbnn.nn import _fused_kl, _parameter, _walk


class BayesianModule(keras.layers.Layer):
    """A Keras layer whose parameters are Gaussian distributions, sampled afresh on every call.

    ``freeze()`` fixes the parameters (at the last call's sample, or at the posterior means with
    ``use_mean=True``; stored in non-trainable variables, kept by saving) and ``unfreeze()`` resumes
    sampling. The frozen flag is a variable, so functions that Keras has already traced see the
    change; setting ``frozen``, as illia's modules do, is ``freeze()`` or ``unfreeze()``. ``kl_cost()``
    returns ``(kl, num_params)`` for the sample of the last call, or for the fixed values when frozen;
    ``kl_cost(analytic=True)`` the closed-form KL. ``trainable=False`` given to the constructor makes
    the distributions and inner modules non-trainable, as setting ``trainable`` does. The fused ops
    cannot be compiled by XLA, so ``supports_jit`` is False.

    A subclass declares its parameters with ``_add_parameter(name, distribution, argument, shape)``
    and implements two
    hooks: ``_sampled_call(inputs, **kwargs)``, which runs the fused ops on each parameter's
    ``sampling_args(self)``, and ``_frozen_call(inputs, **kwargs)``, which applies the frozen values.
    ``call`` switches between them; ``freeze``, ``unfreeze`` and ``kl_cost`` cover the declared
    parameters and every BayesianModule inside the layer (the LSTM's embedding, say). A subclass
    written the illia way, overriding ``call``, ``freeze``, ``unfreeze`` and ``kl_cost`` itself, works
    too.

    Under a mixed-precision policy, variables, sampling and KL stay float32: floating inputs are cast
    to float32 and floating outputs to the policy's compute dtype.
    """

    def __init__(self, seed=None, **kwargs):
        kwargs.setdefault("autocast", False)  # the fused ops read float32 variables
        super().__init__(**kwargs)
        self.is_bayesian = True
        self.seed = seed = optional_seed(seed)
        self.supports_jit = False
        with _seeds.on_host():
            self._frozen = self.add_weight(name="frozen", shape=(), dtype="bool", initializer="zeros", trainable=False)
            with keras.name_scope(self.name):
                self._seed_generator = keras.random.SeedGenerator(_seeds.derived_seed(seed, "noise"), name="noise")
        # The noise stream's state is a weight of the layer, so .keras files, save_weights, checkpoints
        # and BackupAndRestore restore where it stood: a resumed run draws the noise that the
        # uninterrupted run would have drawn. (Listed once: as a weight, not as a seed generator.)
        self._seed_generators.remove(self._seed_generator)
        self._track_variable(self._seed_generator.state)
        self._bayesian_parameters = []
        self._frozen_at_mean = False  # freeze()'s use_mean, for parameters that build() adds later
        self._unfixed_parameters = []  # those added while frozen, not fixed yet
        self._call_kl = _fused_kl.CallKl()

    def __setattr__(self, name, value):
        self._check_assignable(name, value)
        # Keras makes the new variables of a layer built with trainable=False non-trainable, but not
        # those of its sublayers (the distributions, the LSTM's embedding): mark each sublayer as it
        # is tracked, as setting layer.trainable = False afterwards would.
        if isinstance(value, keras.layers.Layer) and not getattr(self, "_trainable", True):
            value.trainable = False
        super().__setattr__(name, value)

    def _check_assignable(self, name, value):
        """AttributeError, saying why, for what illia code may assign but this layer computes: the
        samples (``w``, ``b``, the LSTM's gates) and a declared parameter's distribution, which the
        layer would otherwise go on sampling from unseen."""
        attribute = getattr(type(self), name, None)
        if isinstance(attribute, property) and attribute.fset is None:
            raise AttributeError(
                f"{type(self).__name__} layer '{self.name}': {name} is the last call's sample (or the "
                "frozen value) and cannot be set; freeze() fixes it, and the distribution's mu and rho "
                "are the variables to assign"
            )
        current = self.__dict__.get(name)
        if current is not None and value is not current:
            if any(p.dist is current for p in self.__dict__.get("_bayesian_parameters", ())):
                raise AttributeError(
                    f"{type(self).__name__} layer '{self.name}': {name} cannot be replaced once the layer "
                    f"samples from it; pass {name}= to the constructor, or assign its mu and rho"
                )

    def __call__(self, *args, **kwargs):
        if control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()):
            raise ValueError(
                f"{type(self).__name__} layer '{self.name}' cannot run under XLA (jit_compile=True): its fused "
                "ops have no XLA kernels. Use jit_compile=False (Keras compile() falls back to it by itself)."
            )
        return super().__call__(*args, **kwargs)

    def _add_parameter(self, name, dist, argument, shape, parameter_class=_parameter.SampledParameter):
        """Declare a Bayesian parameter ``name`` of ``shape``, drawn from ``dist`` (the constructor
        argument ``argument``: a GaussianDistribution, its config, or None for the default one)."""
        dist = _parameter.make_distribution(dist, shape, argument, self.seed, scope=self.name)
        parameter = parameter_class(self, dist, name)
        self._bayesian_parameters.append(parameter)
        if self.frozen:  # declared in build() after freeze(): fixed at its first sample (or mu)
            self._unfixed_parameters.append(parameter)
            self._fix_parameters_declared_frozen()
        return parameter

    def _fix_parameters_declared_frozen(self):
        """Freeze the parameters declared after ``freeze()`` once their variables hold values, outside
        any trace. A build inside the first trace of a ``tf.function`` makes them empty (filled before
        the function traces again, without building): ``call`` then fixes them."""
        if not self._unfixed_parameters:
            return
        with tf.init_scope():
            variables = [v for p in self._unfixed_parameters for v in (p.seed, *p.dist.weights)]
            if not all(tf.raw_ops.VarIsInitializedOp(resource=v.handle) for v in variables):
                return
            for parameter in self._unfixed_parameters:
                parameter.freeze(self._frozen_at_mean)
            self._unfixed_parameters.clear()

    @property
    def frozen(self):
        """Whether the layer uses its fixed values instead of sampling: a Python bool, read from the
        flag variable (while tracing, its value at trace time: code that branches on it in Python,
        as illia's modules do, is traced for that value; this package's layers read the variable
        inside the graph instead). Setting it is ``freeze()`` (True) or ``unfreeze()`` (False): an
        illia layer set frozen keeps using its last sample ``self.w``, so the fixed values become
        the last call's sample, never zeros or an older frozen sample."""
        with tf.init_scope():
            return bool(self._frozen.numpy())

    @frozen.setter
    def frozen(self, value):
        self._set_frozen(bool(value))

    def freeze(self, use_mean=False):
        """Fix the parameters at the sample of the last call (or a first sample), or with
        ``use_mean=True`` at the posterior means, and stop sampling."""
        self._set_frozen(True, use_mean)

    def unfreeze(self):
        """Resume sampling on every call."""
        self._set_frozen(False)

    def _set_frozen(self, frozen, use_mean=False):
        """``freeze(use_mean)`` or ``unfreeze()``. The ``frozen`` setter calls this, not ``freeze()``:
        an illia-style subclass's own ``freeze()`` sets ``frozen``."""
        for module in _walk.child_modules(self):
            if frozen:
                module.freeze(use_mean)
            else:
                module.unfreeze()
        if frozen:
            for parameter in self._bayesian_parameters:
                parameter.freeze(use_mean)
            self._frozen_at_mean = use_mean
        self._frozen.assign(frozen)

    def kl_cost(self, analytic=False):
        """``(kl, num_params)``: the one-sample KL estimate at the last call's sample (or at the
        frozen values) and the number of Bayesian parameters, inner modules included. With
        ``analytic=True``, ``kl`` is the closed-form KL(posterior || prior) of every parameter
        instead: no sample, so its value does not depend on the last call or on ``frozen``. A frozen
        parameter's KL has no gradient: frozen parameters are not updated (illia's ``freeze()``).

        Inside the ``tf.function`` graph of the last call, while nothing in that graph has written
        the layer's variables since, the one-sample KL is the one the call's fused op computed from
        the noise it drew (its gradient added in the backward op's pass): no noise is drawn again.
        Anywhere else it is drawn again from the call's seed (docs/design.md, "The KL term")."""
        costs = [_walk.kl_cost_of(module, analytic) for module in _walk.child_modules(self)]
        fused_kl = None if analytic else self._call_kl.take(self._kl_variables)
        if fused_kl is not None:
            kl = tf.cond(
                self._frozen, lambda: tf.add_n([p.frozen_kl() for p in self._bayesian_parameters]), lambda: fused_kl
            )
            costs.append((kl, sum(p.dist.num_params for p in self._bayesian_parameters)))
        else:
            costs += [(self._parameter_kl(p, analytic), p.dist.num_params) for p in self._bayesian_parameters]
        if not costs:
            return tf.constant(0.0), 0
        return tf.add_n([kl for kl, _ in costs]), sum(n for _, n in costs)

    def _kl_variables(self):
        """Every variable the one-sample KL of the declared parameters reads: a write to any of
        them after a call makes its fused KL stale."""
        variables = [self._frozen]
        for p in self._bayesian_parameters:
            variables += [p.seed, p.frozen_value, *p.dist.weights]
        return variables

    def _parameter_kl(self, parameter, analytic):
        """The KL term of one declared parameter: the one-sample estimate at the last call's seed (or
        at the frozen value), or the closed form."""
        return parameter.kl(self._frozen, analytic)

    def call(self, inputs, **kwargs):
        self._fix_parameters_declared_frozen()
        for value in tf.nest.flatten(inputs):
            if isinstance(value, (tf.RaggedTensor, tf.SparseTensor)):
                raise ValueError(
                    f"{type(self).__name__} layer '{self.name}' takes dense inputs, got a {type(value).__name__}: "
                    "pad it to a dense tensor first (ragged.to_tensor(), tf.sparse.to_dense)"
                )
        inputs = tf.nest.map_structure(_to_float32, inputs)
        kl_priors = self._fused_kl_priors() if _fused_kl.graph_building() else None
        if kl_priors is None:
            self._call_kl.forget()
            outputs = tf.cond(
                self._frozen, lambda: self._frozen_call(inputs, **kwargs), lambda: self._sampled_call(inputs, **kwargs)
            )
        else:
            # The sampled branch also returns its fused op's one-sample KL (0 when frozen: kl_cost
            # then uses the frozen values).
            outputs, kl = tf.cond(
                self._frozen,
                lambda: (self._frozen_call(inputs, **kwargs), tf.constant(0.0)),
                lambda: self._sampled_call(inputs, kl_priors=kl_priors, **kwargs),
            )
            self._call_kl.remember(kl)
        return tf.nest.map_structure(lambda t: _to_dtype(t, self.compute_dtype), outputs)

    def _fused_kl_priors(self):
        """The ``kl_priors`` argument of the fused op when ``_sampled_call(inputs, kl_priors=...)``
        returns ``(outputs, kl)``, the one-sample KL of every declared parameter; None (the default)
        where the layer's op has no KL output."""
        return None

    def _sampled_call(self, inputs, **kwargs):
        """The layer's output with freshly sampled parameters (fused ops)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _sampled_call or override call")

    def _frozen_call(self, inputs, **kwargs):
        """The layer's output with the frozen values."""
        raise NotImplementedError(f"{type(self).__name__} must implement _frozen_call or override call")

    def get_config(self):
        config = super().get_config()
        config["seed"] = self.seed
        return config


class WeightAndBiasModule(BayesianModule):
    """The shape of Linear and the convolutions: sampled weights ``w`` and, with ``use_bias``, a
    sampled bias ``b``, and the ``estimator`` of the output (docs/design.md, "Estimators"):
    "reparameterization" (one weight sample per call), "flipout" or "local_reparameterization"
    (per-example noise from an ``x_seed`` drawn from the noise generator on every call)."""

    def _set_estimator(self, estimator):
        if estimator not in ops.ESTIMATORS:
            raise ValueError(f"estimator must be one of {ops.ESTIMATORS}, got {estimator!r}")
        self.estimator = estimator

    def _estimator_args(self):
        """The op's ``estimator`` and ``x_seed`` keyword arguments, with a fresh x_seed (per replica)."""
        if self.estimator == "reparameterization":
            return {}
        return {"estimator": self.estimator, "x_seed": _seeds.replica_seed(_seeds.next_seed(self._seed_generator))}

    def _weight_and_bias_kl_priors(self):
        """``((w_mu_prior, w_std_prior), (b_mu_prior, b_std_prior))`` for a fused op's KL output
        (a subclass's ``_fused_kl_priors``), with one weight sample per call (reparameterization)
        only."""
        if self.estimator != "reparameterization":
            return None
        b = self._b.dist if self._b is not None else self._w.dist  # no bias: not read
        return (self._w.dist.mu_prior, self._w.dist.std_prior), (b.mu_prior, b.std_prior)

    def _parameter_kl(self, parameter, analytic):
        """With flipout or local reparameterization, the closed-form KL (issue 16's rule: the
        analytic KL where the package has one): local reparameterization draws no weight noise, and
        flipout's per-example perturbations are not one weight sample, so no one-sample estimate
        belongs to the call."""
        return super()._parameter_kl(parameter, analytic or self.estimator != "reparameterization")

    def _add_weight_and_bias(self, weights_distribution, bias_distribution, weight_shape, outputs):
        self._w = self._add_parameter("w", weights_distribution, "weights_distribution", weight_shape)
        self.weights_distribution = self._w.dist
        self._b = self.bias_distribution = None
        if self.use_bias:
            self._b = self._add_parameter("b", bias_distribution, "bias_distribution", (outputs,))
            self.bias_distribution = self._b.dist

    @property
    def w(self):
        """The weights of the last call's sample, or the frozen weights when frozen."""
        return self._w.value(self._frozen)

    @property
    def b(self):
        """The bias of the last call's sample (or the frozen one), or None without bias."""
        return None if self._b is None else self._b.value(self._frozen)

    def _frozen_values(self):
        """The frozen weights and bias (None without bias)."""
        return self._w.frozen_value, None if self._b is None else self._b.frozen_value

    def _sampling_args(self):
        """The fused op's parameter arguments: w's ``(mu, rho, seed)``, then b's if there is a bias."""
        return (*self._w.sampling_args(self), *(() if self._b is None else self._b.sampling_args(self)))

    def get_config(self):
        config = super().get_config()
        config.update(
            use_bias=self.use_bias,
            estimator=self.estimator,
            weights_distribution=keras.saving.serialize_keras_object(self.weights_distribution),
            bias_distribution=None
            if self.bias_distribution is None
            else keras.saving.serialize_keras_object(self.bias_distribution),
        )
        return config


def _to_float32(value):
    value = tf.convert_to_tensor(value)
    return tf.cast(value, tf.float32) if value.dtype in (tf.float16, tf.bfloat16, tf.float64) else value


def _to_dtype(value, dtype):
    return tf.cast(value, dtype) if value.dtype.is_floating and value.dtype != dtype else value
