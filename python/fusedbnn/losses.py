"""KL and ELBO losses for models built from fusedbnn layers (illia's API, working on nested models).

>>> model = fusedbnn.BayesianModel(inputs, outputs)
>>> loss = fusedbnn.losses.ELBOLoss(keras.losses.SparseCategoricalCrossentropy(from_logits=True))
>>> model.compile("adam", loss=loss)
>>> model.fit(x, y)
"""

import inspect
import weakref

import keras
import tensorflow as tf

from fusedbnn._validation import finite_float, positive_int
from fusedbnn._validation import reduction as checked_reduction
from fusedbnn.nn._walk import bayesian_modules, kl_cost_of

__all__ = ["ELBOLoss", "KLDivergenceLoss", "bayesian_modules", "kl_divergence"]


def kl_divergence(model, analytic=False):
    """``(kl, num_params)``: the summed ``kl_cost(analytic)`` of every BayesianModule in ``model``.

    ``kl`` is a float32 scalar tensor: the one-sample estimate for the samples of the last call (or
    the frozen samples), or with ``analytic=True`` the closed-form KL; ``num_params`` the total
    count of Bayesian parameters. ValueError if the model has none.
    """
    modules = bayesian_modules(model)
    if not modules:
        raise ValueError(f"model '{model.name}' contains no fusedbnn BayesianModule, so it has no KL cost")
    costs = [kl_cost_of(module, analytic) for module in modules]
    return tf.add_n([kl for kl, _ in costs]), sum(n for _, n in costs)


@keras.saving.register_keras_serializable(package="fusedbnn")
class KLDivergenceLoss(keras.losses.Loss):
    """``weight * KL / num_params`` over every BayesianModule of a model (illia's definition).

    Called as ``loss(model)`` or ``loss(model=model)``. The KL is the sum of ``kl_cost()`` of the
    model's BayesianModules, found recursively (nested layers and sub-models; a module's own
    sub-modules are covered by its ``kl_cost()``), divided by their total parameter count.

    Args:
        reduction: kept for illia's signature; the KL is a scalar, so it changes nothing.
        weight: factor on the result.
        analytic: False for illia's one-sample estimate at the last call's samples; True for the
            closed-form KL(posterior || prior), exact and independent of the samples.
    """

    def __init__(self, reduction="mean", weight=1.0, analytic=False, name="kl_divergence", **kwargs):
        super().__init__(reduction=checked_reduction(reduction), name=name, **kwargs)
        self.weight = finite_float(weight, "weight")
        self.analytic = bool(analytic)

    def __call__(self, model):
        kl, num_params = kl_divergence(model, self.analytic)
        return kl * (self.weight / num_params)

    def call(self, y_true, y_pred):
        raise TypeError("KLDivergenceLoss is called with the model: loss(model), not loss(y_true, y_pred)")

    def get_config(self):
        return {**super().get_config(), "weight": self.weight, "analytic": self.analytic}


class _FunctionLoss(keras.losses.Loss):
    """A plain ``fn(y_true, y_pred)`` as a Keras Loss: sample weights, reduction, replica scaling."""

    def __init__(self, fn):
        super().__init__(name=getattr(fn, "__name__", "loss"))
        self.fn = fn

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred)


def _as_loss(loss_function):
    if isinstance(loss_function, dict):
        loss_function = keras.losses.deserialize(loss_function)
    if isinstance(loss_function, str):
        loss_function = keras.losses.get(loss_function)
    if isinstance(loss_function, keras.losses.Loss):
        return loss_function
    if not callable(loss_function):
        raise ValueError(f"loss_function must be a Keras loss, a loss name or a callable, got {loss_function!r}")
    return _FunctionLoss(loss_function)


def _model_compiled_with(loss):
    """The Keras model, calling ``loss`` from its ``compute_loss``, that was compiled with it.

    A model loaded by ``keras.models.load_model`` is compiled from its saved config by Keras, which
    has no way to hand the model to its losses; the model is on the call stack when Keras calls the
    loss (``Model.compute_loss``), so the loss finds it there once and binds to it.
    """
    frame = inspect.currentframe()
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, keras.Model) and any(item is loss for item in tf.nest.flatten(candidate.loss)):
            return candidate
        frame = frame.f_back
    return None


# What keras.losses.Loss sets and saves when given no reduction.
_KERAS_DEFAULT_REDUCTION = "sum_over_batch_size"


