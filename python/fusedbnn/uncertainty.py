"""Monte Carlo prediction and uncertainty measures for Bayesian models.

Each forward pass of an unfrozen fusedbnn model draws fresh weights, so repeating ``predict``
samples the predictive distribution. For a classifier with sampled class probabilities
``p_s`` (``s = 1..S``), in nats:

* predictive entropy ``H[mean_s p_s]``: total uncertainty;
* expected entropy ``mean_s H[p_s]``: aleatoric part (noise in the data);
* mutual information = predictive entropy - expected entropy: epistemic part (uncertainty about
  the weights), large where the sampled models disagree.

A binary classifier's single output (probability p(y = 1), or its logit) counts as the two classes
``[1 - p, p]``.
"""

import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from fusedbnn._validation import positive_int
from fusedbnn.nn._walk import bayesian_modules

__all__ = ["expected_entropy", "mutual_information", "predict_mc", "predictive_entropy"]

# predict_mc shows a progress bar by itself ("auto") when the run is expected to take this long.
_LONG_RUN_SECONDS = 5.0


def predict_mc(model, x, num_samples, batch_size=None, aggregate=False, verbose="auto"):
    """``num_samples`` predictions of ``model`` on ``x``, each with fresh noise.

    Every sample is one inference pass over all of ``x`` in batches; each batch call draws new
    weights. Arrays, tensors and their nests run through one traced function (fast); a
    ``tf.data.Dataset`` or ``keras.utils.PyDataset`` goes through ``model.predict`` once per sample.

    Args:
        model: a Keras model with fusedbnn layers (unfrozen, or every sample is the same).
        x: inputs: an array, a tensor, a nest of them, or a dataset.
        num_samples: number of passes, positive.
        batch_size: examples per forward call (32 when None, as in Keras); unused for datasets.
        aggregate: False to return the stack; True to return ``(mean, std)`` over the samples
            (NumPy's ``std``: the samples' own spread, ddof=0).
        verbose: 0 silent, 1 a progress bar over samples, "auto" a progress bar when the rest of
            the run is expected to take more than a few seconds (judged after the second sample).

    Returns:
        A NumPy array ``[num_samples, *prediction_shape]`` (a nest of them for several outputs),
        or ``(mean, std)`` with the prediction's shape (nests of them) when ``aggregate``.
    """
    num_samples = positive_int(num_samples, "num_samples")
    batch_size = 32 if batch_size is None else positive_int(batch_size, "batch_size")
    if verbose not in (0, 1, "auto", False, True):
        raise ValueError(f"verbose must be 0, 1 or 'auto', got {verbose!r}")
    if num_samples > 1 and any(module.frozen for module in bayesian_modules(model)):
        warnings.warn("predict_mc: the model has frozen layers, whose samples are all equal", stacklevel=2)
    one_pass = _pass_over(model, x, batch_size)
    samples, progress = [], None
    for index in range(num_samples):
        start = time.perf_counter()
        samples.append(one_pass())
        # The first pass includes tracing, so "auto" judges from the second one.
        if progress is None and (
            verbose == 1
            and index == 0
            or verbose == "auto"
            and index == 1
            and (time.perf_counter() - start) * (num_samples - 2) > _LONG_RUN_SECONDS
        ):
            progress = keras.utils.Progbar(num_samples, unit_name="sample")
        if progress is not None:
            progress.update(index + 1)
    stack = tf.nest.map_structure(lambda *parts: np.stack(parts), *samples)
    if aggregate:
        return tf.nest.map_structure(lambda s: (s.mean(axis=0), s.std(axis=0)), stack)
    return stack


def _pass_over(model, x, batch_size):
    """A function making one prediction over all of ``x``, as NumPy (nests for several outputs)."""
    if isinstance(x, (tf.data.Dataset, keras.utils.PyDataset)):
        return lambda: model.predict(x, verbose=0)
    x = tf.nest.map_structure(tf.convert_to_tensor, x)
    if any(t.shape.rank == 0 for t in tf.nest.flatten(x)):
        raise ValueError(
            "x must be arrays or tensors with a batch axis, or a nest of them for several inputs; a "
            "Python list is a nest of inputs: pass np.asarray(x) for a list of examples"
        )
    sizes = {int(t.shape[0]) for t in tf.nest.flatten(x)}
    if len(sizes) != 1:
        raise ValueError(f"x must have one batch size across its inputs, got sizes {sorted(sizes)}")
    size = sizes.pop()
    forward = tf.function(lambda batch: model(batch, training=False), jit_compile=False, reduce_retracing=True)
    # No examples: one empty batch, so that the prediction has its shape with 0 rows.
    batches = [tf.nest.map_structure(lambda t: t[i : i + batch_size], x) for i in range(0, max(size, 1), batch_size)]

    def one_pass():
        outputs = [forward(batch) for batch in batches]
        return tf.nest.map_structure(lambda *parts: np.concatenate([np.asarray(p) for p in parts]), *outputs)

    return one_pass


def _probabilities(samples, from_logits):
    """``samples`` [S, ..., C] as float64 probabilities, validated; one class (C = 1) is a binary
    classifier's p(y = 1) (a sigmoid's input with ``from_logits``), made into [1 - p, p]."""
    p = np.asarray(samples, dtype=np.float64)
    if p.ndim < 2:
        raise ValueError(f"samples must have shape [num_samples, ..., num_classes], got shape {p.shape}")
    if p.shape[-1] == 1:
        if from_logits:
            p = 0.5 * (1.0 + np.tanh(0.5 * p))  # the sigmoid, without overflow
        elif ((p < 0) | (p > 1)).any():
            raise ValueError(
                "samples with one class are a binary classifier's probabilities p(y = 1), in [0, 1]; "
                "pass from_logits=True for its logits"
            )
        return np.concatenate([1.0 - p, p], axis=-1)
    if from_logits:
        p = np.exp(p - p.max(axis=-1, keepdims=True))
        return p / p.sum(axis=-1, keepdims=True)
    if (p < 0).any() or not np.allclose(p.sum(axis=-1), 1.0, atol=1e-3):
        raise ValueError(
            "samples must be class probabilities (non-negative, summing to 1 over the last "
            "axis); pass from_logits=True for logits"
        )
    return p


def _entropy(p):
    """Shannon entropy in nats over the last axis, with 0 log 0 = 0."""
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


def predictive_entropy(samples, from_logits=False):
    """``H[mean_s p_s]`` in nats, per example: the total uncertainty.

    ``samples``: class probabilities (or logits with ``from_logits``) of shape [S, ..., C], as
    ``predict_mc`` returns them; C = 1 is a binary classifier's p(y = 1) (a sigmoid output, or its
    logit with ``from_logits``). Result shape [...].
    """
    return _entropy(_probabilities(samples, from_logits).mean(axis=0))


def expected_entropy(samples, from_logits=False):
    """``mean_s H[p_s]`` in nats, per example: the aleatoric part. Same arguments as ``predictive_entropy``."""
    return _entropy(_probabilities(samples, from_logits)).mean(axis=0)


def mutual_information(samples, from_logits=False):
    """Predictive minus expected entropy, per example: the epistemic part (never negative)."""
    p = _probabilities(samples, from_logits)
    return np.maximum(_entropy(p.mean(axis=0)) - _entropy(p).mean(axis=0), 0.0)
