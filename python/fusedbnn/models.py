"""BayesianModel: a Keras Model whose fit / evaluate average the ELBO over several noise samples."""

import keras
import tensorflow as tf
from keras.src.models.functional import Functional
from keras.src.saving import object_registration

from fusedbnn.losses import ELBOLoss

__all__ = ["BayesianModel"]


def _functional_arguments(args, kwargs):
    return len(args) == 2 or (len(args) == 1 and "outputs" in kwargs) or {"inputs", "outputs"} <= kwargs.keys()


class BayesianModel(keras.Model):
    """``keras.Model`` for fusedbnn layers: Monte Carlo averaged training and evaluation steps.

    Build it like any Keras model, functionally (``BayesianModel(inputs, outputs)``) or by
    subclassing. ``compile()`` binds the model to every ``fusedbnn.losses.ELBOLoss`` given without
    ``model=``, and takes ``num_samples`` from them: each ``fit`` / ``evaluate`` step then runs the
    model ``num_samples`` times, each pass with fresh noise, and averages the loss (data loss plus
    that pass's KL term) before taking gradients. Metrics see the mean of the sampled predictions.
    With ``num_samples=1`` (or no ELBOLoss) the steps are Keras's own. ``predict`` draws one
    sample per call; ``fusedbnn.uncertainty.predict_mc`` draws many.

    Example::

        inputs = keras.Input((64,))
        outputs = fusedbnn.nn.Linear(64, 10)(inputs)
        model = fusedbnn.BayesianModel(inputs, outputs)
        model.compile("adam", loss=fusedbnn.losses.ELBOLoss(
            keras.losses.SparseCategoricalCrossentropy(from_logits=True), num_samples=4))
        model.fit(x, y, epochs=5)
    """

    # ELBOLoss(num_samples > 1) asks for this: only this train_step averages several passes.
    averages_sampled_passes = True

    def __new__(cls, *args, **kwargs):
        # Keras turns a Model subclass called with (inputs, outputs) into a Functional one by
        # rewriting the class's bases for good, which breaks later subclassed use of BayesianModel
        # in the same process. Make the functional model an instance of a subclass instead.
        if _functional_arguments(args, kwargs) and not issubclass(cls, Functional):
            cls = _functional_variant(cls)
        return super().__new__(cls, *args, **kwargs)

    def compile(self, *args, **kwargs):
        """``keras.Model.compile``; binds this model to the ELBOLoss in ``loss`` (one at most: each
        adds the whole KL term) and reads its ``num_samples``."""
        loss = kwargs.get("loss", args[1] if len(args) > 1 else None)
        elbo_losses = [item for item in tf.nest.flatten(loss) if isinstance(item, ELBOLoss)]
        if len(elbo_losses) > 1:
            raise ValueError(
                f"compile() got {len(elbo_losses)} ELBOLosses (one per output?): each adds the model's whole "
                "KL term, so the KL would count that many times (and be scaled by loss_weights). Give "
                "ELBOLoss to one output and plain Keras losses to the others."
            )
        for elbo in elbo_losses:
            if elbo.bound_model() is None:
                elbo.bind(self)
        self.num_samples = elbo_losses[0].num_samples if elbo_losses else 1
        super().compile(*args, **kwargs)

    def compile_from_config(self, config):
        """Compile from a saved compile config (Keras skips this for models that override compile)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3 builds a distributed model from strategy.reduce("MEAN", first_batch), which fails
        # under MultiWorkerMirroredStrategy (keras-team/keras#20585). Only the shapes matter, so
        # build from the first replica's part of the batch instead.
        strategy = self._distribute_strategy
        if strategy is None or iterator is None:
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        for _, _, batches in iterator:
            data_batch = tf.nest.map_structure(
                lambda value: (
                    strategy.experimental_local_results(value)[0]
                    if isinstance(value, tf.distribute.DistributedValues)
                    else value
                ),
                next(batches),
            )
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def _sampled_passes(self, x, y, sample_weight, training):
        """``num_samples`` forward passes, one after the other: the mean loss, the mean prediction,
        and when training the mean gradients of the scaled loss.

        Each pass's gradients are taken before the next pass starts (a control dependency), so only
        one pass's activations and sampled weights are alive at a time: memory does not grow with
        ``num_samples``.
        """
        losses, predictions, gradients = [], [], None
        for _ in range(self.num_samples):
            with tf.GradientTape() as tape:
                y_pred = self(x, training=training) if self._call_has_training_arg else self(x)
                loss = self._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
                scaled_loss = self.optimizer.scale_loss(loss) if training else loss
            done = [loss]
            if training:
                pass_gradients = tape.gradient(scaled_loss, self.trainable_weights)
                gradients = (
                    pass_gradients
                    if gradients is None
                    else [_add_gradients(total, g) for total, g in zip(gradients, pass_gradients)]
                )
                done += [g for g in tf.nest.flatten(pass_gradients, expand_composites=True) if g is not None]
            losses.append(loss)
            predictions.append(y_pred)
            with tf.control_dependencies(done):
                x = tf.nest.map_structure(lambda t: None if t is None else tf.identity(t), x)
        count = len(losses)
        mean_prediction = tf.nest.map_structure(lambda *p: tf.add_n(p) / count, *predictions)
        if gradients is not None:
            gradients = [_divide_gradient(g, count) for g in gradients]
        return tf.add_n(losses) / count, mean_prediction, gradients

    def _track_loss(self, loss, x):
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        batch_size = tf.shape(next(t for t in tf.nest.flatten(x) if t is not None))[0]
        self._loss_tracker.update_state(loss * replicas, sample_weight=batch_size)

    def train_step(self, data):
        return self._with_batch_axis_across_workers(self._train_step(data))

    def test_step(self, data):
        return self._with_batch_axis_across_workers(self._test_step(data))

    def _with_batch_axis_across_workers(self, logs):
        # With several workers Keras reduces each step output by strategy.reduce("MEAN", v, axis=0),
        # which fails on scalars (keras-team/keras#20585): give them an axis of length 1.
        strategy = tf.distribute.get_strategy()
        several_workers = (
            isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode()
        )
        if several_workers:
            return tf.nest.map_structure(lambda value: tf.reshape(value, [-1]), logs)
        return logs

    def _train_step(self, data):
        if getattr(self, "num_samples", 1) == 1:
            return super().train_step(data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        loss, y_pred, gradients = self._sampled_passes(x, y, sample_weight, training=True)
        self._track_loss(loss, x)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _test_step(self, data):
        if getattr(self, "num_samples", 1) == 1:
            return super().test_step(data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        loss, y_pred, _ = self._sampled_passes(x, y, sample_weight, training=False)
        self._track_loss(loss, x)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


@keras.saving.register_keras_serializable(package="fusedbnn", name="BayesianModel")
class FunctionalBayesianModel(BayesianModel, Functional):
    """The class of ``BayesianModel(inputs, outputs)``: a functional BayesianModel."""


_functional_variants = {}


def _functional_variant(cls):
    """``cls`` with Functional mixed in (a BayesianModel subclass built from inputs and outputs).

    The variant saves under ``cls``'s registered name: loading finds ``cls``, whose ``from_config``
    rebuilds the functional model through ``cls(inputs, outputs)``, i.e. the variant again.
    """
    if cls not in _functional_variants:
        variant = type(f"Functional{cls.__name__}", (cls, Functional), {"__module__": cls.__module__})
        _register_variant(cls, variant)
    return _functional_variants[cls]


def _register_variant(cls, variant):
    """Make files of ``variant`` load as ``cls``: .keras files name it by ``cls``'s registered name,
    legacy .h5 files by the variant's class name. (FunctionalBayesianModel is registered as
    BayesianModel already, by its decorator.)"""
    object_registration.GLOBAL_CUSTOM_NAMES.setdefault(variant, keras.saving.get_registered_name(cls))
    object_registration.GLOBAL_CUSTOM_OBJECTS.setdefault(variant.__name__, cls)
    _functional_variants[cls] = variant


_register_variant(BayesianModel, FunctionalBayesianModel)


def _add_gradients(total, g):
    """The sum of two passes' gradients of a variable; None (no gradient in a pass) counts as zero.
    Sparse gradients (embedding lookups) stay sparse: their slices are listed together, and the
    optimizer adds the slices of a repeated row."""
    if total is None or g is None:
        return g if total is None else total
    if isinstance(total, tf.IndexedSlices) and isinstance(g, tf.IndexedSlices):
        return tf.IndexedSlices(
            tf.concat([total.values, g.values], 0), tf.concat([total.indices, g.indices], 0), total.dense_shape
        )
    return tf.convert_to_tensor(total) + tf.convert_to_tensor(g)


def _divide_gradient(g, count):
    if isinstance(g, tf.IndexedSlices):
        return tf.IndexedSlices(g.values / count, g.indices, g.dense_shape)
    return None if g is None else g / count