@keras.saving.register_keras_serializable(package="fusedbnn")
class ELBOLoss(keras.losses.Loss):
    """The negative ELBO, scaled per example: the data loss plus a KL term.

    What it computes, ``data`` being ``loss_function(y_true, y_pred)`` reduced as that loss reduces
    (the mean over the batch for Keras's losses) and ``KL`` the summed KL of every Bayesian layer
    (one-sample estimate, or closed form with ``analytic_kl=True``):

      * ``dataset_size=None`` (illia's definition, the default): ``data + kl_weight * KL / num_params``,
        ``num_params`` the count of Bayesian parameters. With the default ``kl_weight=1e-3`` the KL
        barely counts: the posteriors shrink to point estimates (sigma near its initial value or
        below) and the model learns little uncertainty.
      * ``dataset_size=N`` (the ELBO of Blundell et al. 2015, per example): ``data + KL / N``, N
        the number of training examples, so that summed over an epoch's N examples the KL counts
        once. ``kl_weight`` and the division by ``num_params`` do not apply. The data loss must be a
        mean negative log-likelihood per example (``SparseCategoricalCrossentropy`` and the like)
        for this to be the true ELBO; this setting learns calibrated uncertainty.

    Call forms:
      * Keras: ``model.compile(loss=ELBOLoss(...))`` with the model bound, either by
        ``ELBOLoss(..., model=model)`` or automatically by ``fusedbnn.BayesianModel.compile``;
        Keras then calls ``loss(y_true, y_pred, sample_weight)``.
      * illia: ``loss(y_true, y_pred, model)``.

    The KL is that of the samples drawn by the forward pass that made ``y_pred`` (each layer keeps
    the seed of its last call). Under tf.distribute each replica adds its own KL scaled by
    ``1 / num_replicas``, like Keras scales the data loss, so the all-reduced objective is the data
    loss of the global batch plus the replicas' mean KL.

    ``num_samples > 1`` averages the objective over that many forward passes with fresh noise. One
    ``y_pred`` is one forward pass, so the averaging is done by ``fusedbnn.BayesianModel``'s
    ``train_step`` / ``test_step``, which read ``num_samples`` from this loss; any other model
    raises a ValueError for ``num_samples > 1``.

    Args:
        loss_function: data loss: a ``keras.losses.Loss``, a loss name, or ``fn(y_true, y_pred)``
            returning per-example values.
        num_samples: forward passes averaged per step (positive).
        kl_weight: factor on ``KL / num_params`` (without ``dataset_size``).
        analytic_kl: use the closed-form KL (exact, no extra noise, cheaper) instead of the
            one-sample estimate at the forward pass's samples.
        dataset_size: None, or the number of training examples N: the KL term is then ``KL / N``.
        model: the model whose KL is added, or None to bind it later. A model compiled with this loss
            binds itself (``BayesianModel.compile``, or on the first step of any Keras model: that
            is how a model loaded from a ``.keras`` file gets its loss back). In a Keras step the
            model running the step is used, so one loss object can be compiled into several models.
    """

    def __init__(
        self,
        loss_function,
        num_samples=1,
        kl_weight=1e-3,
        analytic_kl=False,
        dataset_size=None,
        model=None,
        name="elbo",
        **kwargs,
    ):
        reduction = kwargs.pop("reduction", _KERAS_DEFAULT_REDUCTION)
        if reduction != _KERAS_DEFAULT_REDUCTION:
            raise ValueError(
                f"ELBOLoss takes no reduction, got {reduction!r}: its data loss reduces as loss_function "
                "does (give the reduction to loss_function), and the KL is one term per batch"
            )
        super().__init__(name=name, **kwargs)
        self._loss_function_arg = loss_function
        self.loss_function = _as_loss(loss_function)
        self.num_samples = positive_int(num_samples, "num_samples")
        self.kl_weight = finite_float(kl_weight, "kl_weight")
        self.analytic_kl = bool(analytic_kl)
        self.dataset_size = None if dataset_size is None else positive_int(dataset_size, "dataset_size")
        self.kl_loss = KLDivergenceLoss(weight=self.kl_weight, analytic=self.analytic_kl)
        self._model_ref = None
        if model is not None:
            self.bind(model)

    def bind(self, model):
        """Make ``model`` the model whose KL this loss adds (held by a weak reference: Keras saving
        walks a loss's attributes, and a strong one back to the model would loop)."""
        if not isinstance(model, keras.layers.Layer):
            raise ValueError(f"model must be a Keras model or layer, got {type(model).__name__}")
        self._model_ref = weakref.ref(model)

    def bound_model(self):
        """The model bound by ``model=`` or ``bind()``, or None (a method: Keras saving walks properties)."""
        return None if self._model_ref is None else self._model_ref()

    def __call__(self, y_true, y_pred, model=None, sample_weight=None):
        # Keras passes sample_weight as the third positional argument; illia passes the model there.
        if model is not None and not isinstance(model, keras.layers.Layer):
            model, sample_weight = None, model
        if model is None:
            # The model whose step calls this loss comes first: one loss object compiled into two
            # models adds each model's own KL, whichever was bound first.
            model = _model_compiled_with(self)
            if model is None:
                model = self.bound_model()
            elif self.bound_model() is None:
                self.bind(model)
        if model is None:
            raise ValueError(
                "ELBOLoss needs the model whose KL it adds: pass ELBOLoss(..., model=model), call "
                "loss(y_true, y_pred, model), or compile a fusedbnn.BayesianModel (which binds itself)"
            )
        if self.num_samples > 1 and not getattr(model, "averages_sampled_passes", False):
            raise ValueError(
                f"ELBOLoss(num_samples={self.num_samples}) averages over several forward passes, which "
                f"only fusedbnn.BayesianModel's train_step runs; model '{model.name}' is a "
                f"{type(model).__name__}. Use fusedbnn.BayesianModel(inputs, outputs) or num_samples=1."
            )
        data_loss = self.loss_function(y_true, y_pred, sample_weight=sample_weight)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return data_loss + self.kl_term(model) / replicas

    def kl_term(self, model):
        """The KL term this loss adds for ``model`` (see the class docstring)."""
        if self.dataset_size is None:
            return self.kl_loss(model)
        return kl_divergence(model, self.analytic_kl)[0] / self.dataset_size

    def call(self, y_true, y_pred):
        raise TypeError("ELBOLoss is used through __call__: loss(y_true, y_pred[, model])")

    def get_config(self):
        return {
            **super().get_config(),
            "loss_function": keras.losses.serialize(self._loss_function_arg),
            "num_samples": self.num_samples,
            "kl_weight": self.kl_weight,
            "analytic_kl": self.analytic_kl,
            "dataset_size": self.dataset_size,
        }
