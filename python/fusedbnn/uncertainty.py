"""Monte Carlo prediction and uncertainty measures for Bayesian models.

Each forward pass of an unfrozen fusedbnn model draws fresh weights, so repeating ``predict``
samples the predictive distribution. For a classifier with sampled class probabilities
``p_s`` (``s = 1..S``), in nats:

* predictive entropy ``H[mean_s p_s]``: total uncertainty;
* expected entropy ``mean_s H[p_s]``: aleatoric part (noise in the data);
* mutual information = predictive entropy - expected entropy: epistemic part (uncertainty about
  the weights), large where the sampled models disagree.
"""

import time
import warnings

import keras
import numpy as np

from fusedbnn.losses import bayesian_modules
from fusedbnn.nn._params import positive_int

# predict_mc shows a progress bar by itself ("auto") when the run is expected to take this long.
_LONG_RUN_SECONDS = 5.0


def predict_mc(model, x, num_samples, batch_size=None, aggregate=False, verbose="auto"):
    """``num_samples`` predictions of ``model`` on ``x``, each with fresh noise.

    Args:
        model: a Keras model with fusedbnn layers (unfrozen, or every sample is the same).
        x: inputs, anything ``model.predict`` takes.
        num_samples: number of forward passes, positive.
        batch_size: passed to ``model.predict`` (Keras's default 32 when None).
        aggregate: False to return the stack; True to return ``(mean, std)`` over the samples.
        verbose: 0 silent, 1 a progress bar over samples, "auto" a progress bar when the run is
            expected to take more than a few seconds (judged after the first sample).

    Returns:
        A NumPy array ``[num_samples, *prediction_shape]`` (a list of them for several outputs),
        or ``(mean, std)`` with the prediction's shape when ``aggregate``.
    """
    num_samples = positive_int(num_samples, "num_samples")
    if verbose not in (0, 1, "auto", False, True):
        raise ValueError(f"verbose must be 0, 1 or 'auto', got {verbose!r}")
    if any(module.frozen for module in bayesian_modules(model)) and num_samples > 1:
        warnings.warn("predict_mc: the model has frozen layers, whose samples are all equal", stacklevel=2)
    samples, progress = [], None
    for index in range(num_samples):
        start = time.perf_counter()
        samples.append(model.predict(x, batch_size=batch_size, verbose=0))
        if index == 0:
            expected_seconds = (time.perf_counter() - start) * num_samples
            if verbose == 1 or (verbose == "auto" and expected_seconds > _LONG_RUN_SECONDS):
                progress = keras.utils.Progbar(num_samples, unit_name="sample")
        if progress is not None:
            progress.update(index + 1)
    if isinstance(samples[0], (list, tuple)):
        stacks = [np.stack(outputs) for outputs in zip(*samples)]
        return [(s.mean(0), s.std(0)) for s in stacks] if aggregate else stacks
    stack = np.stack(samples)
    return (stack.mean(0), stack.std(0)) if aggregate else stack


def _probabilities(samples, from_logits):
    """``samples`` [S, ..., C] as float64 probabilities, validated."""
    p = np.asarray(samples, dtype=np.float64)
    if p.ndim < 2:
        raise ValueError(f"samples must have shape [num_samples, ..., num_classes], got shape {p.shape}")
    if from_logits:
        p = np.exp(p - p.max(axis=-1, keepdims=True))
        return p / p.sum(axis=-1, keepdims=True)
    if (p < 0).any() or not np.allclose(p.sum(axis=-1), 1.0, atol=1e-3):
        raise ValueError("samples must be class probabilities (non-negative, summing to 1 over the last "
                         "axis); pass from_logits=True for logits")
    return p


def _entropy(p):
    """Shannon entropy in nats over the last axis, with 0 log 0 = 0."""
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


def predictive_entropy(samples, from_logits=False):
    """``H[mean_s p_s]`` in nats, per example: the total uncertainty.

    ``samples``: class probabilities (or logits with ``from_logits``) of shape [S, ..., C], as
    ``predict_mc`` returns them. Result shape [...].
    """
    return _entropy(_probabilities(samples, from_logits).mean(axis=0))


def expected_entropy(samples, from_logits=False):
    """``mean_s H[p_s]`` in nats, per example: the aleatoric part. Same arguments as ``predictive_entropy``."""
    return _entropy(_probabilities(samples, from_logits)).mean(axis=0)


def mutual_information(samples, from_logits=False):
    """Predictive minus expected entropy, per example: the epistemic part (never negative)."""
    p = _probabilities(samples, from_logits)
    return np.maximum(_entropy(p.mean(axis=0)) - _entropy(p).mean(axis=0), 0.0)
